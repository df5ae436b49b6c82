//! Being told when files change or when the operator sends `SIGHUP`: the triggers of every
//! reload (rules files, TLS certificates and keys), and the [`Supervisor`] that holds the tasks
//! waiting for them, so that stopping ends every one.
//!
//! [`FileWatch`] watches the *parent directories* of its files, not the files: editors and
//! configuration tools replace a file by writing a temporary one and renaming it over the
//! original, which a watch on the old inode never sees, and Kubernetes swaps a ConfigMap by
//! re-pointing its `..data` symlink. Events are filtered by name and debounced, so one save (often
//! several writes, a rename and a chmod) is one notification.
//!
//! Nothing here reads or judges a file: the subscriber reloads, and decides whether anything
//! changed.
//!
//! `SIGHUP` has one subscriber, the supervisor's, which passes every signal on to each
//! [`Hangup`] through a broadcast channel.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard, PoisonError};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinSet;

/// How long a burst of events must stay quiet before subscribers are told.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(100);

/// Kubernetes mounts ConfigMaps and Secrets as symlinks into `..data`, which it re-points
/// atomically: a change shows up only as events on that name.
const KUBERNETES_DATA: &str = "..data";

/// Why a watch could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WatchError {
    #[error("cannot watch {}: {source}", dir.display())]
    Watch { dir: PathBuf, source: notify::Error },
    #[error("cannot set up the file watcher: {0}")]
    Init(notify::Error),
}

/// Debounced change notifications for a set of files; dropping it stops the watch.
pub(crate) struct FileWatch {
    changes: mpsc::Receiver<()>,
    // Owned so the OS watch lives exactly as long as this value.
    _watcher: RecommendedWatcher,
}

impl FileWatch {
    /// Starts watching `paths` (which need not exist yet: their directories must). Must be
    /// called inside a tokio runtime.
    pub fn spawn(
        paths: &[PathBuf],
        debounce: Duration,
        scope: &Scope,
    ) -> Result<FileWatch, WatchError> {
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
        // Ends when this value (its watcher) is dropped.
        scope.spawn(debounce_events(raw_rx, tx, debounce));
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

/// The background tasks a gateway starts (file watches, pollers, signal listeners), held in one
/// set so that stopping can cancel them and wait for every one to end, and the one subscription
/// to `SIGHUP`, fanned out to every task that reloads on it.
pub(crate) struct Supervisor {
    tasks: Arc<StdMutex<JoinSet<()>>>,
    stop: watch::Sender<bool>,
    hangups: broadcast::Sender<()>,
}

impl Supervisor {
    /// Subscribes to `SIGHUP` (inside a tokio runtime): from now on the signal means "reload",
    /// never "terminate", even when nothing has anything to reload.
    pub fn new() -> Supervisor {
        let (stop, _) = watch::channel(false);
        // Each subscriber is behind by one signal at most before it reloads: a second signal
        // arriving meanwhile asks for the same reload.
        let (hangups, _) = broadcast::channel(1);
        let supervisor = Supervisor {
            tasks: Arc::default(),
            stop,
            hangups,
        };
        match listen_for_hangups(supervisor.hangups.clone(), supervisor.stop.subscribe()) {
            Ok(listening) => supervisor.scope().spawn(listening),
            Err(err) => tracing::warn!("cannot listen for SIGHUP: {err}"),
        }
        supervisor
    }

    /// The scope of everything that runs as long as the gateway does. The tasks are held by
    /// the supervisor and its scopes: once the last of them is dropped, any still running is
    /// aborted.
    pub(crate) fn scope(&self) -> Scope {
        Scope {
            tasks: Arc::clone(&self.tasks),
            stop: self.stop.subscribe(),
            hangups: self.hangups.clone(),
        }
    }

    /// Tells the tasks of the gateway's scope to stop (those of narrower scopes stop with their
    /// own senders).
    pub(crate) fn cancel(&self) {
        let _ = self.stop.send(true);
    }

    /// Tells every task to stop and returns once every task of every scope has ended (tasks
    /// started while waiting included).
    pub async fn shutdown(&self) {
        self.cancel();
        loop {
            let mut tasks = std::mem::take(&mut *lock(&self.tasks));
            if tasks.is_empty() {
                return;
            }
            while tasks.join_next().await.is_some() {}
        }
    }
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor::new()
    }
}

/// Where a group of background tasks runs: they are held by the [`Supervisor`], which waits for
/// them when the gateway stops, and they end once [`Scope::stop_signal`] flips (a reload ends a
/// route's scope when the route goes; the gateway's scope ends when it stops).
#[derive(Clone)]
pub struct Scope {
    tasks: Arc<StdMutex<JoinSet<()>>>,
    stop: watch::Receiver<bool>,
    hangups: broadcast::Sender<()>,
}

impl Scope {
    /// A scope of its own inside the same supervisor, ended by the sender (or by dropping it).
    pub fn child(&self) -> (watch::Sender<bool>, Scope) {
        let (stop, signal) = watch::channel(false);
        let scope = Scope {
            tasks: Arc::clone(&self.tasks),
            stop: signal,
            hangups: self.hangups.clone(),
        };
        (stop, scope)
    }

    /// Runs `task` in the supervisor's set. The task is not cut: it ends itself once
    /// [`Scope::stop_signal`] changes (or sooner).
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut tasks = lock(&self.tasks);
        // Ended tasks are reaped as new ones come, so a long run does not accumulate them.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }

    /// Changes (to `true`, or by its sender going away) when this scope's tasks must end.
    pub(crate) fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.clone()
    }

    /// Every `SIGHUP` from now on.
    pub fn hangup(&self) -> Hangup {
        Hangup {
            signals: self.hangups.subscribe(),
        }
    }
}

/// A poisoned lock only means a panic elsewhere while spawning: the set is still a set.
fn lock(tasks: &StdMutex<JoinSet<()>>) -> MutexGuard<'_, JoinSet<()>> {
    tasks.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The one subscription to `SIGHUP`, passing each signal on to every [`Hangup`].
fn listen_for_hangups(
    hangups: broadcast::Sender<()>,
    mut stop: watch::Receiver<bool>,
) -> io::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    let mut signal = {
        use tokio::signal::unix::{SignalKind, signal};
        signal(SignalKind::hangup())?
    };
    Ok(async move {
        loop {
            #[cfg(unix)]
            let received = async {
                if signal.recv().await.is_none() {
                    std::future::pending::<()>().await;
                }
            };
            #[cfg(not(unix))]
            let received = std::future::pending::<()>();
            tokio::select! {
                () = received => {
                    let _ = hangups.send(());
                }
                _ = stop.changed() => return,
            }
        }
    })
}

/// `SIGHUP`, the operator's "reload now", as one subscriber of a [`Scope`] receives it.
pub struct Hangup {
    signals: broadcast::Receiver<()>,
}

impl Hangup {
    /// Waits for the next `SIGHUP` (forever once the supervisor is gone).
    pub async fn recv(&mut self) {
        loop {
            match self.signals.recv().await {
                // Lagged: signals were missed while reloading, which this one reload covers.
                Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
            }
        }
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
        let supervisor = Supervisor::new();
        let mut watch = FileWatch::spawn(
            std::slice::from_ref(&file),
            Duration::from_millis(50),
            &supervisor.scope(),
        )
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
        let supervisor = Supervisor::new();
        let mut watch = FileWatch::spawn(&[file], Duration::from_millis(50), &supervisor.scope())
            .expect("watch");
        std::fs::write(dir.join("unrelated.txt"), "x").expect("write other");
        assert!(stays_quiet(&mut watch).await);
    }

    #[tokio::test]
    async fn a_missing_directory_is_an_error_naming_it() {
        let missing = std::env::temp_dir().join("corsgate-no-such-dir-xyz/cors.xml");
        let Err(err) = FileWatch::spawn(&[missing], DEFAULT_DEBOUNCE, &Supervisor::new().scope())
        else {
            panic!("watching a missing directory succeeded");
        };
        assert!(
            err.to_string().contains("corsgate-no-such-dir-xyz"),
            "{err}"
        );
    }
}
