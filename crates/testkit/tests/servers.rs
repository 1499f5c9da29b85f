//! The shared test servers: one per test binary, usable, and gone with the process.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nodes::pid_alive;

/// Set in a child process to make [`child_starts_shared_servers`] do its work:
/// `exit` to return normally, `hang` to wait until it is killed.
const CHILD_ENV: &str = "TESTKIT_SERVERS_CHILD";
const CHILD_TEST: &str = "child_starts_shared_servers";

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn postgres_is_shared_and_databases_are_distinct() {
    let pg = testkit::postgres();
    assert!(std::ptr::eq(pg, testkit::postgres()), "one server per test binary");
    assert!(pid_alive(pg.pid()));

    let a = pg.create_database(None).await;
    let b = pg.create_database(None).await;
    assert_ne!(a, b);

    let client_a = connect(&pg.url(&a)).await;
    client_a.batch_execute("CREATE TABLE only_in_a (v int); INSERT INTO only_in_a VALUES (7)").await.unwrap();
    let client_b = connect(&pg.url(&b)).await;
    let row = client_b.query_one("SELECT current_database()", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), b);
    assert!(client_b.query("SELECT * FROM only_in_a", &[]).await.is_err());
    drop(client_a);

    // A copy of `a`, made from it as a template.
    let c = pg.create_database(Some(&a)).await;
    let client_c = connect(&pg.url(&c)).await;
    let row = client_c.query_one("SELECT v FROM only_in_a", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 7);

    let wrong = nodes::postgres_url(&pg.host().to_string(), pg.port(), pg.user(), "wrong", &a);
    assert!(tokio_postgres::connect(&wrong, tokio_postgres::NoTls).await.is_err());
}

#[test]
fn redis_is_shared_and_needs_its_password() {
    let redis = testkit::redis();
    assert!(std::ptr::eq(redis, testkit::redis()));
    assert_eq!(redis.url(), format!("redis://:{}@127.0.0.1:{}/", redis.password(), redis.port()));
    let addr = ([127, 0, 0, 1], redis.port()).into();
    nodes::redis_ping(addr, redis.password(), Duration::from_secs(5)).unwrap();
    assert!(nodes::redis_ping(addr, "wrong", Duration::from_secs(5)).is_err());
}

#[test]
fn fresh_redis_can_be_killed_restarted_and_is_cleaned_up() {
    let mut redis = testkit::fresh_redis();
    assert_ne!(redis.port(), testkit::redis().port());
    nodes::redis_ping(redis.addr(), redis.password(), Duration::from_secs(5)).unwrap();

    let first = redis.pid();
    redis.kill();
    assert!(!pid_alive(first));
    assert!(nodes::redis_ping(redis.addr(), redis.password(), Duration::from_secs(1)).is_err());

    redis.restart();
    nodes::redis_ping(redis.addr(), redis.password(), Duration::from_secs(5)).unwrap();
    let second = redis.pid();

    let port = redis.port();
    let dir = redis.dir().to_path_buf();
    assert!(dir.exists());
    drop(redis);
    assert!(!pid_alive(second));
    assert!(!dir.exists());
    // The port is free again.
    std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
}

/// Not a test of its own: run by the two tests below in a child process.
#[test]
fn child_starts_shared_servers() {
    let Ok(mode) = std::env::var(CHILD_ENV) else { return };
    let pg = testkit::postgres();
    let redis = testkit::redis();
    assert!(pid_alive(pg.pid()) && pid_alive(redis.pid()));
    println!(
        "SERVERS pg_pid={} pg_dir={} redis_pid={} redis_dir={}",
        pg.pid(),
        pg.data_dir().parent().unwrap().display(),
        redis.pid(),
        redis.dir().display()
    );
    if mode == "hang" {
        // Wait to be killed: our stdin is a pipe the parent never writes to.
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
}

/// What the child reported.
struct Started {
    pids: Vec<u32>,
    dirs: Vec<PathBuf>,
}

/// Runs [`child_starts_shared_servers`] in a child process, returns the
/// process and what it started once it has reported.
fn run_child(mode: &str) -> (std::process::Child, Started) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // The harness may print "test ... " before it on the same line.
            if let Some((_, report)) = line.split_once("SERVERS ") {
                let _ = tx.send(report.to_string());
            }
        }
    });
    let report = rx.recv_timeout(Duration::from_secs(120)).expect("the child reports its servers");
    let field = |name: &str| {
        report
            .split(' ')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} missing in {report:?}"))
            .to_string()
    };
    let started = Started {
        pids: vec![field("pg_pid").parse().unwrap(), field("redis_pid").parse().unwrap()],
        dirs: vec![field("pg_dir").into(), field("redis_dir").into()],
    };
    assert!(started.dirs.iter().all(|d| d.starts_with(std::env::temp_dir())), "{report}");
    (child, started)
}

fn assert_cleaned_up(started: &Started) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pause = Duration::from_millis(10);
    loop {
        let left_pids: Vec<_> = started.pids.iter().filter(|p| pid_alive(**p)).collect();
        let left_dirs: Vec<_> = started.dirs.iter().filter(|d| d.exists()).collect();
        if left_pids.is_empty() && left_dirs.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "still there after the child died: {left_pids:?} {left_dirs:?}");
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

#[test]
fn servers_go_away_when_the_test_process_exits() {
    let (mut child, started) = run_child("exit");
    let status = child.wait().unwrap();
    assert!(status.success(), "child failed: {status}");
    assert_cleaned_up(&started);
}

#[test]
fn servers_go_away_when_the_test_process_is_killed() {
    let (mut child, started) = run_child("hang");
    assert!(started.pids.iter().all(|p| pid_alive(*p)));
    child.kill().unwrap(); // SIGKILL: no destructor, no atexit, nothing runs
    child.wait().unwrap();
    assert_cleaned_up(&started);
}
