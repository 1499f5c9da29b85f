//! What the tests of the `millions` binary share: running it, reading its
//! status, and a guard that brings a test's stack down.
#![allow(dead_code)] // each test binary uses its own part

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Run `millions ARGS` with `home` as its run directory, its dashboard on a
/// free port (tests never take the fixed default one, `--dashboard` overrides).
pub fn millions(home: &Path, args: &[&str]) -> Output {
    millions_with(home, args, &[])
}

/// [`millions`] with more environment variables (which `up` passes on to the
/// controller it starts).
pub fn millions_with(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_millions"))
        .args(args)
        .env("MILLIONS_HOME", home)
        .env("MILLIONS_DASHBOARD", "127.0.0.1:0")
        .envs(env.iter().copied())
        .output()
        .expect("running millions")
}

/// `millions bench ARGS --json FILE` with `home` as its run directory: its
/// output, and the JSON report it wrote (the numbers to assert on).
pub fn bench(home: &Path, args: &[&str]) -> (Output, serde_json::Value) {
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let path = home.join(format!("bench-{run}.json"));
    let path_text = path.to_string_lossy().into_owned();
    let all: Vec<&str> =
        ["bench"].into_iter().chain(args.iter().copied()).chain(["--json", &path_text]).collect();
    let o = millions(home, &all);
    let json = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).expect("the bench's JSON report parses"),
        Err(e) => panic!("no JSON report at {path_text} ({e}): {}", text(&o)),
    };
    (o, json)
}

/// The checker of a bench's JSON report found every acknowledged write, and
/// every writer saw its own.
pub fn assert_verified(report: &serde_json::Value) {
    let c = &report["checker"];
    assert_eq!(c["ran"], true, "{c}");
    assert_eq!(c["passed"], true, "{c}");
    assert_eq!(c["lost"], 0, "{c}");
    assert_eq!(c["unverifiable"], 0, "{c}");
    assert_eq!(c["verified"], c["writes_acknowledged"], "{c}");
    assert_eq!(c["read_your_writes_violations"], 0, "{c}");
}

/// The app's HTTPS base URL at the load balancer whose plain address is
/// `lb_addr` (as `millions status` shows it): its IP, the topology's HTTPS port.
pub fn https_base(home: &Path, lb_addr: &str) -> String {
    let t = topology::load(&home.join("topology.toml")).expect("the run directory's topology");
    let plain: std::net::SocketAddr = lb_addr.parse().expect("a load balancer's address");
    format!("https://{}", std::net::SocketAddr::new(plain.ip(), t.ports().https))
}

/// A client trusting the run directory's CA (which signed the load balancers'
/// certificates), following no redirect.
pub fn app_client(home: &Path) -> reqwest::ClientBuilder {
    let pem = std::fs::read(home.join("tls/ca.pem")).expect("the run directory's CA");
    let ca = reqwest::Certificate::from_pem(&pem).expect("the CA is PEM");
    reqwest::Client::builder().add_root_certificate(ca).redirect(reqwest::redirect::Policy::none())
}

/// Its stdout and stderr, for messages and assertions.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Brings a test's stack down when the test ends, also when it fails half-way, so
/// no process outlives the test.
pub struct Stack<'a>(pub &'a Path);

impl Drop for Stack<'_> {
    fn drop(&mut self) {
        let _ = millions(self.0, &["down"]);
    }
}

/// A topology text moved to address ranges of its own (`127.X.201.0/24`,
/// `127.X.202.0/24` for its `127.0.201.`/`127.0.202.` ranges), so tests never
/// collide with a stack started by hand or by another test; written to `dir`.
pub fn own_ranges(dir: &Path, text: &str) -> std::path::PathBuf {
    // Tests of one binary run at once in one process: each call gets its own.
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let octet = 10 + ((std::process::id() + 37 * call) % 240) as u8;
    let text = text
        .replace("127.0.201.", &format!("127.{octet}.201."))
        .replace("127.0.202.", &format!("127.{octet}.202."));
    let path = dir.join("topology.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `millions status --json`.
pub fn status_json(home: &Path) -> serde_json::Value {
    let o = millions(home, &["status", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Node `name` in a status.
pub fn node<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["nodes"].as_array().unwrap().iter().find(|n| n["name"] == name).unwrap()
}

/// Wait (up to a minute) until `check` holds.
pub fn poll(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// GETs sent back to back to `url` from a thread of its own until stopped.
pub struct SteadyGets {
    /// Set to end the load.
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The load's thread; yields (answered 200, every other outcome).
    thread: std::thread::JoinHandle<(u64, Vec<String>)>,
    /// Count of 200s so far, to wait for load to flow.
    ok: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl SteadyGets {
    /// Start the load on `url`, trusting `home`'s CA.
    pub fn start(home: &Path, url: String) -> SteadyGets {
        let client = app_client(home).timeout(Duration::from_secs(10)).build().unwrap();
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ok = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (s, o) = (stop.clone(), ok.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let mut failures = Vec::new();
                while !s.load(Ordering::SeqCst) {
                    match client.get(&url).send().await {
                        // The body is read to its end: an HTTP/2 client resets the
                        // stream of a body dropped unread, and ends a connection
                        // after 1024 such resets of its own ("too_many_internal_resets").
                        Ok(r) if r.status() == 200 => match r.bytes().await {
                            Ok(_) => {
                                o.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => failures.push(format!("reading the body: {e}")),
                        },
                        Ok(r) => failures.push(format!("status {}", r.status())),
                        Err(e) => {
                            // The whole chain: "error sending request" alone says nothing.
                            let mut why = e.to_string();
                            let mut source = std::error::Error::source(&e);
                            while let Some(s) = source {
                                why.push_str(&format!(": {s}"));
                                source = s.source();
                            }
                            failures.push(why)
                        }
                    }
                }
                (o.load(Ordering::SeqCst), failures)
            })
        });
        SteadyGets { stop, thread, ok }
    }

    /// How many GETs were answered 200 so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stop the load; (answered 200, failures).
    pub fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// Ask the DNS server at `server` (UDP) for `name`'s A records, with a query built
/// by hand (RFC 1035): the addresses answered, or the response code when it is not
/// NOERROR (3: NXDOMAIN, 5: REFUSED).
pub fn dns_a(server: std::net::SocketAddr, name: &str) -> Result<Vec<std::net::IpAddr>, u8> {
    let mut query = vec![0x4d, 0x31, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    socket.send_to(&query, server).unwrap();
    let mut buf = [0u8; 1500];
    let n = socket.recv(&mut buf).expect("an answer from the DNS server");
    let answer = &buf[..n];
    assert_eq!(&answer[..2], &query[..2], "the answer carries the query's id");
    let rcode = answer[3] & 0x0f;
    if rcode != 0 {
        return Err(rcode);
    }
    let count = |at: usize| u16::from_be_bytes([answer[at], answer[at + 1]]) as usize;
    let (questions, answers) = (count(4), count(6));
    // Skip a name: labels up to a zero byte, or a compression pointer.
    let skip_name = |mut at: usize| loop {
        match answer[at] {
            0 => return at + 1,
            b if b & 0xc0 == 0xc0 => return at + 2,
            len => at += 1 + len as usize,
        }
    };
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(at) + 4;
    }
    let mut ips = Vec::new();
    for _ in 0..answers {
        at = skip_name(at);
        let (kind, len) = (count(at), count(at + 8));
        at += 10;
        if kind == 1 && len == 4 {
            ips.push(std::net::IpAddr::from([answer[at], answer[at + 1], answer[at + 2], answer[at + 3]]));
        }
        at += len;
    }
    Ok(ips)
}

/// Requests the load balancer (admin address `admin`) sent to `backend`, from
/// its `/metrics`.
pub fn backend_requests(admin: &str, backend: &str) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let text = rt.block_on(async {
        reqwest::get(format!("http://{admin}/metrics")).await.unwrap().text().await.unwrap()
    });
    text.lines()
        .filter(|l| l.contains("lb_backend_requests_total{") && l.contains(&format!("\"{backend}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
