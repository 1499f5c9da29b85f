//! One direction of a relayed connection: a delay line.
//!
//! The [`Inlet`] reads from one socket, stamps each chunk with the time it is due
//! ([`crate::schedule`]) and queues it; the [`Outlet`] writes the chunks to the other
//! socket in order, each once it is due and only while the link is not cut. A
//! half-close (end of stream) and a failed read travel through the line as the
//! chunk after the data before them, so they arrive after it — and, during a
//! cut, only after the heal.
//!
//! At most `window` bytes are in the line: the inlet takes permits for a read
//! before reading, and a chunk gives its permits back once written. A full window
//! stops the reading, so the sender's socket buffers fill and it blocks, as behind
//! a real link's full buffers.

use std::io;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::conditions::Conditions;
use crate::schedule::Schedule;

/// The most bytes read at once (a chunk); less if the window is smaller.
pub(crate) const MAX_CHUNK: usize = 64 * 1024;

/// What a delay line needs from its link.
#[derive(Debug, Clone)]
pub(crate) struct LineConfig {
    /// Bytes the line may hold.
    pub(crate) window: usize,
    /// The peer DC's conditions.
    pub(crate) conditions: watch::Receiver<Conditions>,
    /// The link's gauge of bytes held (every line of the link adds to it).
    pub(crate) held: Gauge,
    /// The link's counter of bytes delivered in this line's direction.
    pub(crate) delivered: Counter,
}

/// A delay line's two ends.
pub(crate) fn line(config: LineConfig) -> (Inlet, Outlet) {
    let (tx, rx) = mpsc::unbounded_channel();
    let inlet = Inlet {
        tx,
        window: Arc::new(Semaphore::new(config.window)),
        chunk: config.window.min(MAX_CHUNK),
        schedule: Schedule::default(),
        rng: SmallRng::from_os_rng(),
        conditions: config.conditions.clone(),
        held: config.held,
    };
    let outlet = Outlet { rx, conditions: config.conditions, delivered: config.delivered };
    (inlet, outlet)
}

/// What travels through the line.
#[derive(Debug)]
enum Item {
    /// Bytes, with the window permits (and the held count) they take until written.
    Data(Bytes, Held),
    /// The sending side shut down its writing (or the gateway is stopping): shut
    /// down the receiving side's writing once everything before is delivered.
    End,
    /// Reading the sending side failed: close the connection once everything
    /// before is delivered.
    Failed(io::ErrorKind),
}

/// A chunk in the line.
#[derive(Debug)]
struct Chunk {
    /// When it may be written.
    due: Instant,
    /// What it carries.
    item: Item,
}

/// Bytes held in the line: gives back their window permits and lowers the link's
/// held gauge when dropped — written, or thrown away with a closed connection.
#[derive(Debug)]
struct Held {
    /// The window permits, one per byte.
    _permit: OwnedSemaphorePermit,
    /// The link's gauge of bytes held.
    gauge: Gauge,
    /// How many bytes.
    bytes: i64,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gauge.dec_by(self.bytes);
    }
}

/// The reading end.
#[derive(Debug)]
pub(crate) struct Inlet {
    /// Where chunks go; unbounded in chunks, bounded in bytes by `window`.
    tx: mpsc::UnboundedSender<Chunk>,
    /// One permit per byte the line may still take.
    window: Arc<Semaphore>,
    /// Bytes read at most at once.
    chunk: usize,
    /// Due times, in order.
    schedule: Schedule,
    /// Draws jitter and losses.
    rng: SmallRng,
    /// The conditions each chunk is scheduled under.
    conditions: watch::Receiver<Conditions>,
    /// The link's gauge of bytes held.
    held: Gauge,
}

impl Inlet {
    /// Read `from` until its end, a read error, or `stop`, which ends the stream as
    /// if the sender had shut down its writing (what it already sent is delivered).
    /// Never fails itself: a read error is passed down the line.
    pub(crate) async fn run(
        mut self,
        mut from: impl AsyncRead + Unpin,
        stop: &CancellationToken,
    ) -> io::Result<()> {
        let mut buf = BytesMut::new();
        loop {
            // Wait for room for one byte, then take what else is free up to a
            // chunk: a read never waits for a whole chunk's room, so the line
            // fills to exactly its window before the reading stops.
            let mut permit = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                p = self.window.clone().acquire_owned() => p.expect("the window is never closed"),
            };
            let more = self.window.available_permits().min(self.chunk - 1);
            if more > 0 {
                let more = u32::try_from(more).expect("a chunk is at most MAX_CHUNK");
                if let Ok(p) = self.window.clone().try_acquire_many_owned(more) {
                    permit.merge(p);
                }
            }
            let room = permit.num_permits();
            buf.reserve(room);
            let mut room = (&mut buf).limit(room);
            let read = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                r = from.read_buf(&mut room) => r,
            };
            let n = match read {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    self.send(Item::Failed(e.kind()));
                    return Ok(());
                }
            };
            // Keep the permits of the bytes read; the rest go back at once.
            let permit = permit.split(n).expect("read at most the permits taken");
            self.held.inc_by(n as i64);
            let held = Held { _permit: permit, gauge: self.held.clone(), bytes: n as i64 };
            if !self.send(Item::Data(buf.split().freeze(), held)) {
                return Ok(());
            }
        }
        self.send(Item::End);
        Ok(())
    }

    /// Schedule `item` now; false if the outlet is gone (the connection is closing).
    fn send(&mut self, item: Item) -> bool {
        let conditions = *self.conditions.borrow();
        let due = self.schedule.due(Instant::now(), &conditions, &mut self.rng);
        self.tx.send(Chunk { due, item }).is_ok()
    }
}

/// The writing end.
#[derive(Debug)]
pub(crate) struct Outlet {
    /// Chunks in order.
    rx: mpsc::UnboundedReceiver<Chunk>,
    /// Whether the link is cut.
    conditions: watch::Receiver<Conditions>,
    /// The link's counter of bytes delivered in this direction.
    delivered: Counter,
}

impl Outlet {
    /// Write every chunk to `to` when due and not cut, until the end of the stream
    /// (then shut `to`'s writing down). Fails on a write error or when the other
    /// side's read failed: the caller closes both sides.
    pub(crate) async fn run(mut self, mut to: impl AsyncWrite + Unpin) -> io::Result<()> {
        while let Some(chunk) = self.rx.recv().await {
            // With no delay the chunk is already due: no timer.
            if chunk.due > Instant::now() {
                tokio::time::sleep_until(chunk.due).await;
            }
            // A cut holds the chunk until the heal; the sender outlives every
            // receiver (see `Peer`), so this only returns once healed.
            if self.conditions.borrow().cut {
                let _ = self.conditions.wait_for(|c| !c.cut).await;
            }
            match chunk.item {
                Item::Data(bytes, held) => {
                    to.write_all(&bytes).await?;
                    self.delivered.inc_by(bytes.len() as u64);
                    drop(held);
                }
                Item::End => {
                    // The receiving side may be gone already; nothing is left to tell it.
                    let _ = to.shutdown().await;
                    return Ok(());
                }
                Item::Failed(kind) => {
                    return Err(io::Error::new(kind, "the other side's connection failed"));
                }
            }
        }
        Ok(())
    }
}
