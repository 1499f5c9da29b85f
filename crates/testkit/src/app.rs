//! Spawning the web app against real servers.

use std::net::SocketAddr;

use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use web::{AppState, Application, WebConfig};

/// Shards every test deployment has, so cross-shard paths always run.
pub const TEST_SHARDS: usize = 2;

/// A test deployment: its own shard databases (migrated) and its own Redis key
/// prefix, on the binary's shared PostgreSQL and Redis. Web servers spawned from
/// one `TestEnv` share all state, like a real web tier.
#[derive(Debug, Clone)]
pub struct TestEnv {
    /// One URL per shard database.
    pub shards: Vec<String>,
    /// Per shard, URLs of its streaming replicas (empty: none).
    pub replicas: Vec<Vec<String>>,
    /// The shared Redis.
    pub redis_url: String,
    /// This deployment's key prefix.
    pub prefix: String,
    /// This deployment's object store folder (photos), shared by its web servers
    /// and workers; removed when the last clone is dropped.
    pub store: std::sync::Arc<tempfile::TempDir>,
}

/// The test deployments' operator token (`abuse.bypass_token`), as `millions up`
/// gives its web servers the run directory's admin token: a load generator that
/// sends it is not held by the per-address limits.
pub const BYPASS_TOKEN: &str = "testkit-operator-token";

/// One running web server.
#[derive(Debug)]
pub struct TestApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `http://addr`.
    pub base: String,
    /// Its state: counters, data layer, caches.
    pub state: AppState,
    /// The deployment it belongs to.
    pub env: TestEnv,
    /// Stops it (also on drop).
    shutdown: CancellationToken,
    /// The server task, to wait for a clean stop.
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// The migrated template every shard database is copied from.
async fn template() -> &'static str {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let pg = crate::postgres();
            let name = pg.create_database(None).await;
            data::migrate(&[pg.url(&name)]).await.unwrap_or_else(|e| panic!("migrating the template: {e}"));
            name
        })
        .await
}

impl TestEnv {
    /// A fresh deployment.
    pub async fn new() -> TestEnv {
        let pg = crate::postgres();
        let template = template().await;
        let mut shards = Vec::new();
        for _ in 0..TEST_SHARDS {
            shards.push(pg.url(&pg.create_database(Some(template)).await));
        }
        TestEnv {
            shards,
            replicas: Vec::new(),
            redis_url: crate::redis().url(),
            prefix: format!("t{}:", nodes::random_secret(10)),
            store: new_store(),
        }
    }

    /// A deployment on servers of its own (to crash them): migrated shard databases
    /// on `pg`, and the Redis at `redis_url`.
    pub async fn on_servers(pg: &crate::OwnedPostgres, redis_url: String) -> TestEnv {
        let (client, conn) = tokio_postgres::connect(&pg.url("postgres"), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to the test PostgreSQL: {e}"));
        let conn = tokio::spawn(conn);
        let mut shards = Vec::new();
        for i in 0..TEST_SHARDS {
            client
                .batch_execute(&format!("CREATE DATABASE shard_{i}"))
                .await
                .expect("creating a shard database");
            shards.push(pg.url(&format!("shard_{i}")));
        }
        drop(client);
        let _ = conn.await;
        data::migrate(&shards).await.unwrap_or_else(|e| panic!("migrating: {e}"));
        TestEnv {
            shards,
            replicas: Vec::new(),
            redis_url,
            prefix: format!("t{}:", nodes::random_secret(10)),
            store: new_store(),
        }
    }

    /// A deployment whose shards live on `pg`'s primary, each with a replica on
    /// its replica (configured statically: `database.replicas`). Waits until
    /// the replica has the migrated databases.
    pub async fn on_replicated(pg: &crate::ReplicatedPostgres, redis_url: String) -> TestEnv {
        let mut env = TestEnv::on_servers(&pg.primary, redis_url).await;
        env.replicas = (0..TEST_SHARDS).map(|i| vec![pg.replica.url(&format!("shard_{i}"))]).collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        for url in env.replicas.iter().flatten() {
            loop {
                let ready = match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
                    Ok((client, conn)) => {
                        let conn = tokio::spawn(conn);
                        let ok = client
                            .query_one("SELECT count(*) FROM refinery_schema_history", &[])
                            .await
                            .is_ok();
                        drop(client);
                        let _ = conn.await;
                        ok
                    }
                    Err(_) => false,
                };
                if ready {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "the replica never got {url}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        env
    }

    /// The `[database]` lines for this deployment.
    fn database_toml(&self) -> String {
        format!("shards = {:?}\nreplicas = {:?}\npool_size = 4\n", self.shards, self.replicas)
    }

    /// A web configuration for this deployment, on a free port, with cheap password
    /// hashing (still argon2id) so tests stay fast.
    pub fn config(&self) -> WebConfig {
        let text = format!(
            r#"
listen = "127.0.0.1:0"
[database]
{database}[redis]
url = "{redis}"
prefix = "{prefix}"
[passwords]
memory_kib = 256
iterations = 1
parallelism = 1
[http]
shutdown_grace_secs = 5
[abuse]
bypass_token = "{bypass}"
[media]
store_dir = "{store}"
"#,
            database = self.database_toml(),
            redis = self.redis_url,
            prefix = self.prefix,
            store = self.store.path().display(),
            bypass = BYPASS_TOKEN,
        );
        WebConfig::parse(&text, "test config").expect("the test config is valid")
    }

    /// The sum over every shard of `sql`, a query returning one `bigint` (a count).
    pub async fn count(&self, sql: &str) -> i64 {
        let mut n = 0;
        for url in &self.shards {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("connecting to a shard: {e}"));
            let conn = tokio::spawn(conn);
            n += client.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}")).get::<_, i64>(0);
            drop(client);
            let _ = conn.await;
        }
        n
    }

    /// A worker configuration for this deployment: fast polling and retries.
    pub fn worker_config(&self) -> worker::WorkerConfig {
        worker::WorkerConfig::parse(&self.worker_config_toml(), "test worker config")
            .expect("the test worker config is valid")
    }

    /// [`TestEnv::worker_config`] as TOML, to append settings to and hand to a
    /// `millions worker` process.
    pub fn worker_config_toml(&self) -> String {
        format!(
            r#"
listen = "127.0.0.1:0"
[database]
{database}[redis]
url = "{redis}"
prefix = "{prefix}"
[media]
store_dir = "{store}"
[worker]
poll_ms = 20
backoff_base_ms = 10
backoff_max_ms = 100
lease_secs = 30
shutdown_grace_secs = 5
"#,
            database = self.database_toml(),
            redis = self.redis_url,
            prefix = self.prefix,
            store = self.store.path().display(),
        )
    }

    /// Start a worker on this deployment.
    pub async fn spawn_worker(&self) -> TestWorker {
        self.spawn_worker_with(|_| {}).await
    }

    /// Start a worker with an adjusted configuration.
    pub async fn spawn_worker_with(&self, adjust: impl FnOnce(&mut worker::WorkerConfig)) -> TestWorker {
        let mut config = self.worker_config();
        adjust(&mut config);
        let w = worker::Worker::build(config).await.unwrap_or_else(|e| panic!("building a worker: {e:#}"));
        let ctx = w.context();
        let addr = w.local_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(w.run_until_stopped(shutdown.clone()));
        TestWorker { addr, ctx, shutdown, task: Some(task) }
    }

    /// Start a web server on this deployment.
    pub async fn spawn(&self) -> TestApp {
        self.spawn_with(|_| {}).await
    }

    /// Start a web server with an adjusted configuration.
    pub async fn spawn_with(&self, adjust: impl FnOnce(&mut WebConfig)) -> TestApp {
        let mut config = self.config();
        adjust(&mut config);
        let app = Application::build(config).await.unwrap_or_else(|e| panic!("building the app: {e:#}"));
        let addr = app.local_addr();
        let state = app.state();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        TestApp { addr, base: format!("http://{addr}"), state, env: self.clone(), shutdown, task: Some(task) }
    }
}

fn new_store() -> std::sync::Arc<tempfile::TempDir> {
    std::sync::Arc::new(tempfile::tempdir().expect("creating an object store folder"))
}

/// A web server on a fresh deployment.
pub async fn spawn_app() -> TestApp {
    TestEnv::new().await.spawn().await
}

/// One running worker.
#[derive(Debug)]
pub struct TestWorker {
    /// Its health and metrics address.
    pub addr: SocketAddr,
    /// Its context (data layer counters, id).
    pub ctx: worker::Context,
    /// Stops it (also on drop).
    shutdown: CancellationToken,
    /// The worker task.
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestWorker {
    /// Shut down gracefully and wait.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("worker task").expect("worker stopped cleanly");
        }
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestApp {
    /// `base + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A client that keeps cookies, like a browser, and does not follow redirects.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("building a client")
    }

    /// Stop the server and wait until it has.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server stopped cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
