//! HTTP/1 bodies, both ways, copied as they come with their framing checked: the
//! chunked coding byte by byte ([`Chunked`]), lengths counted, sizes limited. A
//! request's body goes to the backend behind its head ([`send_request`]); an
//! answer's body goes to the client behind its head ([`relay_answer`]), re-chunked
//! or de-chunked when the client needs it.

use std::time::Duration;

use bytes::Buf;
use pingora_error::{Error, ErrorType};
use pingora_timeout::fast_timeout::fast_timeout;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::conn::{ClientIo, Conn, READ_CHUNK, io_error, write_client};
use super::parse::{AnswerShape, Framing, Head, push_hex};
use crate::pipeline::Failure;

/// A chunked body's framing, checked as the bytes pass (RFC 9112 §7.1): sizes
/// in hex, extensions skipped, each chunk followed by CRLF, trailer lines to the
/// final empty line. Anything else (a bare LF, a bad digit, an overlong size) is
/// an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Reading a size line: the size so far and how many digits.
    Size(u64, u8),
    /// In a size line's extension, until CR.
    Extension(u64),
    /// Seen the CR ending a size line.
    SizeLf(u64),
    /// Inside a chunk's data: bytes left.
    Data(u64),
    /// Expecting the CR after a chunk's data.
    DataCr,
    /// Expecting the LF after a chunk's data.
    DataLf,
    /// At the start of a trailer line (after the last chunk).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// Seen the CR ending a trailer line.
    TrailerLf,
    /// Seen the CR of the final empty line.
    EndLf,
    /// The body is complete.
    Done,
}

impl Chunked {
    /// Advance over `bytes`; returns how many belong to the body (all of them
    /// unless the body ends inside) and how many were chunk data.
    pub fn advance(&mut self, bytes: &[u8]) -> Result<(usize, u64), &'static str> {
        self.advance_with(bytes, |_| {})
    }

    /// [`Chunked::advance`], handing each run of chunk data to `on_data` (to
    /// take the body out of its chunks).
    pub fn advance_with(
        &mut self,
        bytes: &[u8],
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<(usize, u64), &'static str> {
        let mut data = 0u64;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            *self = match *self {
                Chunked::Done => return Ok((i, data)),
                Chunked::Data(left) => {
                    let take = left.min((bytes.len() - i) as u64);
                    on_data(&bytes[i..i + take as usize]);
                    i += take as usize;
                    data += take;
                    *self = if take == left { Chunked::DataCr } else { Chunked::Data(left - take) };
                    continue;
                }
                Chunked::Size(size, digits) => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if digits >= 15 {
                            return Err("chunk size too large");
                        }
                        let d = (b as char).to_digit(16).expect("hex digit") as u64;
                        Chunked::Size(size * 16 + d, digits + 1)
                    }
                    _ if digits == 0 => return Err("chunk size missing"),
                    b'\r' => Chunked::SizeLf(size),
                    b';' | b' ' | b'\t' => Chunked::Extension(size),
                    _ => return Err("bad chunk size"),
                },
                Chunked::Extension(size) => match b {
                    b'\r' => Chunked::SizeLf(size),
                    b'\n' => return Err("bare LF in chunk extension"),
                    _ => Chunked::Extension(size),
                },
                Chunked::SizeLf(size) => match (b, size) {
                    (b'\n', 0) => Chunked::TrailerStart,
                    (b'\n', n) => Chunked::Data(n),
                    _ => return Err("CR without LF after chunk size"),
                },
                Chunked::DataCr => match b {
                    b'\r' => Chunked::DataLf,
                    _ => return Err("chunk data longer than its size"),
                },
                Chunked::DataLf => match b {
                    b'\n' => Chunked::Size(0, 0),
                    _ => return Err("CR without LF after chunk data"),
                },
                Chunked::TrailerStart => match b {
                    b'\r' => Chunked::EndLf,
                    b'\n' => return Err("bare LF in trailer"),
                    _ => Chunked::Trailer,
                },
                Chunked::Trailer => match b {
                    b'\r' => Chunked::TrailerLf,
                    b'\n' => return Err("bare LF in trailer"),
                    _ => Chunked::Trailer,
                },
                Chunked::TrailerLf => match b {
                    b'\n' => Chunked::TrailerStart,
                    _ => return Err("CR without LF in trailer"),
                },
                Chunked::EndLf => match b {
                    b'\n' => {
                        *self = Chunked::Done;
                        return Ok((i + 1, data));
                    }
                    _ => return Err("CR without LF at the end of a chunked body"),
                },
            };
            i += 1;
        }
        Ok((i, data))
    }
}

/// Send `head`'s request to the backend on `up`: its head with as much of the
/// body as is already here, then the rest as the client sends it (after `100
/// Continue` if it waits for one, sent once per request: `continued`). If the
/// backend stops taking the body (it may have answered early, say 413), the rest
/// is still read from the client, and why the backend stopped is returned: its
/// answer is read all the same, and the client's connection ends after it. A body
/// badly framed or over `max_body` is refused.
pub(super) async fn send_request<C: ClientIo>(
    conn: &mut Conn<'_, C>,
    head: &Head,
    up: &mut TcpStream,
    continued: &mut bool,
    max_body: u64,
) -> Result<Option<Box<Error>>, Failure> {
    let Conn { client, inbuf, out, timeouts, .. } = conn;
    let (client_timeout, backend_timeout) = (timeouts.client, timeouts.backend);
    let client_err =
        |context: &'static str| move |e| Failure::Client(io_error(ErrorType::ReadError, context, e));
    let too_large = || Failure::refused(413, "body_too_large", "request body too large");

    // The request: its head, with as much of the body as is already here.
    out.clear();
    out.extend_from_slice(&head.upstream);
    let mut body_left: u64 = 0;
    let mut chunked = Chunked::Size(0, 0);
    let mut body_bytes: u64 = 0;
    match head.body {
        Framing::Empty | Framing::UntilClose => {}
        Framing::Length(n) => {
            let here = (inbuf.len() as u64).min(n) as usize;
            out.extend_from_slice(&inbuf[..here]);
            inbuf.advance(here);
            body_left = n - here as u64;
        }
        Framing::Chunked => {
            let (used, data) =
                chunked.advance(inbuf).map_err(|why| Failure::refused(400, "bad_request", why))?;
            body_bytes += data;
            out.extend_from_slice(&inbuf[..used]);
            inbuf.advance(used);
        }
    }
    let more_body = match head.body {
        Framing::Length(_) => body_left > 0,
        Framing::Chunked => chunked != Chunked::Done,
        _ => false,
    };
    if body_bytes > max_body {
        return Err(too_large());
    }
    write_backend(up, out, backend_timeout).await.map_err(Failure::sent)?;

    // The rest of the body, as the client sends it.
    let mut body_cut: Option<Box<Error>> = None;
    if more_body {
        if head.expect_continue && !*continued {
            *continued = true;
            write_client(client, b"HTTP/1.1 100 Continue\r\n\r\n", client_timeout, true)
                .await
                .map_err(Failure::Client)?;
        }
        while body_cut.is_none() {
            inbuf.reserve(READ_CHUNK);
            let n = match fast_timeout(client_timeout, client.read_buf(inbuf)).await {
                Ok(r) => r.map_err(client_err("reading the request body"))?,
                Err(_) => {
                    return Err(Failure::Client(Error::explain(ErrorType::ReadTimedout, "request body")));
                }
            };
            if n == 0 {
                return Err(Failure::Client(Error::explain(
                    ErrorType::ConnectionClosed,
                    "request body cut short",
                )));
            }
            let (take, done) = match head.body {
                Framing::Length(_) => {
                    let take = (inbuf.len() as u64).min(body_left) as usize;
                    body_left -= take as u64;
                    (take, body_left == 0)
                }
                _ => {
                    let (used, data) =
                        chunked.advance(inbuf).map_err(|why| Failure::refused(400, "bad_request", why))?;
                    body_bytes += data;
                    if body_bytes > max_body {
                        return Err(too_large());
                    }
                    (used, chunked == Chunked::Done)
                }
            };
            if let Err(e) = write_backend(up, &inbuf[..take], backend_timeout).await {
                body_cut = Some(e);
            }
            inbuf.advance(take);
            if done {
                break;
            }
        }
    }
    Ok(body_cut)
}

/// Pass an answer on to the client: the client's copy of its head (in
/// `conn.out`), then its body, shaped as `shape` says. What arrived with the head
/// (in `conn.ubuf`) goes out with it; a long or slow answer is passed on as it
/// comes. Once this starts, a failure on the backend's side has passed part of
/// the answer on.
pub(super) async fn relay_answer<C: ClientIo>(
    conn: &mut Conn<'_, C>,
    up: &mut TcpStream,
    shape: &AnswerShape,
) -> Result<(), Failure> {
    let Conn { client, ubuf, out, timeouts, .. } = conn;
    let (client_timeout, read_timeout) = (timeouts.client, timeouts.backend);
    let AnswerShape { framing, rechunk, dechunk, .. } = *shape;
    let mid =
        |e: std::io::Error| Failure::mid_answer(io_error(ErrorType::ReadError, "reading the answer body", e));
    let mut left: u64 = if let Framing::Length(n) = framing { n } else { 0 };
    let mut resp_chunks = Chunked::Size(0, 0);
    let mut ended_by_close = false;
    let mut first = true;
    loop {
        // Move what is in `ubuf` into `out`.
        let done = match framing {
            Framing::Empty => true,
            Framing::Length(_) => {
                let take = (ubuf.len() as u64).min(left) as usize;
                out.extend_from_slice(&ubuf[..take]);
                ubuf.advance(take);
                left -= take as u64;
                left == 0
            }
            Framing::Chunked => {
                let bad = |why| Failure::mid_answer(Error::explain(ErrorType::InvalidHTTPHeader, why));
                let (used, _) = if dechunk {
                    resp_chunks.advance_with(ubuf, |data| out.extend_from_slice(data)).map_err(bad)?
                } else {
                    let used = resp_chunks.advance(ubuf).map_err(bad)?;
                    out.extend_from_slice(&ubuf[..used.0]);
                    used
                };
                ubuf.advance(used);
                resp_chunks == Chunked::Done
            }
            Framing::UntilClose => {
                if !ubuf.is_empty() {
                    if rechunk {
                        push_hex(out, ubuf.len());
                        out.extend_from_slice(b"\r\n");
                        out.extend_from_slice(ubuf);
                        out.extend_from_slice(b"\r\n");
                    } else {
                        out.extend_from_slice(ubuf);
                    }
                    ubuf.clear();
                }
                if ended_by_close && rechunk {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                ended_by_close
            }
        };
        if !out.is_empty() || first {
            // A long or slow answer is passed on as it comes.
            write_client(client, out, client_timeout, !done).await.map_err(Failure::Client)?;
            out.clear();
        }
        first = false;
        if done {
            break;
        }
        ubuf.reserve(READ_CHUNK);
        let n = match fast_timeout(read_timeout, up.read_buf(ubuf)).await {
            Ok(r) => r.map_err(mid)?,
            Err(_) => {
                return Err(Failure::mid_answer(Error::explain(ErrorType::ReadTimedout, "answer body")));
            }
        };
        if n == 0 {
            if framing == Framing::UntilClose {
                ended_by_close = true;
            } else {
                return Err(Failure::mid_answer(Error::explain(
                    ErrorType::ConnectionClosed,
                    "answer body cut short",
                )));
            }
        }
    }
    write_client(client, &[], client_timeout, true).await.map_err(Failure::Client)
}

/// Write to a backend, within `timeout` (a backend that stops reading does not
/// hold the request forever).
pub(super) async fn write_backend(
    up: &mut TcpStream,
    bytes: &[u8],
    timeout: Duration,
) -> Result<(), Box<Error>> {
    match fast_timeout(timeout, up.write_all(bytes)).await {
        Ok(r) => r.map_err(|e| io_error(ErrorType::WriteError, "writing to the backend", e)),
        Err(_) => Err(Error::explain(ErrorType::WriteTimedout, "writing to the backend")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(body: &[u8]) -> Result<(usize, u64, Chunked), &'static str> {
        let mut c = Chunked::Size(0, 0);
        let (used, data) = c.advance(body)?;
        Ok((used, data, c))
    }

    #[test]
    fn chunked_bodies_end_where_they_end() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let (used, data, state) = run(body).unwrap();
        assert_eq!(state, Chunked::Done);
        assert_eq!(&body[used..], b"NEXT");
        assert_eq!(data, 11);
        // Byte by byte, the same.
        let mut c = Chunked::Size(0, 0);
        let mut total = 0;
        for b in body.iter().take(used) {
            total += c.advance(std::slice::from_ref(b)).unwrap().1;
        }
        assert_eq!((c, total), (Chunked::Done, 11));
        assert_eq!(run(b"0\r\n\r\n").unwrap().2, Chunked::Done);
        assert_eq!(run(b"A\r\n0123").unwrap().2, Chunked::Data(6));
    }

    #[test]
    fn chunk_data_can_be_taken_out() {
        let mut c = Chunked::Size(0, 0);
        let mut data = Vec::new();
        let body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        for piece in body.chunks(3) {
            c.advance_with(piece, |d| data.extend_from_slice(d)).unwrap();
        }
        assert_eq!((c, &data[..]), (Chunked::Done, &b"hello world"[..]));
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        for bad in [
            &b"\r\n"[..],
            b"5\nhello\r\n",
            b"g\r\n",
            b"5\r\nhello!\r\n",
            b"5\r\nhello\n",
            b"0\r\n\n",
            b"0\r\nX: y\n",
            b"ffffffffffffffff\r\n",
            b"5;ext\n",
        ] {
            assert!(run(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
