//! Property-based fuzzing of HTTP/1's byte-level code (docs/SECURITY.md): the
//! request head parser and its framing rules ([`super::parse::request`],
//! [`rules::declared_framing`]), a client connection's head handling end to end
//! ([`super::serve`], over an in-memory stream, with no backend), the answer head
//! parser ([`super::parse::answer`]) and the chunked decoder ([`Chunked`]).
//!
//! Properties: arbitrary bytes never panic; a generated well-formed request parses
//! to what was generated and reaches the backend's copy line for line; a chunked
//! body decodes to the same bytes however it is split; every smuggling shape
//! (`Content-Length` with `Transfer-Encoding`, two lengths, a bad length or coding,
//! a bare LF, an obsolete line folding, chunked from HTTP/1.0) is refused 400 before
//! anything could reach a backend. Each runs `PROPTEST_CASES` cases (256 by default;
//! `make fuzz` runs many more).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::Method;
use pingora_core::apps::HttpServerOptions;
use proptest::prelude::*;
use proptest::sample::Index;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Chunked;
use super::parse::{self, Framing, Head};
use crate::accesslog::AccessLog;
use crate::config::LbConfig;
use crate::metrics::LbMetrics;
use crate::pipeline::{Proxy, Refusal};
use crate::pool::Pool;
use crate::rules::{self, Declared};

/// The client every request comes from.
const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

/// A proxy with the default configuration and no backend: a request that passes
/// every check is answered 503 `no_backend`, so what a connection answers tells
/// whether its request would have reached a web server.
fn proxy() -> Proxy {
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let config = LbConfig::new(addr, addr, Vec::new());
    Proxy {
        pool: Arc::new(Pool::new(&[], config.algorithm, config.outlier.clone())),
        metrics: LbMetrics::new(&telemetry::Registry::default()),
        limiter: None,
        access_log: Arc::new(AccessLog::start_to(std::io::sink()).expect("access log thread")),
        options: HttpServerOptions::default(),
        config,
        entry: crate::pipeline::Entry::Http,
    }
}

thread_local! {
    /// One proxy and one runtime per test thread, shared by its cases.
    static SHARED: (Proxy, tokio::runtime::Runtime) = (
        proxy(),
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime"),
    );
}

/// What a client connection answers to `bytes` (sent, then the client's side of
/// the connection shut): the status of the one answer, or `None` if the
/// connection was closed without one. Panics if the connection is not done within
/// a generous bound (a hang is a finding too), or if the answer is not one whole
/// error answer of the load balancer's own.
fn exchange(bytes: &[u8]) -> Option<u16> {
    SHARED.with(|(proxy, runtime)| {
        runtime.block_on(async {
            let (mut client, server) = tokio::io::duplex(1 << 16);
            let (_stop, shutdown) = tokio::sync::watch::channel(false);
            let serving = super::serve(proxy, server, BytesMut::new(), Some(PEER), &shutdown);
            let talking = async {
                // The server may close before reading everything: that is an answer too.
                let _ = client.write_all(bytes).await;
                let _ = client.shutdown().await;
                let mut answer = Vec::new();
                let _ = client.read_to_end(&mut answer).await;
                answer
            };
            let bounded =
                tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(serving, talking) });
            let ((), answer) = bounded.await.expect("the connection ends");
            (!answer.is_empty()).then(|| status_of_own_answer(&answer))
        })
    })
}

/// The status of an answer of the load balancer's own, checked whole: a status
/// line, `Content-Length` matching a JSON error body, `Connection: close`.
fn status_of_own_answer(answer: &[u8]) -> u16 {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut headers);
    let text = String::from_utf8_lossy(answer);
    let Ok(httparse::Status::Complete(n)) = resp.parse(answer) else { panic!("not one answer: {text:?}") };
    let header = |name: &str| {
        resp.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value).unwrap_or(b"")
    };
    let body = &answer[n..];
    assert_eq!(header("content-length"), body.len().to_string().as_bytes(), "{text:?}");
    assert_eq!(header("connection"), b"close", "{text:?}");
    let json: serde_json::Value = serde_json::from_slice(body).expect("a JSON body");
    let code = json["error"]["code"].as_str().expect("an error code");
    assert_eq!(json["error"]["message"], rules::error_message(code), "{text:?}");
    resp.code.expect("a status")
}

/// A header field's name: a token, never one with a meaning for framing.
fn field_name() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9-]{0,15}".prop_filter("a field with no role in framing", |n| {
        let n = n.to_ascii_lowercase();
        !["content-length", "transfer-encoding", "host", "connection", "expect"].contains(&n.as_str())
    })
}

/// A header field's value: visible ASCII with inner spaces, no leading or
/// trailing whitespace (httparse trims those).
fn field_value() -> impl Strategy<Value = String> {
    "[!-~]([ -~]{0,30}[!-~])?"
}

/// `name` with each letter in either ASCII case.
fn any_case(name: &'static str) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<bool>(), name.len()).prop_map(move |upper| {
        name.chars().zip(upper).map(|(c, up)| if up { c.to_ascii_uppercase() } else { c }).collect()
    })
}

/// A well-formed request, as its parts.
#[derive(Debug, Clone)]
struct Req {
    method: Method,
    path: String,
    http10: bool,
    host: String,
    /// Ordinary fields, in order.
    fields: Vec<(String, String)>,
    /// The tokens of a `Connection` field, if there is one.
    connection: Option<Vec<&'static str>>,
    /// `Content-Length` (with its spelling) or chunked, or neither.
    framing: Option<(String, Option<u64>)>,
    expect_continue: bool,
}

impl Req {
    /// The head as a client sends it; `framing_at` says where among the fields
    /// the framing field goes.
    fn head(&self, framing_at: Index) -> Vec<u8> {
        let mut lines: Vec<String> = self.fields.iter().map(|(n, v)| format!("{n}: {v}")).collect();
        lines.insert(0, format!("Host: {}", self.host));
        if let Some(tokens) = &self.connection {
            lines.push(format!("Connection: {}", tokens.join(", ")));
        }
        if self.expect_continue {
            lines.push("Expect: 100-continue".into());
        }
        if let Some((name, length)) = &self.framing {
            let line = match length {
                Some(n) => format!("{name}: {n}"),
                None => format!("{name}: chunked"),
            };
            lines.insert(framing_at.index(lines.len() + 1), line);
        }
        let version = if self.http10 { "HTTP/1.0" } else { "HTTP/1.1" };
        let mut head = format!("{} {} {version}\r\n", self.method, self.path);
        for line in lines {
            head.push_str(&line);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    /// The body framing the load balancer must read.
    fn body(&self) -> Framing {
        match &self.framing {
            None | Some((_, Some(0))) => Framing::Empty,
            Some((_, Some(n))) => Framing::Length(*n),
            Some((_, None)) => Framing::Chunked,
        }
    }

    fn keep_alive(&self) -> bool {
        let tokens = self.connection.as_deref().unwrap_or(&[]);
        let close = tokens.contains(&"close");
        if self.http10 { tokens.contains(&"keep-alive") && !close } else { !close }
    }
}

fn request() -> impl Strategy<Value = Req> {
    let method = prop_oneof![
        prop::sample::select(vec![
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
            Method::PATCH,
        ]),
        "[A-Z]{1,10}"
            .prop_filter("not CONNECT", |m| m != "CONNECT")
            .prop_map(|m| Method::from_bytes(m.as_bytes()).expect("a token is a method")),
    ];
    let path = "/[A-Za-z0-9._~%/?=&+-]{0,60}".prop_filter("not internal", |p| !rules::is_internal(p));
    let connection = prop::option::of(prop::collection::vec(
        prop::sample::select(vec!["close", "keep-alive", "X-Private", "upgrade"]),
        1..3,
    ));
    let framing = prop_oneof![
        Just(None),
        (any_case("content-length"), 0u64..=16 * 1024 * 1024).prop_map(|(n, l)| Some((n, Some(l)))),
        any_case("transfer-encoding").prop_map(|n| Some((n, None))),
    ];
    (
        method,
        path,
        any::<bool>(),
        "[a-z0-9.-]{1,20}(:[0-9]{1,5})?",
        prop::collection::vec((field_name(), field_value()), 0..12),
        connection,
        framing,
        any::<bool>(),
    )
        .prop_map(|(method, path, http10, host, fields, connection, framing, expect_continue)| {
            // HTTP/1.0 has no chunked coding (a request claiming it is refused: below).
            let framing = framing.filter(|(_, length)| !(http10 && length.is_none()));
            Req { method, path, http10, host, fields, connection, framing, expect_continue }
        })
}

/// The backend's copy of a head, as (name, value) lines after its request line.
fn fields_of(head: &[u8]) -> (String, Vec<(String, String)>) {
    let mut headers = [httparse::EMPTY_HEADER; parse::MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    assert!(matches!(req.parse(head), Ok(httparse::Status::Complete(n)) if n == head.len()));
    let line = format!("{} {} HTTP/1.{}", req.method.unwrap(), req.path.unwrap(), req.version.unwrap());
    let fields = req
        .headers
        .iter()
        .map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned()))
        .collect();
    (line, fields)
}

/// A way to make a well-formed head ambiguous: each must be refused 400.
#[derive(Debug, Clone)]
enum Smuggle {
    /// `Content-Length` and `Transfer-Encoding` both.
    LengthAndChunked(u64),
    /// Two `Content-Length` fields (the same value or not).
    TwoLengths(u64, u64),
    /// A length that is not plain digits.
    BadLength(String),
    /// A coding other than `chunked` alone, or two `Transfer-Encoding` fields.
    BadCoding(String),
    /// One line ended by LF alone (index among the CRLFs).
    BareLf(Index),
    /// A field continued on the next line (obsolete line folding).
    ObsFold(Index, String),
    /// Whitespace between a field's name and its colon.
    SpaceBeforeColon(bool),
    /// Chunked from an HTTP/1.0 client.
    Http10Chunked,
    /// No `Host` (HTTP/1.1), or two.
    Host(bool),
}

fn smuggle() -> impl Strategy<Value = Smuggle> {
    prop_oneof![
        (0u64..100_000).prop_map(Smuggle::LengthAndChunked),
        (0u64..1000, 0u64..1000).prop_map(|(a, b)| Smuggle::TwoLengths(a, b)),
        prop_oneof![
            Just("+5".to_owned()),
            Just("-1".to_owned()),
            Just("5, 5".to_owned()),
            Just("0x10".to_owned()),
            Just("1 2".to_owned()),
            Just("18446744073709551616".to_owned()),
            "[0-9]{0,3}[^0-9\r\n\t ][!-~]{0,3}",
        ]
        .prop_map(Smuggle::BadLength),
        prop_oneof![
            Just("gzip".to_owned()),
            Just("chunked, gzip".to_owned()),
            Just("gzip, chunked".to_owned()),
            Just("chunked, chunked".to_owned()),
            Just("identity".to_owned()),
            Just("chunked\r\nTransfer-Encoding: chunked".to_owned()),
            Just("\"chunked\"".to_owned()),
            Just("xchunked".to_owned()),
        ]
        .prop_map(Smuggle::BadCoding),
        any::<Index>().prop_map(Smuggle::BareLf),
        (any::<Index>(), "[ \t][!-~]{1,10}").prop_map(|(i, s)| Smuggle::ObsFold(i, s)),
        any::<bool>().prop_map(Smuggle::SpaceBeforeColon),
        Just(Smuggle::Http10Chunked),
        any::<bool>().prop_map(Smuggle::Host),
    ]
}

/// `req`'s head, made ambiguous by `how`.
fn smuggled(mut req: Req, how: &Smuggle, at: Index) -> Vec<u8> {
    let with = |req: &Req, line: String| {
        let head = req.head(at);
        let mut text = String::from_utf8(head).expect("ASCII");
        let end = text.len() - 2;
        text.insert_str(end, &format!("{line}\r\n"));
        text.into_bytes()
    };
    match how {
        Smuggle::LengthAndChunked(n) => {
            req.framing = Some(("Transfer-Encoding".into(), None));
            with(&req, format!("Content-Length: {n}"))
        }
        Smuggle::TwoLengths(a, b) => {
            req.framing = Some(("Content-Length".into(), Some(*a)));
            with(&req, format!("content-length: {b}"))
        }
        Smuggle::BadLength(v) => {
            req.framing = None;
            with(&req, format!("Content-Length: {v}"))
        }
        Smuggle::BadCoding(v) => {
            req.framing = None;
            with(&req, format!("Transfer-Encoding: {v}"))
        }
        Smuggle::BareLf(i) => {
            let mut head = req.head(at);
            let crlfs: Vec<usize> = (0..head.len() - 1).filter(|&k| &head[k..k + 2] == b"\r\n").collect();
            head.remove(crlfs[i.index(crlfs.len())]);
            head
        }
        Smuggle::ObsFold(i, continuation) => {
            let mut text = String::from_utf8(req.head(at)).expect("ASCII");
            // After one of the field lines (not the request line, not the end).
            let ends: Vec<usize> = text.match_indices("\r\n").map(|(k, _)| k + 2).collect();
            let fields = &ends[..ends.len() - 1];
            let after = fields[i.index(fields.len())];
            text.insert_str(after, &format!("{continuation}\r\n"));
            text.into_bytes()
        }
        Smuggle::SpaceBeforeColon(tab) => {
            req.framing = None;
            with(&req, format!("Content-Length{}: 5", if *tab { "\t" } else { " " }))
        }
        Smuggle::Http10Chunked => {
            req.http10 = true;
            req.framing = Some(("Transfer-Encoding".into(), None));
            req.head(at)
        }
        Smuggle::Host(none) => {
            if *none {
                req.http10 = false;
                let text = String::from_utf8(req.head(at)).expect("ASCII");
                let host = format!("Host: {}\r\n", req.host);
                text.replacen(&host, "", 1).into_bytes()
            } else {
                with(&req, "host: other.example".into())
            }
        }
    }
}

/// A chunked body: its chunks, each with an extension or not and its size in any
/// case with leading zeros, then trailer fields.
#[derive(Debug, Clone)]
struct Body {
    chunks: Vec<(Vec<u8>, bool, bool, usize)>,
    trailers: Vec<(String, String)>,
}

impl Body {
    fn encoded(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (data, upper, ext, zeros) in &self.chunks {
            let size = if *upper { format!("{:X}", data.len()) } else { format!("{:x}", data.len()) };
            out.extend_from_slice("0".repeat(*zeros).as_bytes());
            out.extend_from_slice(size.as_bytes());
            if *ext {
                out.extend_from_slice(b";name=\"v a l\"");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n");
        for (name, value) in &self.trailers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    fn data(&self) -> Vec<u8> {
        self.chunks.iter().flat_map(|(data, ..)| data.iter().copied()).collect()
    }
}

fn body() -> impl Strategy<Value = Body> {
    let chunk = (prop::collection::vec(any::<u8>(), 1..300), any::<bool>(), any::<bool>(), 0usize..4);
    (prop::collection::vec(chunk, 0..8), prop::collection::vec((field_name(), field_value()), 0..3))
        .prop_map(|(chunks, trailers)| Body { chunks, trailers })
}

/// Feed `bytes` to a fresh decoder in pieces cut at `cuts`: what it took, the
/// data it gave, its final state, or the first error.
fn decode_in_pieces(bytes: &[u8], cuts: &[Index]) -> Result<(usize, Vec<u8>, Chunked), &'static str> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    let (mut state, mut taken, mut data) = (Chunked::Size(0, 0), 0, Vec::new());
    for piece in points.windows(2).map(|w| &bytes[w[0]..w[1]]) {
        let mut given = 0u64;
        let (used, counted) = state.advance_with(piece, |d| {
            given += d.len() as u64;
            data.extend_from_slice(d);
        })?;
        assert_eq!(counted, given, "the data counted is the data given");
        assert!(used <= piece.len());
        if used < piece.len() {
            assert_eq!(state, Chunked::Done, "only the body's end leaves bytes");
        }
        taken += used;
    }
    Ok((taken, data, state))
}

proptest! {
    #![proptest_config(settings::fuzz::config(1.0))]

    #[test]
    fn any_bytes_as_a_request_head_are_parsed_or_refused(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        SHARED.with(|(proxy, _)| {
            if let Err(refusal) = parse::request(proxy, &bytes, Some(PEER), Instant::now()) {
                prop_assert!(matches!(refusal.status, 400 | 404 | 405 | 413 | 431), "{refusal:?}");
            }
            Ok(())
        })?;
    }

    #[test]
    fn head_like_bytes_are_parsed_or_refused(
        req in request(),
        at in any::<Index>(),
        flips in prop::collection::vec((any::<Index>(), any::<u8>()), 1..4),
    ) {
        // A well-formed head with a few bytes changed: what the parser sees most.
        let mut head = req.head(at);
        for (i, b) in &flips {
            let k = i.index(head.len());
            head[k] = *b;
        }
        SHARED.with(|(proxy, _)| {
            if let Ok((parsed, _)) = parse::request(proxy, &head, Some(PEER), Instant::now()) {
                // Whatever was accepted, the backend's copy is one well-formed head.
                fields_of(&parsed.upstream);
            }
        });
    }

    #[test]
    fn any_bytes_on_a_client_connection_get_one_clean_answer_or_none(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..400),
            (request(), any::<Index>(), prop::collection::vec(any::<u8>(), 0..40))
                .prop_map(|(req, at, mut tail)| { let mut b = req.head(at); b.append(&mut tail); b }),
        ],
    ) {
        if let Some(status) = exchange(&bytes) {
            prop_assert!(matches!(status, 400 | 404 | 405 | 413 | 414 | 431 | 503), "{status}");
        }
    }

    #[test]
    fn a_well_formed_request_parses_to_what_was_generated(req in request(), at in any::<Index>()) {
        let head = req.head(at);
        let (parsed, id) = SHARED.with(|(proxy, _)| parse::request(proxy, &head, Some(PEER), Instant::now()))
            .map_err(|r| TestCaseError::fail(format!("refused: {r:?}")))?;
        let Head { method, path, http10, keep_alive, body, expect_continue, upstream, hsts } = parsed;
        prop_assert_eq!(hsts, None, "no HSTS on plain HTTP");
        prop_assert_eq!(&method, &req.method);
        prop_assert_eq!(&path, &req.path);
        prop_assert_eq!(http10, req.http10);
        prop_assert_eq!(keep_alive, req.keep_alive());
        prop_assert_eq!(body, req.body());
        prop_assert_eq!(expect_continue, req.expect_continue);
        prop_assert_eq!(id.len(), 32, "a new request id");

        // The backend's copy: the same request line in HTTP/1.1, every end-to-end
        // field as it came and in order, then the forwarding fields.
        let (line, fields) = fields_of(&upstream);
        prop_assert_eq!(line, format!("{} {} HTTP/1.1", req.method, req.path));
        let named: Vec<String> = req.connection.iter().flatten().map(|t| t.to_ascii_lowercase()).collect();
        let kept = |name: &str| {
            let lower = name.to_ascii_lowercase();
            !rules::is_hop_by_hop(name)
                && !named.contains(&lower)
                && !lower.starts_with("x-forwarded-")
                && lower != rules::REQUEST_ID
        };
        let mut expected: Vec<(String, String)> = Vec::new();
        for line in String::from_utf8(head).expect("ASCII").split("\r\n").skip(1) {
            if let Some((n, v)) = line.split_once(": ") && kept(n) {
                expected.push((n.to_owned(), v.to_owned()));
            }
        }
        expected.push(("x-forwarded-for".into(), PEER.to_string()));
        expected.push(("x-forwarded-proto".into(), "http".into()));
        expected.push(("x-request-id".into(), id));
        prop_assert_eq!(fields, expected);
    }

    #[test]
    fn a_well_formed_request_reaches_the_backend_stage(req in request(), at in any::<Index>()) {
        // 503: it passed every check and found no web server (there is none).
        prop_assert_eq!(exchange(&req.head(at)), Some(503));
    }

    #[test]
    fn smuggling_shapes_are_always_refused(req in request(), how in smuggle(), at in any::<Index>()) {
        let head = smuggled(req, &how, at);
        // On a connection: refused 400, never passed on (which would be a 503 here).
        prop_assert_eq!(exchange(&head), Some(400), "{:?}: {:?}", how, String::from_utf8_lossy(&head));
    }

    #[test]
    fn declared_framing_accepts_only_one_plain_length_or_chunked_alone(
        fields in prop::collection::vec(
            (
                prop_oneof![
                    Just(b"Content-Length".to_vec()),
                    Just(b"transfer-encoding".to_vec()),
                    Just(b"TRANSFER-ENCODING".to_vec()),
                    Just(b"content-length".to_vec()),
                    prop::collection::vec(any::<u8>(), 0..20),
                ],
                prop_oneof![
                    Just(b"chunked".to_vec()),
                    Just(b"0".to_vec()),
                    "[0-9]{1,25}".prop_map(String::into_bytes),
                    prop::collection::vec(any::<u8>(), 0..12),
                ],
            ),
            0..6,
        ),
    ) {
        let declared = rules::declared_framing(fields.iter().map(|(n, v)| (&n[..], &v[..])));
        let is = |name: &str| fields.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).collect::<Vec<_>>();
        let (lengths, codings) = (is("content-length"), is("transfer-encoding"));
        match declared {
            Ok(Declared::Nothing) => prop_assert!(lengths.is_empty() && codings.is_empty()),
            Ok(Declared::Length(v)) => {
                prop_assert!(lengths.len() == 1 && codings.is_empty());
                prop_assert!(!v.is_empty() && v.iter().all(u8::is_ascii_digit));
                prop_assert_eq!(v, &lengths[0].1[..]);
            }
            Ok(Declared::Chunked) => {
                prop_assert!(lengths.is_empty() && codings.len() == 1);
                prop_assert!(codings[0].1.eq_ignore_ascii_case(b"chunked"));
            }
            Err(why) => {
                prop_assert!(!why.is_empty());
                let one_length = lengths.len() == 1
                    && codings.is_empty()
                    && !lengths[0].1.is_empty()
                    && lengths[0].1.iter().all(u8::is_ascii_digit);
                let one_chunked =
                    lengths.is_empty() && codings.len() == 1 && codings[0].1.eq_ignore_ascii_case(b"chunked");
                let nothing = lengths.is_empty() && codings.is_empty();
                prop_assert!(!(one_length || one_chunked || nothing));
            }
        }
    }

    #[test]
    fn any_backend_answer_head_is_judged_without_panic(
        req in request(),
        at in any::<Index>(),
        answer in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            (
                "HTTP/1\\.[01] [0-9]{3} [A-Za-z ]{0,10}",
                prop::collection::vec(
                    prop_oneof![
                        (field_name(), field_value()).prop_map(|(n, v)| format!("{n}: {v}")),
                        (
                            prop::sample::select(vec!["Content-Length", "transfer-encoding", "Connection"]),
                            "[ -~]{0,12}",
                        )
                            .prop_map(|(n, v)| format!("{n}: {v}")),
                        "[ -~]{0,20}",
                    ],
                    0..8,
                ),
            )
                .prop_map(|(line, fields)| format!("{line}\r\n{}\r\n\r\n", fields.join("\r\n")).into_bytes()),
        ],
        may_keep in any::<bool>(),
    ) {
        let head = req.head(at);
        let (parsed, id) = SHARED.with(|(proxy, _)| parse::request(proxy, &head, Some(PEER), Instant::now()))
            .map_err(|r: Refusal| TestCaseError::fail(format!("refused: {r:?}")))?;
        if let Ok(Some((status, n))) = parse::answer_status(&answer) {
            prop_assert!(n <= answer.len());
            let mut out = Vec::new();
            if let Ok(shape) = parse::answer(&answer[..n], status, &parsed, &id, may_keep, &mut out) {
                // The client's copy is one complete head, with the request's id.
                let mut headers = [httparse::EMPTY_HEADER; parse::MAX_HEADERS + 4];
                let mut resp = httparse::Response::new(&mut headers);
                prop_assert!(matches!(resp.parse(&out), Ok(httparse::Status::Complete(k)) if k == out.len()));
                let ids: Vec<_> = resp.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(rules::REQUEST_ID)).collect();
                prop_assert!(ids.len() == 1 && ids[0].value == id.as_bytes());
                prop_assert!(may_keep || !shape.keep_client);
                prop_assert!(!(shape.rechunk && shape.dechunk));
            }
        }
    }

    #[test]
    fn a_chunked_body_decodes_to_its_data_however_it_is_split(
        body in body(),
        tail in prop::collection::vec(any::<u8>(), 0..20),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let encoded = body.encoded();
        let mut bytes = encoded.clone();
        bytes.extend_from_slice(&tail);
        let whole = decode_in_pieces(&bytes, &[]);
        prop_assert_eq!(&whole, &Ok((encoded.len(), body.data(), Chunked::Done)));
        prop_assert_eq!(decode_in_pieces(&bytes, &cuts), whole);
    }

    #[test]
    fn any_bytes_decode_the_same_however_they_are_split(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            // Mostly chunked, with a few bytes changed: the decoder's error paths.
            (body(), prop::collection::vec((any::<Index>(), any::<u8>()), 1..4)).prop_map(|(b, flips)| {
                let mut bytes = b.encoded();
                for (i, v) in flips {
                    let k = i.index(bytes.len());
                    bytes[k] = v;
                }
                bytes
            }),
        ],
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let whole = decode_in_pieces(&bytes, &[]);
        let pieces = decode_in_pieces(&bytes, &cuts);
        // The same verdict; the same message when both fail.
        prop_assert_eq!(pieces, whole);
    }
}

/// Found by `any_backend_answer_head_is_judged_without_panic`: a backend's status
/// below 100 (`000`, `099`: three digits, which httparse accepts) was copied to the
/// client as `HTTP/1.1 0`, a status line no client can read. It is a bad answer
/// (502), like any other malformed one.
#[test]
fn a_backend_status_below_100_is_a_bad_answer() {
    let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let (head, id) = SHARED.with(|(proxy, _)| parse::request(proxy, req, None, Instant::now())).unwrap();
    for answer in [&b"HTTP/1.0 000 \r\n\r\n"[..], b"HTTP/1.1 099 Odd\r\ncontent-length: 0\r\n\r\n"] {
        let (status, n) = parse::answer_status(answer).unwrap().unwrap();
        assert!(parse::answer(&answer[..n], status, &head, &id, true, &mut Vec::new()).is_err());
    }
    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
    assert!(parse::answer(ok, 200, &head, &id, true, &mut Vec::new()).is_ok());
}
