//! Where the bucket and the key are in a request to an S3 endpoint.

use serde::Deserialize;

/// How requests name their bucket.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Addressing {
    /// `https://endpoint/bucket/key`.
    Path,
    /// `https://bucket.endpoint/key`.
    Virtual,
}

/// A request's bucket and object key (without the leading `/`; empty at the bucket root).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct S3Location<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
}

/// Does `name` look like a bucket name? Generous on purpose (legacy us-east-1 buckets and other
/// stores allow upper case and `_`), but never lets anything odd into a URL or a Host.
pub(crate) fn is_bucket_name(name: &str) -> bool {
    (1..=255).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && !name.starts_with('.')
}

impl Addressing {
    /// The bucket and key a request names, or `None` when it names no bucket (the endpoint root,
    /// or a virtual-hosted request whose Host has no bucket label).
    pub(crate) fn locate<'a>(self, host: &'a str, path: &'a str) -> Option<S3Location<'a>> {
        let path = path.strip_prefix('/').unwrap_or(path);
        match self {
            Addressing::Path => {
                let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
                (!bucket.is_empty()).then_some(S3Location { bucket, key })
            }
            Addressing::Virtual => {
                let host = strip_port(host);
                let (bucket, _) = host.split_once('.')?;
                // An IP address is not a bucket label.
                let is_ip = host.parse::<std::net::IpAddr>().is_ok();
                (!bucket.is_empty() && !is_ip).then_some(S3Location { bucket, key: path })
            }
        }
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host;
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Whether a query string addresses the `?cors` subresource (`cors`, `cors=`, among others).
pub(crate) fn is_cors_subresource(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|param| param.split('=').next() == Some("cors"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_never_carry_url_or_host_syntax() {
        for good in ["photos", "my.bucket-1", "Legacy_Bucket"] {
            assert!(is_bucket_name(good), "{good}");
        }
        for bad in [
            "",
            ".hidden",
            "a/b",
            "a?b",
            "a b",
            "a%2f",
            "a:1",
            &"x".repeat(256),
        ] {
            assert!(!is_bucket_name(bad), "{bad}");
        }
    }

    #[test]
    fn path_style_takes_the_first_segment() {
        let a = Addressing::Path;
        assert_eq!(
            a.locate("h", "/b/k/x.jpg"),
            Some(S3Location {
                bucket: "b",
                key: "k/x.jpg"
            })
        );
        assert_eq!(
            a.locate("h", "/b"),
            Some(S3Location {
                bucket: "b",
                key: ""
            })
        );
        assert_eq!(
            a.locate("h", "/b/"),
            Some(S3Location {
                bucket: "b",
                key: ""
            })
        );
        assert_eq!(a.locate("h", "/"), None);
    }

    #[test]
    fn virtual_hosted_takes_the_first_host_label() {
        let a = Addressing::Virtual;
        assert_eq!(
            a.locate("photos.s3.example.com:8080", "/k"),
            Some(S3Location {
                bucket: "photos",
                key: "k"
            })
        );
        assert_eq!(a.locate("localhost:9000", "/k"), None);
        assert_eq!(a.locate("127.0.0.1:9000", "/k"), None);
    }

    #[test]
    fn cors_subresource_is_recognised() {
        assert!(is_cors_subresource(Some("cors")));
        assert!(is_cors_subresource(Some("cors=")));
        assert!(is_cors_subresource(Some("x-id=PutBucketCors&cors")));
        assert!(!is_cors_subresource(Some("corsage=1")));
        assert!(!is_cors_subresource(None));
    }
}
