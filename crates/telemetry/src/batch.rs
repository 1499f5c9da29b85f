//! Log lines batched off the threads that make them: a shared buffer that a
//! thread of its own writes out every few milliseconds in one `write`.
//!
//! `tracing-appender`'s non-blocking writer costs a channel send and a futex wake
//! per line and then one `write(2)` per line on its thread; under load the wakes and
//! the task switches they cause were the largest cost of a cached read (the web
//! tier's profile: about a third of its CPU in the scheduler). Here a line is
//! copied into a buffer under a short lock, and the writer wakes on a timer.
//!
//! Lines are kept at most [`BatchWriter::flush_every`] before they are written, so
//! a process killed with SIGKILL loses its last moments of log; a clean exit
//! flushes ([`BatchWriter::stop`]). If the output cannot keep up and the buffer
//! holds its maximum, new lines are dropped and counted, never waited for.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

/// The buffer and its writer's state.
#[derive(Debug, Default)]
struct Shared {
    /// Lines not written yet.
    buf: Mutex<Vec<u8>>,
    /// Set to stop the writer (after a last flush).
    stop: Mutex<bool>,
    /// Wakes the writer early: to stop.
    wake: Condvar,
    /// Lines dropped because the buffer was full, since the writer last said so.
    dropped: AtomicU64,
    /// Lines dropped in all.
    dropped_total: AtomicU64,
}

/// A batching line writer with a thread of its own; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct BatchWriter {
    /// The buffer and the writer's state.
    shared: Arc<Shared>,
    /// The writer thread, until stopped.
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Longest a line waits in the buffer.
    flush_every: Duration,
    /// Most bytes the buffer holds before lines are dropped.
    max_buffered: usize,
}

impl BatchWriter {
    /// Start a writer thread named `name` that writes the buffer to `out` every
    /// `flush_every`; lines past `max_buffered` bytes waiting are dropped.
    pub fn start(
        name: &str,
        flush_every: Duration,
        max_buffered: usize,
        mut out: impl Write + Send + 'static,
    ) -> std::io::Result<BatchWriter> {
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let writer = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            let mut batch = Vec::new();
            loop {
                let stopping = {
                    let stop = s.stop.lock().unwrap_or_else(PoisonError::into_inner);
                    if *stop {
                        true
                    } else {
                        *s.wake.wait_timeout(stop, flush_every).unwrap_or_else(PoisonError::into_inner).0
                    }
                };
                std::mem::swap(&mut batch, &mut *s.buf.lock().unwrap_or_else(PoisonError::into_inner));
                let dropped = s.dropped.swap(0, Ordering::Relaxed);
                if dropped > 0 {
                    let _ = writeln!(
                        batch,
                        "{{\"level\":\"WARN\",\"message\":\"{dropped} log lines dropped: the output is too slow\"}}"
                    );
                }
                if !batch.is_empty() {
                    // Nothing else to tell if the output is gone.
                    let _ = out.write_all(&batch).and_then(|()| out.flush());
                    batch.clear();
                }
                if stopping {
                    return;
                }
            }
        })?;
        Ok(BatchWriter { shared, writer: Mutex::new(Some(writer)), flush_every, max_buffered })
    }

    /// Buffer `line` (whole lines, newline included); `false` if it was dropped.
    pub fn push(&self, line: &[u8]) -> bool {
        let mut buf = self.shared.buf.lock().unwrap_or_else(PoisonError::into_inner);
        if buf.len() + line.len() > self.max_buffered {
            drop(buf);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            self.shared.dropped_total.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        buf.extend_from_slice(line);
        true
    }

    /// Longest a line waits in the buffer.
    pub fn flush_every(&self) -> Duration {
        self.flush_every
    }

    /// Lines dropped so far because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped_total.load(Ordering::Relaxed)
    }

    /// Write what is buffered and stop the writer (idempotent). Lines pushed
    /// afterwards are kept in the buffer and never written.
    pub fn stop(&self) {
        *self.shared.stop.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take() {
            let _ = t.join();
        }
    }
}

impl Drop for BatchWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A [`tracing_subscriber`] writer into a shared [`BatchWriter`]: the formatter
/// writes each event's line in one call, which lands in the buffer whole.
#[derive(Debug, Clone)]
pub struct BatchMakeWriter(pub Arc<BatchWriter>);

/// One event's line, on its way into the buffer.
#[derive(Debug)]
pub struct BatchLine<'a>(&'a BatchWriter);

impl Write for BatchLine<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchMakeWriter {
    type Writer = BatchLine<'a>;

    fn make_writer(&'a self) -> BatchLine<'a> {
        BatchLine(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output the test can read.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_written_in_order_and_stop_flushes_the_rest() {
        let sink = Sink::default();
        let w = BatchWriter::start("test-log", Duration::from_secs(3600), 1 << 20, sink.clone()).unwrap();
        for i in 0..1000 {
            assert!(w.push(format!("line {i}\n").as_bytes()));
        }
        // The timer is an hour: only stop can have written them.
        w.stop();
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert!(lines.iter().enumerate().all(|(i, l)| *l == format!("line {i}")));
        w.stop(); // idempotent
    }

    #[test]
    fn a_full_buffer_drops_lines_counts_them_and_says_so() {
        let sink = Sink::default();
        let w = BatchWriter::start("test-log", Duration::from_secs(3600), 10, sink.clone()).unwrap();
        assert!(w.push(b"12345678\n"));
        assert!(!w.push(b"overflow\n"), "past the maximum");
        assert_eq!(w.dropped(), 1);
        w.stop();
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().next(), Some("12345678"));
        assert!(text.contains("1 log lines dropped"), "{text}");
    }

    #[test]
    fn the_timer_writes_without_a_stop() {
        let sink = Sink::default();
        let w = BatchWriter::start("test-log", Duration::from_millis(5), 1 << 20, sink.clone()).unwrap();
        w.push(b"soon\n");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sink.0.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::yield_now();
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"soon\n");
    }
}
