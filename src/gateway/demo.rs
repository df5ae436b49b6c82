//! The demo bucket: a directory served over plain HTTP by `hyper-staticfile` on its own loopback
//! listener, so the default configuration has an origin to front on a machine with no network.
//! A demo, not an S3 implementation: GET and HEAD of files, nothing else.
//!
//! Its errors look like S3's, since clients of the gateway read them as S3 errors: a key that
//! does not name a file, whatever the file system says about it (no such file, a path through a
//! file as in `/hello.txt/x`, a directory, a `..` segment, a name too long), is `404 NoSuchKey`
//! and no log line; S3 has no directories, so a directory is a missing key too, except that
//! `dir/` is served its `index.html` when it has one. Only a real I/O fault is a `500` and a
//! warning.

use std::fmt::Write;
use std::sync::LazyLock;

use http::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_staticfile::{ResolveResult, ResponseBuilder, Static};

use super::request_id::RequestIds;
use super::{Body, full};

/// The demo origin's answer to `req`; its connections are accepted and served by
/// `server::accept_loop` like every listener's.
pub(crate) async fn respond(files: Static, req: Request<Incoming>) -> Response<Body> {
    answer(files, req).await
}

/// Answers one request from the files under the root.
pub async fn answer<B>(files: Static, req: Request<B>) -> Response<Body> {
    let key = key(req.uri().path());
    // hyper-staticfile resolves `..` against the root; S3 would look for a key with `..` in it,
    // which no file can be.
    if key
        .split('/')
        .any(|segment| segment == ".." || segment == ".")
    {
        return s3_error(StatusCode::NOT_FOUND, NO_SUCH_KEY, Some(&key));
    }
    let resolved = files.resolver.resolve_request(&req).await;
    let result = match resolved {
        Ok(result @ ResolveResult::Found(_)) => result,
        Ok(ResolveResult::NotFound | ResolveResult::IsDirectory { .. }) => {
            return s3_error(StatusCode::NOT_FOUND, NO_SUCH_KEY, Some(&key));
        }
        Ok(ResolveResult::PermissionDenied) => {
            return s3_error(StatusCode::FORBIDDEN, ACCESS_DENIED, None);
        }
        Ok(ResolveResult::MethodNotMatched) => {
            let mut response = s3_error(StatusCode::METHOD_NOT_ALLOWED, METHOD_NOT_ALLOWED, None);
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        Err(err) if is_missing(&err) => {
            return s3_error(StatusCode::NOT_FOUND, NO_SUCH_KEY, Some(&key));
        }
        Err(err) => {
            tracing::warn!("demo origin: {key}: {err}");
            return s3_error(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_ERROR, None);
        }
    };
    match ResponseBuilder::new()
        .request(&req)
        .cache_headers(files.cache_headers)
        .build(result)
    {
        Ok(response) => response.map(|b| b.map_err(Into::into).boxed()),
        Err(err) => {
            tracing::warn!("demo origin: {key}: {err}");
            s3_error(StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_ERROR, None)
        }
    }
}

/// An S3 error's code and message, as S3 words them.
type S3Error = (&'static str, &'static str);

const NO_SUCH_KEY: S3Error = ("NoSuchKey", "The specified key does not exist.");
const ACCESS_DENIED: S3Error = ("AccessDenied", "Access Denied");
const METHOD_NOT_ALLOWED: S3Error = (
    "MethodNotAllowed",
    "The specified method is not allowed against this resource.",
);
const INTERNAL_ERROR: S3Error = (
    "InternalError",
    "We encountered an internal error. Please try again.",
);

/// Errors opening a path that only mean "no file has this name".
fn is_missing(err: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        err.kind(),
        ErrorKind::NotFound
            | ErrorKind::NotADirectory
            | ErrorKind::IsADirectory
            | ErrorKind::InvalidFilename
            | ErrorKind::InvalidInput
    ) || err.raw_os_error() == Some(libc::ELOOP)
}

/// The object key a path names: percent-decoded, without the leading `/`.
fn key(path: &str) -> String {
    let bytes = path.strip_prefix('/').unwrap_or(path).as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

fn s3_error(status: StatusCode, (code, message): S3Error, key: Option<&str>) -> Response<Body> {
    use quick_xml::escape::partial_escape as escape;
    static IDS: LazyLock<RequestIds> = LazyLock::new(RequestIds::default);
    let id = IDS.next();
    let mut body = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>{code}</Code><Message>{message}</Message>"#
    );
    if let Some(key) = key {
        let _ = write!(body, "<Key>{}</Key>", escape(key));
    }
    let _ = write!(body, "<RequestId>{id}</RequestId></Error>");
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    headers.insert("x-amz-request-id", id.header_value());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_decoded_path_without_its_slash() {
        assert_eq!(key("/hello.txt/x"), "hello.txt/x");
        assert_eq!(key("/a%20b/%2e%2e/c"), "a b/../c");
        assert_eq!(key("/100%"), "100%");
        assert_eq!(key("/%zz"), "%zz");
        assert_eq!(key("/"), "");
    }

    #[test]
    fn every_way_a_path_names_no_file_is_missing() {
        use std::io::{Error, ErrorKind};
        for kind in [
            ErrorKind::NotFound,
            ErrorKind::NotADirectory,
            ErrorKind::InvalidFilename,
        ] {
            assert!(is_missing(&Error::from(kind)), "{kind:?}");
        }
        assert!(is_missing(&Error::from_raw_os_error(libc::ENOTDIR)));
        assert!(is_missing(&Error::from_raw_os_error(libc::ELOOP)));
        assert!(is_missing(&Error::from_raw_os_error(libc::ENAMETOOLONG)));
        assert!(!is_missing(&Error::from_raw_os_error(libc::EIO)));
    }
}
