//! HTTP/1.x, client to backend, forwarded without rebuilding either message.
//!
//! Nearly every request the load balancer sees is HTTP/1.1 with a small body or
//! none. For those, this module reads the client's request head, checks it, writes
//! the backend's copy (the same header lines minus the hop-by-hop ones, plus the
//! forwarding headers) straight from the received bytes, and passes the backend's
//! answer back the same way; bodies are copied as they come, their framing checked
//! on the way. Headers are never parsed into maps and serialized again, and one
//! task does it all on one connection to a backend taken from [`crate::upstream`].
//! Pingora's HTTP sessions (used for HTTP/2, see [`crate::h2`]) cost about 1.4×
//! HAProxy's CPU per request on this path; this costs less than HAProxy (ADR 0005).
//!
//! The request's way (checks, backend, attempts, retries, passive health, metrics,
//! access log) is the shared [`crate::pipeline`]; this module is HTTP/1's side of
//! it:
//! - `conn`: a client connection's loop (header deadline, keep-alive,
//!   pipelining, the stop) and writes to the client;
//! - `parse`: request and answer heads (bare LFs, `Connection` tokens, hop-by-hop
//!   lines, forwarding headers);
//! - `body`: bodies both ways ([`Chunked`], lengths, re-chunking, 100-continue);
//! - `forward`: one attempt (a backend connection, the request sent, the
//!   answer's head read and judged, the answer passed back, the connection kept).
//!
//! What the framing rules are, and what is refused (400 unless said otherwise):
//! - a head that does not parse, or has a line not ended by CRLF (refused as soon
//!   as the bare LF arrives), or is larger than `max_header_bytes` (431), or does
//!   not arrive within `header_timeout_ms` of its first byte (the connection is
//!   closed: slowloris);
//! - `Content-Length` with `Transfer-Encoding`, several or malformed lengths, a
//!   transfer coding other than `chunked` ([`crate::rules::declared_framing`]), chunked
//!   from an HTTP/1.0 client, an HTTP/1.1 request without exactly one `Host`;
//! - chunked bodies are checked byte by byte ([`Chunked`]) in both directions: a
//!   malformed one ends the exchange and the connection;
//! - `CONNECT` (405); `Upgrade` is removed like every hop-by-hop header, so no
//!   connection ever switches protocols.
//!
//! Answers: informational ones are dropped (`Expect: 100-continue` is answered
//! here); one ended by closing is re-chunked for an HTTP/1.1 client; a chunked one
//! reaches an HTTP/1.0 client as plain data ended by closing; a malformed or
//! ambiguous one is a 502. A backend connection is reused only after a complete,
//! well-framed HTTP/1.1 answer with nothing after it.

mod body;
mod conn;
mod forward;
#[cfg(test)]
mod fuzz;
mod parse;

pub use body::Chunked;
pub(crate) use conn::serve;
