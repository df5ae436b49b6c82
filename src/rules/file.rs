//! Rules from a file: read at start (a bad file stops the start), then read again whenever the
//! file changes (see [`crate::watch`]), on `SIGHUP`, and on `POST /-/reload`. A file that cannot
//! be read or does not validate leaves the rules in force untouched; its error (with line, column
//! and S3 code) goes to the log and to `/-/rules`. Under `rules.deny_warnings`, so does a file
//! whose document has lint warnings.
//!
//! A rules file must be a regular file of at most 64 KiB (S3 refuses larger CORS documents). It
//! is opened without blocking and judged by the descriptor it opened, so a FIFO, a device or a
//! directory put in its place is an error, never a start or reload that hangs; the next reload
//! after it is fixed picks the file up as usual.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Mutex;

use super::RulesError;
use super::live::{self, LiveRules, Loaded};
use crate::cors::document::MAX_DOCUMENT_BYTES;
use crate::cors::{BucketCors, Policy};
use crate::metrics::RulesSource;
use crate::watch::{DEFAULT_DEBOUNCE, FileWatch, Scope};

/// Why a rules file's bytes could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot read: it is a {0}, not a regular file")]
    NotAFile(&'static str),
    #[error(
        "larger than {MAX_DOCUMENT_BYTES} bytes (64 KiB), the most S3 accepts for a CORS \
         configuration"
    )]
    TooLarge,
}

/// The bytes of a rules file (also what `corsgate check` and `explain` read).
pub(crate) fn read_bytes(path: &Path) -> Result<Vec<u8>, ReadError> {
    let file = open_nonblocking(path)?;
    // The descriptor's own metadata (fstat): the path may have been swapped since the open.
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(ReadError::NotAFile(describe(kind)));
    }
    // One byte past the limit is enough to know the file is too large.
    let mut bytes = Vec::new();
    file.take(MAX_DOCUMENT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(ReadError::TooLarge);
    }
    Ok(bytes)
}

/// Opening a FIFO for reading waits for a writer, unless non-blocking. On a regular file the
/// flag changes nothing, so it is left on for the read.
#[cfg(unix)]
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).open(path)
}

fn describe(kind: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "FIFO";
        }
        if kind.is_char_device() {
            return "character device";
        }
        if kind.is_block_device() {
            return "block device";
        }
        if kind.is_socket() {
            return "socket";
        }
    }
    if kind.is_dir() {
        "directory"
    } else {
        "special file"
    }
}

/// Reads and compiles a rules file.
pub fn read(path: &Path) -> Result<Loaded, RulesError> {
    let bytes = read_bytes(path).map_err(|source| RulesError::Read {
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

/// [`read`], refusing a document with lint warnings when `deny_warnings`.
fn read_checked(path: &Path, deny_warnings: bool) -> Result<Loaded, RulesError> {
    let loaded = read(path)?;
    if deny_warnings {
        loaded.deny_warnings(|| path.display().to_string())
    } else {
        Ok(loaded)
    }
}

/// A route's file rules.
pub struct FileRules {
    /// `route[N]`, for logs.
    label: String,
    path: PathBuf,
    /// Documents with lint warnings are refused.
    deny_warnings: bool,
    live: LiveRules,
    /// One reload at a time, so two triggers cannot install their reads out of order.
    reloading: Mutex<()>,
}

impl FileRules {
    /// Reads the file once; failing here fails the start.
    pub fn load(
        label: String,
        path: PathBuf,
        deny_warnings: bool,
    ) -> Result<FileRules, RulesError> {
        let loaded = read_checked(&path, deny_warnings)?;
        live::count_load(&label, RulesSource::File, &Ok(true));
        let live = LiveRules::named(format!("{label}: {}", path.display()));
        live.offer(loaded);
        Ok(FileRules {
            label,
            path,
            deny_warnings,
            live,
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
        let deny_warnings = self.deny_warnings;
        let read = tokio::task::spawn_blocking(move || read_checked(&path, deny_warnings))
            .await
            .unwrap_or_else(|join| {
                Err(RulesError::Read {
                    path: self.path.clone(),
                    source: ReadError::Io(std::io::Error::other(join.to_string())),
                })
            });
        let result = match read {
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
        };
        live::count_load(&self.label, RulesSource::File, &result);
        result
    }

    /// Reloads on every change of the file and every `SIGHUP`, until `scope` stops.
    pub fn spawn(self: &Arc<Self>, scope: &Scope) {
        let rules = Arc::clone(self);
        let mut shutdown = scope.stop_signal();
        let mut files =
            match FileWatch::spawn(std::slice::from_ref(&rules.path), DEFAULT_DEBOUNCE, scope) {
                Ok(files) => Some(files),
                Err(err) => {
                    tracing::warn!(
                        "{}: {err}; changes are picked up on SIGHUP and POST /-/reload only",
                        rules.label
                    );
                    None
                }
            };
        let mut hangup = scope.hangup();
        scope.spawn(async move {
            loop {
                let why = tokio::select! {
                    () = async { match files.as_mut() { Some(f) => f.changed().await, None => std::future::pending().await } } => "file changed",
                    () = hangup.recv() => "SIGHUP",
                    _ = shutdown.changed() => return,
                };
                let _ = rules.reload(why).await;
            }
        });
    }
}
