//! The access log's writer: request threads append finished lines to memory, a background
//! thread writes them out. A request never waits for a disk, a pipe or another request.
//!
//! Lines go into one of a few buffers ([`Shard`]), each thread always using the same one, so two
//! request threads rarely share a lock, and the lock is only ever held for one line's append (or
//! for the writer to swap the buffer for an empty one). The writer thread wakes every
//! [`FLUSH_EVERY`], or as soon as a buffer holds [`FLUSH_AT`] bytes, and writes each buffer with
//! one `write` (as nginx's `access_log ... buffer= flush=` does). A buffer that has reached
//! [`SHARD_CAP`] because the writer cannot keep up takes no more lines: they are dropped and
//! counted ([`dropped_lines`]), never waited for.
//!
//! Lines from different threads may reach the file slightly out of time order (each line carries
//! its own time). [`LogWriter::close`] writes everything appended before it and stops the
//! thread; it is what shutdown calls once the last request has finished. `SIGUSR1` (through
//! [`LogWriter::reopen`]) makes the writer open its file again by name, as `logrotate` expects.
//!
//! Nothing here formats: callers write complete lines into the buffer they are handed.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The longest a line waits in memory before the writer picks it up.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// A buffer this full wakes the writer at once.
pub(crate) const FLUSH_AT: usize = 64 * 1024;
/// A buffer this full takes no more lines until the writer has emptied it.
pub(crate) const SHARD_CAP: usize = 1024 * 1024;
/// A failing write (disk full, file removed from under us) is reported at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Lines dropped so far, over every access log of the process, because the writer could not
/// keep up (or could not write them): `corsgate_log_lines_dropped_total`.
pub fn dropped_lines() -> u64 {
    crate::metrics::log_lines_dropped().get()
}

/// Where lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Destination {
    Stderr,
    /// Opened for appending (created if missing), and again on [`LogWriter::reopen`].
    File(PathBuf),
}

/// Why the log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("log.access_file: cannot open {} for appending: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot start the access log's writer thread: {0}")]
    Thread(io::Error),
}

/// One buffer of lines, on a cache line of its own so that two threads appending to two
/// buffers do not slow each other down.
#[repr(align(128))]
struct Shard(Mutex<Vec<u8>>);

struct Shared {
    shards: Box<[Shard]>,
    reopen: AtomicBool,
    stop: AtomicBool,
}

impl Shared {
    fn shard(&self) -> MutexGuard<'_, Vec<u8>> {
        let i = thread_slot() % self.shards.len();
        // A thread that panicked mid-append leaves at worst a partial line: keep logging.
        self.shards[i].0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Each thread's buffer, chosen once: threads take consecutive slots, so a runtime's workers
/// spread over the buffers.
fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: Cell<Option<usize>> = const { Cell::new(None) };
    }
    SLOT.with(|slot| match slot.get() {
        Some(i) => i,
        None => {
            let i = NEXT.fetch_add(1, Ordering::Relaxed);
            slot.set(Some(i));
            i
        }
    })
}

/// The buffers and the thread that writes them.
pub(crate) struct LogWriter {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// To wake the writer (a clone of its handle, kept outside the mutex).
    waker: thread::Thread,
}

impl LogWriter {
    /// Opens `destination` now (so a bad path fails the start, not the first request) and
    /// starts the writer thread.
    pub fn start(destination: Destination) -> Result<LogWriter, OpenError> {
        let sink = Sink::open(destination)?;
        let buffers = thread::available_parallelism().map_or(1, |n| n.get()) * 2;
        let shared = Arc::new(Shared {
            shards: (0..buffers.clamp(2, 64))
                .map(|_| Shard(Mutex::new(Vec::new())))
                .collect(),
            reopen: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let for_thread = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("corsgate-access-log".into())
            .spawn(move || write_loop(&for_thread, sink))
            .map_err(OpenError::Thread)?;
        Ok(LogWriter {
            shared,
            waker: thread.thread().clone(),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Appends one line: `line` writes it (newline included) at the end of the buffer it is
    /// given, which it must only append to. Dropped and counted when the buffer is full.
    pub fn append(&self, line: impl FnOnce(&mut Vec<u8>)) {
        let mut buf = self.shared.shard();
        let before = buf.len();
        if before >= SHARD_CAP {
            drop(buf);
            crate::metrics::log_lines_dropped().inc();
            return;
        }
        line(&mut buf);
        let after = buf.len();
        drop(buf);
        if before < FLUSH_AT && after >= FLUSH_AT {
            self.waker.unpark();
        }
    }

    /// Opens the file again by its name on the writer's next turn (now): after `logrotate` has
    /// renamed it, new lines go to a new file at the configured path.
    pub(crate) fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Release);
        self.waker.unpark();
    }

    /// Writes every line appended so far and stops the writer; returns once they are written.
    /// Later calls do nothing.
    pub fn close(&self) {
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(thread) = thread else { return };
        self.shared.stop.store(true, Ordering::Release);
        self.waker.unpark();
        if thread.join().is_err() {
            tracing::error!("the access log's writer thread panicked: lines may be lost");
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.close();
    }
}

fn write_loop(shared: &Shared, mut sink: Sink) {
    let mut spare = Vec::new();
    let mut failures = Failures::default();
    loop {
        // Read before draining: whatever was appended before `close` set it is written below.
        let stopping = shared.stop.load(Ordering::Acquire);
        if shared.reopen.swap(false, Ordering::AcqRel) {
            sink.reopen();
        }
        for shard in shared.shards.iter() {
            {
                let mut buf = shard.0.lock().unwrap_or_else(|p| p.into_inner());
                if buf.is_empty() {
                    continue;
                }
                // The emptied buffer keeps its capacity for the next lines.
                std::mem::swap(&mut *buf, &mut spare);
            }
            if let Err(err) = sink.write(&spare) {
                let lost = spare.iter().filter(|&&b| b == b'\n').count() as u64;
                crate::metrics::log_lines_dropped().inc_by(lost);
                failures.report(&sink, &err, lost);
            }
            spare.clear();
        }
        if stopping {
            return;
        }
        thread::park_timeout(FLUSH_EVERY);
    }
}

/// Write failures, reported at most once per [`REPORT_EVERY`] with the lines lost meanwhile.
#[derive(Default)]
struct Failures {
    last: Option<Instant>,
    lost: u64,
}

impl Failures {
    fn report(&mut self, sink: &Sink, err: &io::Error, lost: u64) {
        self.lost += lost;
        if self.last.is_some_and(|at| at.elapsed() < REPORT_EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        tracing::warn!(
            "access log: cannot write to {}: {err}; {} line(s) lost",
            sink.name(),
            self.lost
        );
        self.lost = 0;
    }
}

enum Sink {
    Stderr,
    File { path: PathBuf, file: File },
}

impl Sink {
    fn open(destination: Destination) -> Result<Sink, OpenError> {
        match destination {
            Destination::Stderr => Ok(Sink::Stderr),
            Destination::File(path) => {
                let file = open_append(&path).map_err(|source| OpenError::Open {
                    path: path.clone(),
                    source,
                })?;
                Ok(Sink::File { path, file })
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            // The lock keeps the process's other log lines (`tracing` writes to stderr too)
            // from landing in the middle of ours.
            Sink::Stderr => io::stderr().lock().write_all(bytes),
            Sink::File { file, .. } => file.write_all(bytes),
        }
    }

    /// A file that cannot be opened again keeps the old one: lines still go somewhere.
    fn reopen(&mut self) {
        let Sink::File { path, file } = self else {
            return;
        };
        match open_append(path) {
            Ok(new) => {
                *file = new;
                tracing::info!("access log reopened: {}", path.display());
            }
            Err(err) => tracing::warn!(
                "access log: cannot reopen {}: {err}; still writing to the file opened before",
                path.display()
            ),
        }
    }

    fn name(&self) -> String {
        match self {
            Sink::Stderr => "stderr".into(),
            Sink::File { path, .. } => path.display().to_string(),
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).create(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("corsgate-log-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        path
    }

    #[test]
    fn close_writes_every_line_appended_from_every_thread() {
        let path = scratch("close.log");
        let writer = Arc::new(LogWriter::start(Destination::File(path.clone())).expect("opens"));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = Arc::clone(&writer);
                thread::spawn(move || {
                    for i in 0..1000 {
                        writer.append(|buf| {
                            buf.extend_from_slice(format!("{t} {i}\n").as_bytes());
                        });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("appender");
        }
        let dropped = dropped_lines();
        writer.close();
        let text = std::fs::read_to_string(&path).expect("log file");
        // Other tests in this process may drop lines too: only ours are counted here.
        let missing = 4000 - text.lines().count() as u64;
        assert!(
            missing <= dropped,
            "{missing} lines neither written nor counted"
        );
        assert_eq!(missing, 0, "a writer this far from its cap drops nothing");
        assert!(
            text.lines().all(|l| l.split(' ').count() == 2),
            "whole lines"
        );
    }

    #[test]
    fn a_full_buffer_drops_and_counts_instead_of_waiting() {
        let path = scratch("full.log");
        let writer = LogWriter::start(Destination::File(path)).expect("opens");
        let before = dropped_lines();
        // One append fills this thread's buffer past the cap; the next is refused at once,
        // unless the writer emptied the buffer in between.
        writer.append(|buf| buf.resize(buf.len() + SHARD_CAP, b'x'));
        writer.append(|buf| buf.extend_from_slice(b"late\n"));
        let counted = dropped_lines() - before;
        let shard_len = writer.shared.shard().len();
        assert!(
            counted >= 1 || shard_len < SHARD_CAP,
            "a full buffer took a line"
        );
        writer.close();
    }

    #[test]
    fn reopen_follows_the_name_after_a_rename() {
        let path = scratch("rotate.log");
        let rotated = scratch("rotate.log.1");
        let writer = LogWriter::start(Destination::File(path.clone())).expect("opens");
        writer.append(|buf| buf.extend_from_slice(b"before\n"));
        // Written before the rename: poll until the writer has flushed it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&path).unwrap_or_default() != "before\n" {
            assert!(Instant::now() < deadline, "first line never written");
            thread::sleep(Duration::from_millis(10));
        }
        std::fs::rename(&path, &rotated).expect("rename");
        writer.reopen();
        while !path.exists() {
            assert!(Instant::now() < deadline, "file never reopened");
            thread::sleep(Duration::from_millis(10));
        }
        writer.append(|buf| buf.extend_from_slice(b"after\n"));
        writer.close();
        assert_eq!(std::fs::read_to_string(&rotated).expect("old"), "before\n");
        assert_eq!(std::fs::read_to_string(&path).expect("new"), "after\n");
    }

    #[test]
    fn an_unopenable_file_fails_at_start_naming_the_key() {
        let err = LogWriter::start(Destination::File("/nonexistent-dir/x/access.log".into()))
            .err()
            .expect("cannot open");
        assert!(
            err.to_string().starts_with("log.access_file: cannot open"),
            "{err}"
        );
    }
}
