//! Rules from a file: read at start (a bad file stops the start), then read again whenever the
//! file changes (see [`crate::watch`]), on `SIGHUP`, and on `POST /-/reload`. A file that cannot
//! be read or does not validate leaves the rules in force untouched; its error (with line, column
//! and S3 code) goes to the log and to `/-/rules`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{Mutex, watch};

use super::RulesError;
use super::live::{LiveRules, Loaded};
use crate::cors::{BucketCors, Policy};
use crate::watch::{DEFAULT_DEBOUNCE, FileWatch, Hangup};

/// Reads and compiles a rules file.
pub fn read(path: &Path) -> Result<Loaded, RulesError> {
    let bytes = std::fs::read(path).map_err(|source| RulesError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let (document, policy) =
        Policy::parse_document(&bytes).map_err(|error| RulesError::Invalid {
            path: path.to_path_buf(),
            error,
        })?;
    Ok(Loaded {
        cors: BucketCors::Enabled(policy),
        document: Some(document),
    })
}

/// A route's file rules.
pub struct FileRules {
    /// `route[N]`, for logs.
    label: String,
    path: PathBuf,
    live: LiveRules,
    /// One reload at a time, so two triggers cannot install their reads out of order.
    reloading: Mutex<()>,
}

impl FileRules {
    /// Reads the file once; failing here fails the start.
    pub fn load(label: String, path: PathBuf) -> Result<FileRules, RulesError> {
        let loaded = read(&path)?;
        Ok(FileRules {
            label,
            path,
            live: LiveRules::with(loaded),
            reloading: Mutex::new(()),
        })
    }

    pub fn live(&self) -> &LiveRules {
        &self.live
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file again; returns whether the rules changed. Logs the outcome.
    pub async fn reload(&self, why: &str) -> Result<bool, RulesError> {
        let _one_at_a_time = self.reloading.lock().await;
        let path = self.path.clone();
        let read = tokio::task::spawn_blocking(move || read(&path))
            .await
            .unwrap_or_else(|join| {
                Err(RulesError::Read {
                    path: self.path.clone(),
                    source: std::io::Error::other(join.to_string()),
                })
            });
        match read {
            Ok(loaded) => {
                let changed = self.live.offer(loaded);
                if changed {
                    tracing::info!(
                        "{}: rules reloaded from {} ({why}): generation {}",
                        self.label,
                        self.path.display(),
                        self.live.generation()
                    );
                } else {
                    tracing::debug!("{}: {} unchanged ({why})", self.label, self.path.display());
                }
                Ok(changed)
            }
            Err(error) => {
                tracing::error!(
                    "{}: rules not reloaded ({why}), generation {} keeps serving:\n{error}",
                    self.label,
                    self.live.generation()
                );
                self.live.failed(&error);
                Err(error)
            }
        }
    }

    /// Reloads on every change of the file and every `SIGHUP`, until `shutdown` flips.
    pub fn spawn(self: &Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let rules = Arc::clone(self);
        let mut files = match FileWatch::spawn(std::slice::from_ref(&rules.path), DEFAULT_DEBOUNCE)
        {
            Ok(files) => Some(files),
            Err(err) => {
                tracing::warn!(
                    "{}: {err}; changes are picked up on SIGHUP and POST /-/reload only",
                    rules.label
                );
                None
            }
        };
        let mut hangup = Hangup::subscribe()
            .map_err(|err| tracing::warn!("{}: cannot listen for SIGHUP: {err}", rules.label))
            .ok();
        tokio::spawn(async move {
            loop {
                let why = tokio::select! {
                    () = async { match files.as_mut() { Some(f) => f.changed().await, None => std::future::pending().await } } => "file changed",
                    () = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
                    _ = shutdown.changed() => return,
                };
                let _ = rules.reload(why).await;
            }
        });
    }
}
