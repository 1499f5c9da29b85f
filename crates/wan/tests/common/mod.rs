//! What the WAN tests share: a gateway of dc1 with one link to a target of the
//! test's own in dc2, targets (raw or echoing), and polling with a deadline.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wan::{Conditions, LinkConfig, Running, WanConfig};

/// dc1's gateway address: listen, source and admin.
pub const DC1: [u8; 4] = [127, 0, 1, 1];
/// The targets' address in dc2.
pub const DC2: [u8; 4] = [127, 0, 2, 1];

pub fn addr(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

/// A gateway configuration of dc1 with one link to `target` in dc2 under `conditions`.
pub fn config(target: SocketAddr, conditions: Conditions) -> WanConfig {
    let mut c = WanConfig::new("dc1", addr(DC1, 0));
    c.conditions.insert("dc2".into(), conditions);
    c.links.push(LinkConfig { listen: addr(DC1, 0), target, source: addr(DC1, 0), peer_dc: "dc2".into() });
    c
}

/// Start `config` with a registry of its own.
pub fn start(config: WanConfig) -> Running {
    wan::start(config, &telemetry::Registry::default()).expect("the gateway starts")
}

/// A target that hands every accepted connection to the test.
pub struct Target {
    /// Where it listens (in dc2).
    pub addr: SocketAddr,
    /// Its listener.
    pub listener: TcpListener,
}

pub async fn target() -> Target {
    let listener = TcpListener::bind(addr(DC2, 0)).await.unwrap();
    Target { addr: listener.local_addr().unwrap(), listener }
}

/// An echo server in dc2: every connection's bytes are written back, and its
/// end of stream is passed back after them. Records who connected and how many
/// bytes it received.
#[derive(Clone)]
pub struct Echo {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The peer address of every connection it accepted.
    pub peers: Arc<Mutex<Vec<SocketAddr>>>,
    /// Bytes received over all connections.
    pub received: Arc<Mutex<usize>>,
}

impl Echo {
    pub fn accepted(&self) -> usize {
        self.peers.lock().unwrap().len()
    }

    pub fn received(&self) -> usize {
        *self.received.lock().unwrap()
    }
}

pub async fn echo() -> Echo {
    let listener = TcpListener::bind(addr(DC2, 0)).await.unwrap();
    let echo = Echo { addr: listener.local_addr().unwrap(), peers: Arc::default(), received: Arc::default() };
    let e = echo.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, peer) = listener.accept().await.unwrap();
            e.peers.lock().unwrap().push(peer);
            let received = e.received.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    *received.lock().unwrap() += n;
                    if stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
                let _ = stream.shutdown().await;
            });
        }
    });
    echo
}

/// Wait until `check` holds, polling with a growing pause; fails after 30 s.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut wait = Duration::from_millis(2);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(50));
    }
}

/// Read exactly `n` bytes, failing after 30 s.
pub async fn read_exact(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut buf))
        .await
        .expect("the bytes arrive")
        .expect("read");
    buf
}

/// Check that nothing arrives on `stream` within a short poll.
pub async fn assert_nothing_arrives(stream: &mut TcpStream) {
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut byte)).await;
    assert!(read.is_err(), "something arrived: {read:?}");
}

/// Read until the end of the stream (failing after 30 s); returns what came.
pub async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut out))
        .await
        .expect("the stream ends")
        .expect("read");
    out
}

/// The gateway's only link's statistics.
pub fn link(running: &Running) -> wan::LinkView {
    running.handle().links().remove(0)
}

/// The only link's listen address.
pub fn listen(running: &Running) -> SocketAddr {
    running.links()[0].listen
}

/// A client of dc1 (from 127.0.0.1, like every process today) connected to the link.
pub async fn connect(running: &Running) -> TcpStream {
    let s = TcpStream::connect(listen(running)).await.unwrap();
    s.set_nodelay(true).unwrap();
    s
}

pub fn ip(a: [u8; 4]) -> IpAddr {
    IpAddr::from(a)
}
