//! HTTP/1's side of the shared pipeline ([`crate::pipeline::Exchange`]): one
//! request sent to a backend on a kept-alive connection of this thread (or a new
//! one), the answer's head read and judged, then the answer passed back to the
//! client; the backend's connection kept for the next request only after a
//! complete, well-framed HTTP/1.1 answer with nothing after it.

use std::time::Instant;

use bytes::Buf;
use http::Method;
use pingora_error::{Error, ErrorType};
use pingora_timeout::fast_timeout::fast_timeout;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::body;
use super::conn::{ClientIo, Conn, READ_CHUNK, io_error, write_error};
use super::parse::{self, AnswerShape, Framing, Head};
use crate::pipeline::{Exchange, Failure, Next, Proxy, Refusal, Request, Sent};
use crate::pool::Backend;
use crate::upstream;

/// Above this size, a backend's answer head is refused.
const MAX_ANSWER_HEAD: usize = 64 * 1024;

/// One HTTP/1 request on its way through the pipeline.
pub(super) struct Forward<'c, 'a, C> {
    /// The client's connection.
    pub conn: &'c mut Conn<'a, C>,
    /// The request's head.
    pub head: Head,
    /// Whether `100 Continue` went to the client already: a later attempt must not
    /// send it again.
    pub continued: bool,
}

/// A backend's answer whose head has arrived.
pub(super) struct Answer {
    /// The backend's connection, kept for another request if the answer allows.
    up: TcpStream,
    /// How the answer goes on to the client.
    shape: AnswerShape,
}

impl<C: ClientIo> Exchange for Forward<'_, '_, C> {
    type Answer = Answer;

    fn method(&self) -> &Method {
        &self.head.method
    }

    fn path(&self) -> &str {
        &self.head.path
    }

    fn has_body(&self) -> bool {
        self.head.body != Framing::Empty
    }

    async fn send(
        &mut self,
        proxy: &Proxy,
        req: &Request,
        backend: &Backend,
    ) -> Result<Sent<Answer>, Failure> {
        let timeouts = self.conn.timeouts;
        let picked_at = Instant::now();
        let (mut up, sent_at) = match backend.idle_h1.take(timeouts.backend_idle, picked_at) {
            Some((c, _)) => (c, picked_at),
            None => {
                let c = upstream::connect(backend.addr, proxy.config.upstream.source_ip, timeouts.connect)
                    .await
                    .map_err(Failure::not_sent)?;
                (c, Instant::now())
            }
        };
        let max_body = proxy.config.limits.max_body_bytes;
        let mut body_cut =
            body::send_request(self.conn, &self.head, &mut up, &mut self.continued, max_body).await?;
        let (status, head_len) = self.read_answer_head(&mut up, sent_at, &mut body_cut).await?;
        let conn = &mut *self.conn;
        let may_keep = !*conn.shutdown.borrow() && body_cut.is_none();
        let shape = parse::answer(
            &conn.ubuf[..head_len],
            status,
            &self.head,
            &req.request_id,
            may_keep,
            &mut conn.out,
        )
        .map_err(Failure::sent)?;
        conn.ubuf.advance(head_len);
        Ok(Sent { status, sent_at, answer: Answer { up, shape } })
    }

    async fn relay(
        &mut self,
        proxy: &Proxy,
        backend: &Backend,
        answer: Answer,
        answered_at: Instant,
    ) -> Result<Next, Failure> {
        let Answer { mut up, shape } = answer;
        body::relay_answer(self.conn, &mut up, &shape).await?;
        // Leftover bytes after the answer: the connection is not in a known state.
        if shape.backend_keeps && self.conn.ubuf.is_empty() && !backend.draining() {
            let fd = upstream::fd(&up);
            backend.idle_h1.put(up, fd, proxy.config.upstream.keepalive_pool_size, answered_at);
        }
        Ok(if shape.keep_client { Next::KeepGoing } else { Next::Close })
    }

    async fn respond(&mut self, req: &Request, refusal: Refusal) -> Result<(), Box<Error>> {
        write_error(self.conn, refusal, &req.request_id).await
    }
}

impl<C: ClientIo> Forward<'_, '_, C> {
    /// Read the answer's head into `conn.ubuf`, within the backend timeout from
    /// `sent_at`: its status and length. Informational answers are dropped
    /// (`Expect` was answered here, and no upgrade was asked for). If the backend
    /// stopped taking the body (`body_cut`) and then closed without answering, that
    /// is the error.
    async fn read_answer_head(
        &mut self,
        up: &mut TcpStream,
        sent_at: Instant,
        body_cut: &mut Option<Box<Error>>,
    ) -> Result<(u16, usize), Failure> {
        let read_timeout = self.conn.timeouts.backend;
        let ubuf = &mut self.conn.ubuf;
        ubuf.clear();
        let deadline = sent_at + read_timeout;
        loop {
            let parsed = parse::answer_status(ubuf).map_err(|e| {
                Failure::sent(Error::explain(ErrorType::InvalidHTTPHeader, format!("backend answer: {e}")))
            })?;
            match parsed {
                Some((code, n)) if (100..200).contains(&code) && code != 101 => {
                    // The final answer may have come with it: look before reading.
                    ubuf.advance(n);
                    continue;
                }
                Some((101, _)) => {
                    return Err(Failure::sent(Error::explain(
                        ErrorType::InvalidHTTPHeader,
                        "backend switched protocols",
                    )));
                }
                Some(found) => return Ok(found),
                None => {}
            }
            if ubuf.len() > MAX_ANSWER_HEAD {
                return Err(Failure::sent(Error::explain(
                    ErrorType::InvalidHTTPHeader,
                    "backend answer head too large",
                )));
            }
            ubuf.reserve(READ_CHUNK);
            let n = match fast_timeout(deadline.saturating_duration_since(Instant::now()), up.read_buf(ubuf))
                .await
            {
                Ok(r) => r.map_err(|e| {
                    Failure::sent(
                        body_cut
                            .take()
                            .unwrap_or_else(|| io_error(ErrorType::ReadError, "reading the answer", e)),
                    )
                })?,
                Err(_) => {
                    return Err(Failure::sent(Error::explain(
                        ErrorType::ReadTimedout,
                        format!("no answer within {read_timeout:?}"),
                    )));
                }
            };
            if n == 0 {
                return Err(Failure::sent(body_cut.take().unwrap_or_else(|| {
                    Error::explain(ErrorType::ConnectionClosed, "backend closed before answering")
                })));
            }
        }
    }
}
