//! What the DNS tests share: a configuration to start from, DNS clients over real
//! UDP and TCP sockets (hickory-proto messages), health URLs of the test's own,
//! and reading `/metrics`.
#![allow(dead_code)] // each test binary uses a part

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use hickory_proto::op::{Edns, Message, MessageType, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long a test waits for an answer that must come (a bound against hangs,
/// not a timing claim).
pub const ANSWER_BOUND: Duration = Duration::from_secs(20);

/// A configuration with three DCs (two entries each, all probed at `health`),
/// two regions (`one`: 127.0.11.0/24 prefers dc1; `two`: 127.0.12.0/24 prefers
/// dc2) and dc3 first for everyone else. `top` goes in front (top-level keys
/// must come before any table), `tables` at the end.
pub fn config_text(health: &str, top: &str, tables: &str) -> String {
    config_text_by_dc([health; 3], top, tables)
}

/// [`config_text`] with each DC's two entries probed at a URL of their own
/// (`health[0]` dc1's, and so on).
pub fn config_text_by_dc(health: [&str; 3], top: &str, tables: &str) -> String {
    let [h1, h2, h3] = health;
    format!(
        r#"{top}
zone = "millions.test"
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
nameservers = ["127.0.0.53", "::53"]
default_order = ["dc3"]

[health]
interval_ms = 50

[[dc]]
name = "dc1"
entry = [{{ address = "127.0.1.1", health_url = "{h1}" }}, {{ address = "127.0.1.2", health_url = "{h1}" }}]
[[dc]]
name = "dc2"
entry = [{{ address = "127.0.2.1", health_url = "{h2}" }}, {{ address = "127.0.2.2", health_url = "{h2}" }}]
[[dc]]
name = "dc3"
entry = [{{ address = "127.0.3.1", health_url = "{h3}" }}, {{ address = "127.0.3.2", health_url = "{h3}" }}]

[[region]]
name = "one"
ranges = ["127.0.11.0/24"]
order = ["dc1", "dc2"]
[[region]]
name = "two"
ranges = ["127.0.12.0/24"]
order = ["dc2", "dc1"]
{tables}
"#
    )
}

/// A name in the test zone.
pub fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

/// A query for `qname`/`qtype`, EDNS with `payload` when given.
pub fn query(qname: &str, qtype: RecordType, payload: Option<u16>) -> Message {
    let mut m = Message::query();
    m.metadata.id = rand_id();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name(qname), qtype));
    if let Some(p) = payload {
        let mut edns = Edns::new();
        edns.set_max_payload(p);
        m.set_edns(edns);
    }
    m
}

/// A query carrying an EDNS Client Subnet option (`subnet` like `127.0.12.0/24`).
pub fn query_with_ecs(qname: &str, qtype: RecordType, subnet: &str) -> Message {
    let mut m = query(qname, qtype, Some(1232));
    let ecs: ClientSubnet = subnet.parse().unwrap();
    m.edns.as_mut().unwrap().options_mut().insert(EdnsOption::Subnet(ecs));
    m
}

fn rand_id() -> u16 {
    use std::sync::atomic::AtomicU16;
    static NEXT: AtomicU16 = AtomicU16::new(1);
    NEXT.fetch_add(7919, Ordering::Relaxed)
}

/// A UDP client bound to `source` (any 127.0.0.0/8 address works here).
pub struct UdpClient {
    /// The socket.
    pub socket: UdpSocket,
    /// The server.
    pub server: SocketAddr,
}

impl UdpClient {
    /// A socket on `source` talking to `server`.
    pub async fn new(source: &str, server: SocketAddr) -> UdpClient {
        let socket = UdpSocket::bind((source.parse::<IpAddr>().unwrap(), 0)).await.unwrap();
        UdpClient { socket, server }
    }

    /// Send raw bytes.
    pub async fn send_raw(&self, bytes: &[u8]) {
        self.socket.send_to(bytes, self.server).await.unwrap();
    }

    /// The next datagram, raw.
    pub async fn recv_raw(&self) -> Vec<u8> {
        let mut buf = vec![0u8; 65_535];
        let (n, _) = tokio::time::timeout(ANSWER_BOUND, self.socket.recv_from(&mut buf))
            .await
            .expect("no answer over UDP")
            .unwrap();
        buf.truncate(n);
        buf
    }

    /// Ask and wait for the answer with the query's id, with its size on the wire.
    pub async fn ask_sized(&self, query: &Message) -> (Message, usize) {
        self.send_raw(&query.to_vec().unwrap()).await;
        loop {
            let raw = self.recv_raw().await;
            let answer = Message::from_vec(&raw).unwrap();
            if answer.metadata.id == query.metadata.id {
                return (answer, raw.len());
            }
        }
    }

    /// Ask and wait for the answer with the query's id.
    pub async fn ask(&self, query: &Message) -> Message {
        self.ask_sized(query).await.0
    }
}

/// Ask over UDP from `source`.
pub async fn ask_udp(server: SocketAddr, source: &str, query: &Message) -> Message {
    UdpClient::new(source, server).await.ask(query).await
}

/// Write one framed message on a TCP stream.
pub async fn write_frame(stream: &mut TcpStream, bytes: &[u8]) {
    let mut frame = (bytes.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(bytes);
    stream.write_all(&frame).await.unwrap();
}

/// Read one framed message from a TCP stream; `None` when the server closed it.
pub async fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let read = async {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.ok()?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut buf).await.ok()?;
        Some(buf)
    };
    tokio::time::timeout(ANSWER_BOUND, read).await.expect("the TCP connection hung")
}

/// Ask over a new TCP connection.
pub async fn ask_tcp(server: SocketAddr, query: &Message) -> Message {
    let mut stream = TcpStream::connect(server).await.unwrap();
    write_frame(&mut stream, &query.to_vec().unwrap()).await;
    Message::from_vec(&read_frame(&mut stream).await.expect("no answer over TCP")).unwrap()
}

/// The transports a test runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// From 127.0.0.1 over UDP.
    Udp,
    /// Over TCP.
    Tcp,
}

/// Ask over `via` (UDP from 127.0.0.1).
pub async fn ask(via: Via, server: SocketAddr, query: &Message) -> Message {
    match via {
        Via::Udp => ask_udp(server, "127.0.0.1", query).await,
        Via::Tcp => ask_tcp(server, query).await,
    }
}

/// The addresses in an answer section, sorted.
pub fn addresses(m: &Message) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

/// Parse addresses.
pub fn ips(list: &[&str]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = list.iter().map(|s| s.parse().unwrap()).collect();
    out.sort();
    out
}

/// The ECS option of an answer: (source prefix, scope prefix).
pub fn ecs_of(m: &Message) -> Option<(IpAddr, u8, u8)> {
    let edns = m.edns.as_ref()?;
    edns.options().as_ref().iter().find_map(|(_, o)| match o {
        EdnsOption::Subnet(s) => Some((s.addr(), s.source_prefix(), s.scope_prefix())),
        _ => None,
    })
}

/// Whether a message is an answer.
pub fn is_response(m: &Message) -> bool {
    m.metadata.message_type == MessageType::Response
}

/// A health URL of the test's own: 200 while healthy, 503 otherwise; it closes
/// every connection after its answer, so a stopped one refuses the next probe.
pub struct HealthUrl {
    /// `http://ADDR/readyz`.
    pub url: String,
    /// Whether it answers 200.
    healthy: Arc<AtomicBool>,
    /// The server's task (aborted by `stop`).
    task: tokio::task::JoinHandle<()>,
}

impl HealthUrl {
    /// A healthy one on a free port.
    pub async fn start() -> HealthUrl {
        let healthy = Arc::new(AtomicBool::new(true));
        let app = axum::Router::new()
            .route(
                "/readyz",
                axum::routing::get(|State(h): State<Arc<AtomicBool>>| async move {
                    let status = if h.load(Ordering::SeqCst) {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (status, [(header::CONNECTION, "close")]).into_response()
                }),
            )
            .with_state(healthy.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/readyz", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HealthUrl { url, healthy, task }
    }

    /// Answer 200 (true) or 503 (false) from now on.
    pub fn set(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Stop listening: probes are refused.
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// The value of a metric line (`name{labels}` exactly as rendered), 0 if absent.
pub async fn metric(admin: SocketAddr, series: &str) -> f64 {
    let text = reqwest::get(format!("http://{admin}/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}
