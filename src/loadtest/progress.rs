//! Live counters of a running load test, and the one-line progress display drawn from them on a
//! terminal.
//!
//! A `\r`-rewritten status line is all a fixed-duration run needs; a progress-bar crate would
//! bring a terminal library along for it. Nothing is drawn when stderr is not a terminal, so
//! scripts and `--json` consumers see clean output.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counters the workers bump per response; read by the display only.
#[derive(Debug, Default)]
pub struct Progress {
    pub responses: AtomicU64,
    pub wrong: AtomicU64,
    pub errors: AtomicU64,
}

impl Progress {
    pub fn response(&self, wrong: bool) {
        self.responses.fetch_add(1, Ordering::Relaxed);
        if wrong {
            self.wrong.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Adds a worker's batch of responses at once: one shared write per batch, not per response.
    pub fn add(&self, responses: u64, wrong: u64) {
        self.responses.fetch_add(responses, Ordering::Relaxed);
        if wrong > 0 {
            self.wrong.fetch_add(wrong, Ordering::Relaxed);
        }
    }

    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The status line after `elapsed` of `total`, with the rate since the previous line.
    pub fn line(&self, elapsed: Duration, total: Duration, rps: f64) -> String {
        let width = 24usize;
        let done = (elapsed.as_secs_f64() / total.as_secs_f64().max(1e-9)).clamp(0.0, 1.0);
        let filled = (done * width as f64).round() as usize;
        format!(
            "[{}{}] {:>5.1}s/{:.0}s {:>10} responses {:>9.0} req/s {} wrong {} errors",
            "#".repeat(filled),
            "-".repeat(width - filled),
            elapsed.as_secs_f64(),
            total.as_secs_f64(),
            self.responses.load(Ordering::Relaxed),
            rps,
            self.wrong.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }
}

/// Redraws the status line every 250 ms until the returned guard is dropped; does nothing when
/// stderr is not a terminal.
pub fn display(progress: std::sync::Arc<Progress>, total: Duration) -> Option<DisplayGuard> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let task = tokio::spawn(async move {
        let start = Instant::now();
        let mut last = (start, 0u64);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let now = Instant::now();
            let responses = progress.responses.load(Ordering::Relaxed);
            let rps = (responses - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-9);
            last = (now, responses);
            let line = progress.line(now - start, total, rps);
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{line}");
            let _ = err.flush();
        }
    });
    Some(DisplayGuard(task))
}

/// Stops the display and clears its line.
pub struct DisplayGuard(tokio::task::JoinHandle<()>);

impl Drop for DisplayGuard {
    fn drop(&mut self) {
        self.0.abort();
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K");
        let _ = err.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_counts_and_how_far_along() {
        let p = Progress::default();
        p.response(false);
        p.response(true);
        p.error();
        let line = p.line(Duration::from_secs(5), Duration::from_secs(10), 1234.0);
        assert!(line.starts_with("[############------------]"), "{line}");
        assert!(line.contains("2 responses"), "{line}");
        assert!(line.contains("1234 req/s 1 wrong 1 errors"), "{line}");
    }
}
