//! The slowloris guard: a request's header must arrive within a deadline.
//!
//! Pingora times out each *read* of a request header (and the wait for a kept-alive
//! connection's next request), not the header as a whole, so a client trickling a
//! byte every few seconds holds a connection forever. [`Guarded`] wraps every
//! accepted connection: from the first byte of a request until the blank line that
//! ends its header, reads must finish before `header_timeout`, or the read fails
//! and pingora closes the connection. Between requests the idle keep-alive timeout
//! (pingora's) applies. HTTP/2 connections (prior knowledge) are not guarded this
//! way: their framing has no header phase to time.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType,
};
use pingora_core::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// Where a connection is in the request/response cycle, as seen from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request's first byte (the keep-alive timeout's business).
    Idle,
    /// Reading a header: the deadline runs. The value counts the `\r\n\r\n` bytes
    /// matched so far (0–3).
    Header(u8),
    /// The header is complete: the body and the response follow.
    Body,
    /// HTTP/2: not guarded.
    Off,
}

/// A connection whose request headers must arrive within a deadline.
#[derive(Debug)]
pub struct GuardedStream {
    /// The connection.
    inner: Stream,
    /// Its phase.
    phase: Phase,
    /// The header's deadline while in [`Phase::Header`].
    deadline: Option<Pin<Box<Sleep>>>,
    /// How long a header may take.
    header_timeout: Duration,
    /// Whether any byte was read yet (the HTTP/2 preface check looks once).
    started: bool,
}

impl GuardedStream {
    /// Wrap `inner`.
    pub fn new(inner: Stream, header_timeout: Duration) -> GuardedStream {
        GuardedStream { inner, phase: Phase::Idle, deadline: None, header_timeout, started: false }
    }

    /// Advance the phase over bytes just read.
    fn scan(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if !self.started {
            self.started = true;
            let n = bytes.len().min(H2_PREFACE.len());
            if bytes[..n] == H2_PREFACE[..n] {
                self.phase = Phase::Off;
                return;
            }
        }
        for &b in bytes {
            self.phase = match self.phase {
                Phase::Off => return,
                Phase::Body => return,
                Phase::Idle => {
                    self.deadline = Some(Box::pin(tokio::time::sleep(self.header_timeout)));
                    Phase::Header(if b == b'\r' { 1 } else { 0 })
                }
                Phase::Header(m) => {
                    let expected = b"\r\n\r\n"[m as usize];
                    if b == expected {
                        if m == 3 {
                            self.deadline = None;
                            Phase::Body
                        } else {
                            Phase::Header(m + 1)
                        }
                    } else if b == b'\r' {
                        Phase::Header(1)
                    } else {
                        Phase::Header(0)
                    }
                }
            };
        }
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Some(deadline) = this.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request header not complete within the header timeout",
            )));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            this.scan(&buf.filled()[before..]);
        }
        result
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        // A response is going out: the next byte read starts the next request.
        if this.phase == Phase::Body {
            this.phase = Phase::Idle;
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.phase == Phase::Body {
            self.phase = Phase::Idle;
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedStream {}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for GuardedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// A pingora application whose connections are [`GuardedStream`]s.
pub struct Guarded<A> {
    /// The application (the HTTP proxy).
    pub inner: Arc<A>,
    /// How long a request header may take.
    pub header_timeout: Duration,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let guarded: Stream = Box::new(GuardedStream::new(stream, self.header_timeout));
        self.inner.process_new(guarded, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_follow_the_bytes() {
        let mut g =
            GuardedStream::new(Box::new(std::io::Cursor::new(Vec::<u8>::new())), Duration::from_secs(1));
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let _enter = rt.enter();
        g.scan(b"GET / HTTP/1.1\r\nHost: x\r");
        assert_eq!(g.phase, Phase::Header(1));
        assert!(g.deadline.is_some());
        g.scan(b"\n\r\nbody");
        assert_eq!(g.phase, Phase::Body);
        assert!(g.deadline.is_none());
        let mut h2 =
            GuardedStream::new(Box::new(std::io::Cursor::new(Vec::<u8>::new())), Duration::from_secs(1));
        h2.scan(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert_eq!(h2.phase, Phase::Off);
    }
}
