//! Serving threads: one single-threaded tokio runtime per configured thread, and
//! one acceptor handing each new connection to the runtime serving the fewest.
//! Used by the load balancer's proxy and the CDN edge.
//!
//! A connection lives on one thread from accept to close, with its requests and
//! its timers (and whatever per-thread state its server keeps, set up by the
//! `on_thread` hook of [`spawn`]): no task ever moves between threads, no thread
//! wakes another to share work. Against pingora-core's server
//! (a work-stealing runtime per service), measured in interleaved runs (ADR 0005,
//! `docs/BENCHMARKS.md`): less CPU per request and more requests per second at
//! saturation. One acceptor rather than every thread accepting from the shared
//! socket: whichever thread wakes first would take a burst of new connections
//! alone, and serve them alone for their whole life.

#![forbid(unsafe_code)]

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What serves a connection.
pub trait Serve: Send + Sync + 'static {
    /// Serve one client connection until it closes, or until `shutdown` turns
    /// true and its request in flight is done.
    fn serve(
        &self,
        tcp: tokio::net::TcpStream,
        shutdown: &watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send;
}

/// How long a graceful stop lets requests in flight finish.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// A listening socket: address reuse (a restarted load balancer binds
/// again at once), a long accept queue (a burst of new connections waits rather
/// than fails), non-blocking for tokio.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// What every serving thread shares.
#[derive(Clone)]
pub struct Shared {
    /// Cancelled to stop accepting (and, after the grace period, serving).
    pub stop: CancellationToken,
    /// Whether a stop lets requests in flight finish.
    pub graceful: Arc<AtomicBool>,
    /// Turns true when connections should close after their request in flight.
    pub shutdown: watch::Receiver<bool>,
}

/// One serving thread as the acceptor sees it.
struct Worker {
    /// Where its connections are spawned.
    handle: tokio::runtime::Handle,
    /// Its open connections: the acceptor picks the thread with the fewest.
    connections: Arc<AtomicUsize>,
}

/// Start `threads` threads named `name-N` serving `listeners`, each connection by
/// its listener's server; each thread first runs `on_thread(N)`. Each thread ends
/// after `shared.stop`: at once on a fast stop, once its connections are done (at
/// most [`STOP_GRACE`]) on a graceful one.
pub fn spawn<S: Serve>(
    name: &str,
    listeners: Vec<(TcpListener, Arc<S>)>,
    threads: usize,
    shared: Shared,
    on_thread: fn(usize),
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    let tracker = TaskTracker::new();
    let mut joins = Vec::with_capacity(threads);
    let mut workers = Vec::with_capacity(threads);
    for i in 0..threads.max(1) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        workers.push(Worker { handle: runtime.handle().clone(), connections: Arc::default() });
        let (stop, graceful, tracker) = (shared.stop.clone(), shared.graceful.clone(), tracker.clone());
        let join = std::thread::Builder::new().name(format!("{name}-{i}")).spawn(move || {
            on_thread(i);
            runtime.block_on(async {
                stop.cancelled().await;
                if graceful.load(Ordering::Acquire) {
                    tracker.close();
                    let _ = tokio::time::timeout(STOP_GRACE, tracker.wait()).await;
                }
            });
            // Dropping the runtime cuts whatever is left.
        });
        match join {
            Ok(join) => joins.push(join),
            Err(e) => {
                shared.stop.cancel();
                return Err(e);
            }
        }
    }
    let first = workers[0].handle.clone();
    let _enter = first.enter();
    let workers = Arc::new(workers);
    for (listener, front) in listeners {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        first.spawn(accept(listener, front, workers.clone(), tracker.clone(), shared.clone()));
    }
    Ok(joins)
}

/// Accept connections until `shared.stop`, each handed to the least busy thread
/// and served by `front`.
async fn accept<S: Serve>(
    listener: tokio::net::TcpListener,
    front: Arc<S>,
    workers: Arc<Vec<Worker>>,
    tracker: TaskTracker,
    shared: Shared,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            () = shared.stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let tcp = match accepted.and_then(|(tcp, _)| tcp.into_std()) {
            Ok(tcp) => tcp,
            Err(e) => {
                // Out of file descriptors, most likely: let connections end first.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let worker = workers
            .iter()
            .min_by_key(|w| w.connections.load(Ordering::Relaxed))
            .expect("at least one serving thread");
        worker.connections.fetch_add(1, Ordering::Relaxed);
        let counted = Counted(worker.connections.clone());
        let (shutdown, front) = (shared.shutdown.clone(), front.clone());
        worker.handle.spawn(tracker.track_future(async move {
            let _counted = counted;
            // Registered with the serving thread's own reactor.
            match tokio::net::TcpStream::from_std(tcp) {
                Ok(tcp) => front.serve(tcp, &shutdown).await,
                Err(e) => tracing::warn!(error = %e, "cannot register a connection"),
            }
        }));
    }
}

/// One open connection in its thread's count, until dropped (however the task ends).
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
