//! Connections to the backends: opened with a deadline, kept alive between
//! requests in a small per-backend stack.
//!
//! Pingora's own connection pool hands every idle connection to a watcher task and
//! takes it back through that task on reuse: a task wake-up and a lock hand-off per
//! request, which the profile of the saturation benchmark showed (ADR 0005). Here an
//! idle connection is just pushed on its backend's stack; whether the backend closed
//! it meanwhile is checked when it is taken (one non-blocking peek at the socket:
//! nothing to read means alive; end of stream, an error or unexpected bytes mean it
//! is dropped). The peek asks the kernel, not the runtime's cached readiness, so a
//! close that arrived a moment ago is seen.
//!
//! Each proxy thread keeps its own stack per backend ([`set_thread_slot`]). A
//! connection is registered with the reactor of the thread that opened it: used
//! from another thread, every wake-up of its request would wait for the first
//! thread to poll its reactor and then cross to the second. So a connection is
//! only ever used by the thread that opened it.

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, recv};
use pingora_error::{Error, ErrorType, Result};
use tokio::net::{TcpSocket, TcpStream};

thread_local! {
    /// Which stack of every [`IdleConnections`] this thread uses.
    static SLOT: Cell<usize> = const { Cell::new(0) };
}

/// Make this thread use its own stacks of idle connections: proxy thread `slot`
/// of the load balancer. Threads that never call it share slot 0.
pub fn set_thread_slot(slot: usize) {
    SLOT.with(|s| s.set(slot));
}

/// A backend's idle kept-alive connections, one stack per proxy thread, the most
/// recently used on top. `C` is the connection as its user holds it: a
/// `TcpStream` for the HTTP/1 path, pingora's `Stream` for pingora's client
/// session.
#[derive(Debug)]
pub struct IdleConnections<C> {
    /// Per thread slot: when each was released, its socket (for the liveness
    /// peek; owned by the connection) and the connection.
    stacks: Mutex<Vec<Stack<C>>>,
}

/// One thread's idle connections to one backend.
type Stack<C> = Vec<(Instant, RawFd, C)>;

impl<C> Default for IdleConnections<C> {
    fn default() -> Self {
        IdleConnections { stacks: Mutex::new(Vec::new()) }
    }
}

impl<C> IdleConnections<C> {
    fn stacks(&self) -> std::sync::MutexGuard<'_, Vec<Stack<C>>> {
        // A panic while holding this lock leaves only stacks of sockets behind.
        self.stacks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A live connection this thread opened, idle for less than `max_idle`, if
    /// there is one, with its socket. Older ones are closed.
    pub fn take(&self, max_idle: Duration, now: Instant) -> Option<(C, RawFd)> {
        let slot = SLOT.with(Cell::get);
        loop {
            let (fd, conn) = {
                let mut stacks = self.stacks();
                let stack = stacks.get_mut(slot)?;
                let (at, fd, conn) = stack.pop()?;
                if now.saturating_duration_since(at) > max_idle {
                    // Everything below is older still.
                    stack.clear();
                    return None;
                }
                (fd, conn)
            };
            if alive(fd) {
                return Some((conn, fd));
            }
        }
    }

    /// Keep `conn` (whose socket is `fd`), opened by this thread, for this
    /// thread's next request to the backend, unless `cap` connections to it are
    /// idle already.
    pub fn put(&self, conn: C, fd: RawFd, cap: usize, now: Instant) {
        let slot = SLOT.with(Cell::get);
        let mut stacks = self.stacks();
        // The cap is per backend, over every thread's stack.
        if stacks.iter().map(Vec::len).sum::<usize>() >= cap {
            return;
        }
        if stacks.len() <= slot {
            stacks.resize_with(slot + 1, Vec::new);
        }
        stacks[slot].push((now, fd, conn));
    }

    /// Close every idle connection (the backend is drained or removed).
    pub fn clear(&self) {
        self.stacks().clear();
    }

    /// How many are idle, on all threads.
    pub fn len(&self) -> usize {
        self.stacks().iter().map(Vec::len).sum()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether an idle connection is still open: a kept-alive HTTP/1 connection has
/// nothing to read until the next request is sent, so a peek that would block means
/// it is alive.
fn alive(fd: RawFd) -> bool {
    let mut byte = [0u8; 1];
    matches!(recv(fd, &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT), Err(Errno::EAGAIN))
}

/// Open a connection to `addr` within `timeout`, from `source` when given (an
/// address of this node's own, so that backends can tell their load balancers from
/// anyone else by the peer address alone).
pub async fn connect(addr: SocketAddr, source: Option<IpAddr>, timeout: Duration) -> Result<TcpStream> {
    let tcp = match tokio::time::timeout(timeout, open(addr, source)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            let kind = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                ErrorType::ConnectRefused
            } else {
                ErrorType::ConnectError
            };
            return Error::e_because(kind, format!("connecting to {addr}"), e);
        }
        Err(_) => {
            return Error::e_explain(
                ErrorType::ConnectTimedout,
                format!("connecting to {addr}: {timeout:?}"),
            );
        }
    };
    // Requests and answers are small and complete when written: no Nagle delay.
    tcp.set_nodelay(true).map_err(|e| Error::because(ErrorType::ConnectError, "TCP_NODELAY", e))?;
    Ok(tcp)
}

/// `TcpStream::connect`, bound first to `source` (any port) when given.
async fn open(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let Some(source) = source else { return TcpStream::connect(addr).await };
    let socket = if source.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

/// The socket of a connection, for [`IdleConnections::put`].
pub fn fd(tcp: &TcpStream) -> RawFd {
    tcp.as_raw_fd()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ours, theirs) = tokio::join!(connect(addr, None, Duration::from_secs(5)), listener.accept());
        (ours.unwrap(), theirs.unwrap().0)
    }

    /// Wait until the kernel has something (bytes or the end) to read on `fd`.
    async fn until_readable(fd: RawFd) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(
            recv(fd, &mut [0u8; 1], MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT),
            Err(Errno::EAGAIN)
        ) {
            assert!(Instant::now() < deadline, "nothing arrived on the socket");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn a_closed_or_chatty_connection_is_not_reused() {
        let idle = IdleConnections::<TcpStream>::default();
        let now = Instant::now();
        let (open, _keep) = pair().await;
        let open_fd = fd(&open);
        idle.put(open, open_fd, 8, now);
        assert!(idle.take(Duration::from_secs(60), now).is_some(), "an open connection is reused");

        // The peek asks the kernel: a close or bytes it has delivered are seen
        // whatever the runtime has noticed (the test waits for the kernel only).
        let (closed, theirs) = pair().await;
        drop(theirs);
        let closed_fd = fd(&closed);
        until_readable(closed_fd).await;
        idle.put(closed, closed_fd, 8, now);
        assert!(idle.take(Duration::from_secs(60), now).is_none(), "a closed connection is dropped");
        assert!(idle.is_empty());

        let (chatty, mut theirs) = pair().await;
        theirs.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        let chatty_fd = fd(&chatty);
        until_readable(chatty_fd).await;
        idle.put(chatty, chatty_fd, 8, now);
        assert!(idle.take(Duration::from_secs(60), now).is_none(), "unexpected bytes: dropped");
    }

    #[tokio::test]
    async fn old_connections_are_closed_and_the_stack_is_capped() {
        let idle = IdleConnections::<TcpStream>::default();
        let then = Instant::now();
        let mut keep = Vec::new();
        for _ in 0..3 {
            let (s, theirs) = pair().await;
            keep.push(theirs);
            let s_fd = fd(&s);
            idle.put(s, s_fd, 2, then);
        }
        assert_eq!(idle.len(), 2, "capped");
        let later = then + Duration::from_secs(61);
        assert!(idle.take(Duration::from_secs(60), later).is_none());
        assert!(idle.is_empty(), "all too old, all closed");
    }

    #[test]
    fn a_thread_only_reuses_the_connections_it_opened_and_the_cap_counts_them_all() {
        let idle = IdleConnections::<std::net::TcpStream>::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let now = Instant::now();
        let mut theirs = Vec::new();
        std::thread::scope(|scope| {
            for slot in [0, 1, 2] {
                let ours = std::net::TcpStream::connect(addr).unwrap();
                theirs.push(listener.accept().unwrap().0);
                let idle = &idle;
                scope
                    .spawn(move || {
                        set_thread_slot(slot);
                        let ours_fd = ours.as_raw_fd();
                        // The cap is per backend: the third thread's is not kept.
                        idle.put(ours, ours_fd, 2, now);
                    })
                    .join()
                    .unwrap();
            }
        });
        assert_eq!(idle.len(), 2, "capped over all threads");
        std::thread::scope(|scope| {
            let idle = &idle;
            let taken = |slot| {
                scope
                    .spawn(move || {
                        set_thread_slot(slot);
                        idle.take(Duration::from_secs(60), now).map(|(_, fd)| fd)
                    })
                    .join()
                    .unwrap()
            };
            assert!(taken(2).is_none(), "thread 2 kept none: nothing of thread 0's or 1's");
            assert!(taken(1).is_some(), "thread 1 takes its own");
            assert!(taken(1).is_none(), "and only its own");
            assert!(taken(0).is_some());
        });
        assert!(idle.is_empty());
    }

    #[tokio::test]
    async fn connecting_nowhere_is_an_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let e = connect(addr, None, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(e.etype(), &ErrorType::ConnectRefused);
    }
}
