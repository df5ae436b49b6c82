//! Where a route's CORS rules come from, and loading them into a [`BucketCors`].
//!
//! Only a file for now; the bucket itself (`GET /<bucket>?cors`) and hot reload come later and
//! will produce the same value. Loading never touches a running route: the caller decides
//! whether to install what it got.

use std::path::PathBuf;

use crate::cors::{BucketCors, ConfigError, Policy};

/// A route's rules source (`rules = { file = "..." }` in the config, or nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RulesSource {
    /// The route has no CORS configuration: preflights get S3's 403 "CORS is not enabled",
    /// forwarded responses get no CORS headers.
    None,
    /// An S3 `CORSConfiguration` (XML or AWS CLI JSON) on disk, relative to the working
    /// directory.
    File(PathBuf),
}

/// Why rules could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render(path, error))]
    Invalid { path: PathBuf, error: ConfigError },
}

fn render(path: &std::path::Path, error: &ConfigError) -> String {
    let lines: Vec<String> = error
        .problems
        .iter()
        .map(|p| format!("{}:{p}", path.display()))
        .collect();
    lines.join("\n")
}

impl RulesSource {
    pub fn load(&self) -> Result<BucketCors, RulesError> {
        match self {
            RulesSource::None => Ok(BucketCors::NotConfigured),
            RulesSource::File(path) => {
                let bytes = std::fs::read(path).map_err(|source| RulesError::Read {
                    path: path.clone(),
                    source,
                })?;
                Policy::parse(&bytes)
                    .map(BucketCors::Enabled)
                    .map_err(|error| RulesError::Invalid {
                        path: path.clone(),
                        error,
                    })
            }
        }
    }
}
