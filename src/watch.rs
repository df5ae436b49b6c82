//! Being told when files change or when the operator sends `SIGHUP`: the triggers of every
//! reload (rules files today, TLS certificates and keys tomorrow).
//!
//! [`FileWatch`] watches the *parent directories* of its files, not the files: editors and
//! configuration tools replace a file by writing a temporary one and renaming it over the
//! original, which a watch on the old inode never sees, and Kubernetes swaps a ConfigMap by
//! re-pointing its `..data` symlink. Events are filtered by name and debounced, so one save (often
//! several writes, a rename and a chmod) is one notification.
//!
//! Nothing here reads or judges a file: the subscriber reloads, and decides whether anything
//! changed.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// How long a burst of events must stay quiet before subscribers are told.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(100);

/// Kubernetes mounts ConfigMaps and Secrets as symlinks into `..data`, which it re-points
/// atomically: a change shows up only as events on that name.
const KUBERNETES_DATA: &str = "..data";

/// Why a watch could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch {}: {source}", dir.display())]
    Watch { dir: PathBuf, source: notify::Error },
    #[error("cannot set up the file watcher: {0}")]
    Init(notify::Error),
}

/// Debounced change notifications for a set of files; dropping it stops the watch.
pub struct FileWatch {
    changes: mpsc::Receiver<()>,
    // Owned so the OS watch lives exactly as long as this value.
    _watcher: RecommendedWatcher,
}

impl FileWatch {
    /// Starts watching `paths` (which need not exist yet: their directories must). Must be
    /// called inside a tokio runtime.
    pub fn spawn(paths: &[PathBuf], debounce: Duration) -> Result<FileWatch, WatchError> {
        // Directory -> names of interest in it. Relative paths are taken from the working
        // directory, as everything else in the configuration is.
        let mut wanted: HashMap<PathBuf, HashSet<OsString>> = HashMap::new();
        for path in paths {
            let absolute = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            let dir = absolute
                .parent()
                .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
            let names = wanted.entry(dir).or_default();
            if let Some(name) = absolute.file_name() {
                names.insert(name.to_os_string());
            }
            names.insert(OsString::from(KUBERNETES_DATA));
        }

        let (raw_tx, raw_rx) = mpsc::unbounded_channel::<()>();
        let filter = wanted.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let Ok(event) = event else { return };
                if event.kind.is_access() {
                    return;
                }
                let relevant = event.paths.iter().any(|p| {
                    let (Some(dir), Some(name)) = (p.parent(), p.file_name()) else {
                        return false;
                    };
                    filter.get(dir).is_some_and(|names| names.contains(name))
                });
                if relevant {
                    let _ = raw_tx.send(());
                }
            })
            .map_err(WatchError::Init)?;
        for dir in wanted.keys() {
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|source| WatchError::Watch {
                    dir: dir.clone(),
                    source,
                })?;
        }

        // Capacity 1: a change not yet consumed already covers any later one.
        let (tx, changes) = mpsc::channel(1);
        tokio::spawn(debounce_events(raw_rx, tx, debounce));
        Ok(FileWatch {
            changes,
            _watcher: watcher,
        })
    }

    /// Waits for the next (debounced) change.
    pub async fn changed(&mut self) {
        if self.changes.recv().await.is_none() {
            // The watcher thread is gone: never fire again rather than spin.
            std::future::pending::<()>().await;
        }
    }
}

async fn debounce_events(
    mut raw: mpsc::UnboundedReceiver<()>,
    out: mpsc::Sender<()>,
    quiet: Duration,
) {
    while raw.recv().await.is_some() {
        // Wait until the burst is over: every event restarts the quiet period.
        loop {
            match tokio::time::timeout(quiet, raw.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        match out.try_send(()) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(())) => {}
            Err(mpsc::error::TrySendError::Closed(())) => return,
        }
    }
}

/// `SIGHUP`, the operator's "reload now". Every subscriber is told of every signal; while any
/// subscription exists the signal no longer terminates the process.
pub struct Hangup {
    #[cfg(unix)]
    signal: tokio::signal::unix::Signal,
}

impl Hangup {
    /// Subscribes (inside a tokio runtime).
    pub fn subscribe() -> io::Result<Hangup> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Hangup {
                signal: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Hangup {})
        }
    }

    /// Waits for the next `SIGHUP` (forever where there are no signals).
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        {
            if self.signal.recv().await.is_some() {
                return;
            }
        }
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "corsgate-watch-{}-{name}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    async fn fires(watch: &mut FileWatch) -> bool {
        tokio::time::timeout(Duration::from_secs(5), watch.changed())
            .await
            .is_ok()
    }

    async fn stays_quiet(watch: &mut FileWatch) -> bool {
        tokio::time::timeout(Duration::from_millis(300), watch.changed())
            .await
            .is_err()
    }

    #[tokio::test]
    async fn a_rename_over_the_file_is_a_change_and_a_burst_is_one() {
        let dir = temp_dir("rename");
        let file = dir.join("cors.xml");
        std::fs::write(&file, "a").expect("write");
        let mut watch = FileWatch::spawn(std::slice::from_ref(&file), Duration::from_millis(50))
            .expect("watch");

        // An editor's save: write a temporary file, then rename it over the original.
        let tmp = dir.join(".cors.xml.swp");
        std::fs::write(&tmp, "b").expect("write temp");
        std::fs::rename(&tmp, &file).expect("rename");
        assert!(fires(&mut watch).await, "rename over the file");
        assert!(stays_quiet(&mut watch).await, "one save, one notification");

        std::fs::write(&file, "c").expect("write in place");
        assert!(fires(&mut watch).await, "write in place");
    }

    #[tokio::test]
    async fn other_files_in_the_directory_are_ignored() {
        let dir = temp_dir("others");
        let file = dir.join("cors.xml");
        std::fs::write(&file, "a").expect("write");
        let mut watch = FileWatch::spawn(&[file], Duration::from_millis(50)).expect("watch");
        std::fs::write(dir.join("unrelated.txt"), "x").expect("write other");
        assert!(stays_quiet(&mut watch).await);
    }

    #[tokio::test]
    async fn a_missing_directory_is_an_error_naming_it() {
        let missing = std::env::temp_dir().join("corsgate-no-such-dir-xyz/cors.xml");
        let Err(err) = FileWatch::spawn(&[missing], DEFAULT_DEBOUNCE) else {
            panic!("watching a missing directory succeeded");
        };
        assert!(
            err.to_string().contains("corsgate-no-such-dir-xyz"),
            "{err}"
        );
    }
}
