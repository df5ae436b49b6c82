//! Putting a draft in force: only a valid document, only over the generation the editor started
//! from, one apply at a time.
//!
//! - A rules file is replaced atomically: the new document is written to a temporary file beside
//!   it, flushed to disk, given the old file's permissions and renamed over it, so a reader (this
//!   process's file watch, another replica, an editor) sees the old file or the new one, never
//!   half of one. A symlinked rules file stays a symlink: the file it points to is replaced. A
//!   JSON file gets JSON, an XML file the editor's XML as written. Then the file is reloaded as
//!   any change is.
//! - A bucket's rules are stored with `PUT /<bucket>?cors` to the origin, as `s3cmd setcors`
//!   sends it: S3's XML, its `Content-MD5` (PutBucketCors requires one), signed with the route's
//!   credentials. Then the bucket's rules are fetched back, as after a write-through.
//!
//! Before comparing generations, the source is read again: a change made behind corsgate's back
//! since the last poll or watch event is a change too, and makes the apply stale.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use md5::{Digest as _, Md5};
use tokio::sync::Mutex;

use super::draft::{Draft, DraftError, rules_of};
use crate::cors::{ConfigError, Document, Policy};
use crate::rules::bucket::FETCH_TIMEOUT;
use crate::rules::{BucketFetcher, BucketRules, FileRules, LiveRules, RulesError};
use crate::s3::FetchError;
use crate::s3::error_body::S3ErrorBody;

const CONTENT_MD5: HeaderName = HeaderName::from_static("content-md5");
/// Room for an S3 error document.
const MAX_ANSWER: usize = 64 * 1024;
/// After S3 accepted a document, a read may still return the previous one for a moment (S3's
/// bucket configuration is eventually consistent): the rules are read back this many times, with
/// doubling pauses, before the apply reports them accepted but not yet in force.
const READ_BACK_ATTEMPTS: u32 = 4;
const FIRST_READ_BACK_PAUSE: Duration = Duration::from_millis(200);

/// One apply at a time in the process: two editors' applies cannot interleave their checks and
/// writes.
static APPLYING: Mutex<()> = Mutex::const_new(());

/// Where a draft goes.
pub enum Target {
    File(Arc<FileRules>),
    Bucket(Arc<BucketRules>),
}

impl Target {
    pub fn live(&self) -> &LiveRules {
        match self {
            Target::File(file) => file.live(),
            Target::Bucket(bucket) => bucket.live(),
        }
    }

    /// For logs and answers: `file config/cors.xml`, `bucket photos`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Target::File(file) => format!("file {}", file.path().display()),
            Target::Bucket(bucket) => format!("bucket {}", bucket.name()),
        }
    }

    async fn read_again(&self, why: &str) {
        // A failure is logged and shown by the source; the generation check decides.
        let _ = match self {
            Target::File(file) => file.reload(why).await,
            Target::Bucket(bucket) => bucket.refresh(why).await,
        };
    }
}

/// A draft put in force.
#[derive(Debug)]
pub struct Applied {
    /// Whether the rules in force changed (an apply of the rules in force changes nothing).
    pub changed: bool,
    pub generation: u64,
    /// Whether the rules in force are now the draft's. Only a bucket whose store has not yet
    /// returned the new document leaves this `false`; its next poll brings them.
    pub in_force: bool,
}

/// Why a draft was not put in force.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApplyError {
    #[error(transparent)]
    Draft(#[from] DraftError),
    #[error("the draft is not a valid CORS configuration; nothing was changed")]
    Invalid(ConfigError),
    #[error(
        "the rules changed since they were loaded: the draft was edited from generation \
         {edited}, generation {current} is in force; nothing was changed"
    )]
    Stale { edited: u64, current: u64 },
    #[error("cannot write {}: {source}; nothing was changed", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the new rules were written, but reading them back failed: {0}")]
    Reload(RulesError),
    #[error("{0}; nothing was changed")]
    Store(#[from] StoreError),
    #[error(
        "bucket {bucket} accepted the new rules, but fetching them back failed: {error}; the \
         previous rules keep serving until the next poll"
    )]
    Refresh { bucket: String, error: RulesError },
}

impl ApplyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApplyError::Draft(_) => StatusCode::BAD_REQUEST,
            ApplyError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApplyError::Stale { .. } => StatusCode::CONFLICT,
            ApplyError::Write { .. } | ApplyError::Reload(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApplyError::Store(StoreError::Unreachable(_)) => StatusCode::GATEWAY_TIMEOUT,
            ApplyError::Store(_) | ApplyError::Refresh { .. } => StatusCode::BAD_GATEWAY,
        }
    }
}

/// Why the origin did not store a bucket's rules.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("the origin refused the rules: {status} {code}: {message}")]
    Refused {
        status: StatusCode,
        code: String,
        message: String,
    },
    #[error("cannot reach the origin: {0}")]
    Unreachable(String),
    #[error("cannot build the request: {0}")]
    Request(FetchError),
}

/// Puts `draft` in force at `target`, if the rules there are still generation `edited`. Logs
/// the outcome with the admin client's address.
pub async fn apply(
    target: &Target,
    label: &str,
    draft: &Draft,
    edited: u64,
    client: Option<SocketAddr>,
) -> Result<Applied, ApplyError> {
    let client = client.map_or_else(|| "an unknown client".to_string(), |c| c.to_string());
    let what = target.describe();
    let outcome = apply_checked(target, draft, edited).await;
    match &outcome {
        Ok(applied) => tracing::info!(
            client = %client,
            "{label}: {client} applied rules to {what} from the admin panel: generation {edited} -> {}{}",
            applied.generation,
            if applied.in_force {
                ""
            } else {
                " (the bucket has not returned them yet)"
            }
        ),
        Err(error) => tracing::warn!(
            client = %client,
            "{label}: {client}'s apply to {what} from the admin panel failed: {error}"
        ),
    }
    outcome
}

async fn apply_checked(target: &Target, draft: &Draft, edited: u64) -> Result<Applied, ApplyError> {
    let bytes = draft.bytes()?;
    // The server judges again: a page cannot vouch for what it sends.
    let (document, _) = Policy::parse_document(&bytes).map_err(ApplyError::Invalid)?;
    let _one_at_a_time = APPLYING.lock().await;
    target.read_again("admin panel, before an apply").await;
    let current = target.live().generation();
    if current != edited {
        return Err(ApplyError::Stale { edited, current });
    }
    match target {
        Target::File(file) => {
            let path = file.path().to_path_buf();
            let xml_text = draft.xml_text().map(str::to_string);
            let written = tokio::task::spawn_blocking(move || {
                let existing = crate::rules::file::read_bytes(&path).ok();
                let contents = file_contents(existing.as_deref(), &document, xml_text.as_deref());
                // Whatever the form, what is written is what was judged valid.
                Policy::parse(&contents).map_err(ApplyError::Invalid)?;
                replace_file(&path, &contents).map_err(|source| ApplyError::Write { path, source })
            })
            .await
            .unwrap_or_else(|join| {
                Err(ApplyError::Write {
                    path: file.path().to_path_buf(),
                    source: std::io::Error::other(join.to_string()),
                })
            });
            written?;
            let changed = file
                .reload("admin panel apply")
                .await
                .map_err(ApplyError::Reload)?;
            Ok(Applied {
                changed,
                generation: file.live().generation(),
                in_force: true,
            })
        }
        Target::Bucket(bucket) => {
            store(bucket.fetcher(), bucket.name(), document.to_xml()).await?;
            read_back(bucket, &document).await
        }
    }
}

/// Fetches the bucket's rules until they are the document just stored (or the attempts run out).
async fn read_back(bucket: &BucketRules, document: &Document) -> Result<Applied, ApplyError> {
    let wanted = rules_of(document);
    let mut changed = false;
    let mut pause = FIRST_READ_BACK_PAUSE;
    let mut attempt = 1;
    loop {
        changed |=
            bucket
                .refresh("admin panel apply")
                .await
                .map_err(|error| ApplyError::Refresh {
                    bucket: bucket.name().to_string(),
                    error,
                })?;
        let view = bucket.live().view();
        let in_force = view["state"] == "enabled" && view["document"]["CORSRules"] == wanted;
        if in_force || attempt == READ_BACK_ATTEMPTS {
            return Ok(Applied {
                changed,
                generation: bucket.live().generation(),
                in_force,
            });
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
        attempt += 1;
    }
}

/// What a rules file holds after the apply: JSON in a JSON file, else the editor's XML as written
/// (its comments and layout), else the document as S3 XML.
fn file_contents(existing: Option<&[u8]>, document: &Document, xml_text: Option<&str>) -> Vec<u8> {
    let json_file = existing.is_some_and(|bytes| {
        let text = String::from_utf8_lossy(bytes);
        text.trim_start_matches('\u{feff}')
            .trim_start()
            .starts_with('{')
    });
    match (json_file, xml_text) {
        (true, _) => (document.to_json() + "\n").into_bytes(),
        (false, Some(text)) => text.as_bytes().to_vec(),
        (false, None) => document.to_xml().into_bytes(),
    }
}

/// Replaces the file at `path` (or, for a symlink, the file it points to) with `contents`, so
/// that it is at every moment either the old file or the whole new one.
fn replace_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let target = std::fs::canonicalize(path)?;
    // A rename is atomic only within one file system: the temporary file goes beside the target.
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(std::io::Error::other("the path names no file"));
    };
    let temporary = dir.join(format!(
        ".{}.{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)?;
        file.write_all(contents)?;
        // The new file replaces the old one's contents, not its access rights.
        file.set_permissions(std::fs::metadata(&target)?.permissions())?;
        // On disk before it has the name: a crash then leaves the old file or the whole new one.
        file.sync_all()?;
        std::fs::rename(&temporary, &target)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written?;
    // The rename is durable once the directory is; some file systems cannot sync a directory,
    // and the new contents are in place either way.
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// `Content-MD5`: the base64 of the body's MD5 (RFC 1864).
fn content_md5(body: &[u8]) -> HeaderValue {
    let digest = base64::engine::general_purpose::STANDARD.encode(Md5::digest(body));
    HeaderValue::try_from(digest).expect("base64 text is a valid header value")
}

/// `PUT /<bucket>?cors` with `xml`, signed, as the route reaches its bucket.
async fn store(fetcher: &BucketFetcher, bucket: &str, xml: String) -> Result<(), StoreError> {
    let body = Bytes::from(xml);
    let headers = [
        (CONTENT_TYPE, HeaderValue::from_static("application/xml")),
        (CONTENT_MD5, content_md5(&body)),
    ];
    let request = fetcher
        .cors_request(Method::PUT, bucket, &headers, body)
        .map_err(StoreError::Request)?;
    let origin = fetcher.origin().to_string();
    let exchange = async {
        let response = fetcher
            .client()
            .request(request)
            .await
            .map_err(|e| StoreError::Unreachable(format!("{origin}: {e}")))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| StoreError::Unreachable(format!("{origin}: reading the answer: {e}")))?
            .to_bytes();
        Ok((status, body))
    };
    let (status, body) = tokio::time::timeout(FETCH_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            StoreError::Unreachable(format!(
                "no complete answer from {origin} within {FETCH_TIMEOUT:?}"
            ))
        })??;
    if status.is_success() {
        return Ok(());
    }
    let error = S3ErrorBody::parse(&body);
    Err(StoreError::Refused {
        status,
        code: error.code,
        message: error.message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OriginUrl;
    use crate::rules::bucket::{FetchStyle, fetch_client};
    use crate::s3::Credentials;

    const XML: &str = "<CORSConfiguration><CORSRule><AllowedOrigin>https://a.example</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>";

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("corsgate-panel-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn content_md5_is_the_base64_of_the_digest() {
        // RFC 1321's test vector "abc", base64 of 900150983cd24fb0d6963f7d28e17f72.
        assert_eq!(content_md5(b"abc"), "kAFQmDzST7DWlj99KOF/cg==");
    }

    #[test]
    fn the_put_carries_the_md5_and_is_signed_over_its_body() {
        let tls = crate::tls::client_config(crate::tls::OriginRoots::Webpki, None)
            .expect("built-in roots");
        let fetcher = BucketFetcher::with_credentials(
            fetch_client(Duration::from_secs(1), tls),
            OriginUrl::parse("http://127.0.0.1:9000").expect("valid origin"),
            FetchStyle::Path,
            "us-east-1".into(),
            Some(Credentials::new("AKID".into(), "secret".into(), None)),
        );
        let body = Bytes::from_static(XML.as_bytes());
        let request = fetcher
            .cors_request(
                Method::PUT,
                "photos",
                &[(CONTENT_MD5, content_md5(&body))],
                body.clone(),
            )
            .expect("request");
        assert_eq!(request.method(), Method::PUT);
        assert_eq!(request.uri(), "http://127.0.0.1:9000/photos?cors");
        assert_eq!(request.headers()[CONTENT_MD5], content_md5(XML.as_bytes()));
        let sha256 = request.headers()["x-amz-content-sha256"]
            .to_str()
            .expect("ascii");
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(sha256.len(), 64);
        assert_ne!(sha256, empty, "the body is part of the signature");
        let authorization = request.headers()["authorization"].to_str().expect("ascii");
        assert!(authorization.contains("content-md5"), "{authorization}");
    }

    #[test]
    fn a_json_file_stays_json_and_an_xml_file_gets_the_editors_text() {
        let (document, _) = Policy::parse_document(XML.as_bytes()).expect("valid");
        let json = file_contents(Some(b"  {\"CORSRules\": []}"), &document, Some(XML));
        assert!(json.starts_with(b"{"));
        let edited = "<!-- kept -->\n".to_string() + XML;
        let xml = file_contents(Some(XML.as_bytes()), &document, Some(&edited));
        assert_eq!(xml, edited.as_bytes());
        let canonical = file_contents(None, &document, None);
        assert!(canonical.starts_with(b"<CORSConfiguration xmlns="));
    }

    #[cfg(unix)]
    #[test]
    fn replacing_keeps_permissions_and_symlinks_and_leaves_no_temporary_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("replace");
        let real = dir.join("real.xml");
        std::fs::write(&real, "old").expect("write");
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let link = dir.join("cors.xml");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");

        replace_file(&link, b"new").expect("replaced");
        assert_eq!(std::fs::read(&link).expect("read"), b"new");
        assert!(
            std::fs::symlink_metadata(&link)
                .expect("stat")
                .file_type()
                .is_symlink()
        );
        let mode = std::fs::metadata(&real).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_that_cannot_be_replaced_is_an_error_and_stays() {
        let dir = temp_dir("missing");
        let missing = dir.join("nope").join("cors.xml");
        assert!(replace_file(&missing, b"new").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
