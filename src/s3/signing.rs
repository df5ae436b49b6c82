//! AWS Signature Version 4, by the AWS SDK's own signer, for the requests corsgate itself sends
//! to an S3 origin (`GET ?cors`) and for those it forwards to a private bucket (a route's
//! `sign`). Credentials come from the environment, never from a config file.

use std::time::SystemTime;

use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningInstructions,
    SigningSettings, UriPathNormalizationMode, sign as sigv4_sign,
};
use aws_sigv4::sign::v4;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method};

/// Access keys for signing.
#[derive(Clone)]
pub struct Credentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

/// Keys are secrets: never in logs or debug output.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error(
        "environment variable {0} is not set (it holds the key corsgate signs bucket requests with)"
    )]
    MissingVariable(String),
    #[error("cannot sign the request: {0}")]
    Sign(String),
}

impl Credentials {
    pub fn new(
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
    ) -> Self {
        Credentials {
            access_key_id,
            secret_access_key,
            session_token,
        }
    }

    pub(crate) fn has_session_token(&self) -> bool {
        self.session_token.is_some()
    }

    /// Reads keys from the named environment variables (the session token is optional).
    pub(crate) fn from_env(
        key_var: &str,
        secret_var: &str,
        token_var: &str,
    ) -> Result<Self, SigningError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Ok(Credentials {
            access_key_id: var(key_var)
                .ok_or_else(|| SigningError::MissingVariable(key_var.into()))?,
            secret_access_key: var(secret_var)
                .ok_or_else(|| SigningError::MissingVariable(secret_var.into()))?,
            session_token: var(token_var),
        })
    }
}

/// Signs `request` (with an empty body) in place for S3 in `region`.
pub fn sign<B>(
    request: &mut http::Request<B>,
    credentials: &Credentials,
    region: &str,
    now: SystemTime,
) -> Result<(), SigningError> {
    sign_payload(request, credentials, region, now, &[])
}

/// Signs `request`, whose body is `payload`, in place for S3 in `region`: the payload's hash is
/// part of the signature.
pub(crate) fn sign_payload<B>(
    request: &mut http::Request<B>,
    credentials: &Credentials,
    region: &str,
    now: SystemTime,
    payload: &[u8],
) -> Result<(), SigningError> {
    let uri = request.uri().to_string();
    let headers: Vec<(&str, &str)> = request
        .headers()
        .iter()
        .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
        .collect();
    let scope = Scope {
        credentials,
        region,
        service: "s3",
        now,
    };
    let added = scope.sign(
        request.method().as_str(),
        &uri,
        headers,
        SignableBody::Bytes(payload),
    )?;
    apply(added, request.headers_mut())
}

/// Signs the requests corsgate forwards to a private bucket's origin, in their headers:
/// `Authorization`, `X-Amz-Date`, `X-Amz-Content-Sha256: UNSIGNED-PAYLOAD` (an upload streams
/// through unread) and, with a session token, `X-Amz-Security-Token`.
#[derive(Debug)]
pub struct OriginSigner {
    credentials: Credentials,
    region: String,
    service: String,
    methods: Vec<Method>,
    /// The environment variables the keys came from, for messages: never the keys.
    variables: String,
}

impl OriginSigner {
    /// `variables` names where `credentials` came from (e.g. `AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY`); only these `methods` are ever signed.
    pub fn new(
        credentials: Credentials,
        region: String,
        service: String,
        methods: Vec<Method>,
        variables: String,
    ) -> OriginSigner {
        OriginSigner {
            credentials,
            region,
            service,
            methods,
            variables,
        }
    }

    /// Whether requests with `method` are signed (and so forwarded at all).
    pub fn allows(&self, method: &Method) -> bool {
        self.methods.contains(method)
    }

    /// Where the keys came from and what they sign for, for an operator to check: the variable
    /// names, the region and the service.
    pub(crate) fn describe(&self) -> String {
        format!(
            "the keys in {} for region {:?}, service {:?}",
            self.variables, self.region, self.service
        )
    }

    /// Signs a request about to be forwarded: `uri` as it is sent, `headers` with the `Host`
    /// the origin receives. Signed are `Host` and the `x-amz-*` headers (S3 requires every one
    /// sent to be signed); the others are left out of the signature, so nothing on the way
    /// (a proxy rewriting `User-Agent`, the forwarding headers) can break it. The client's own
    /// credentials must be gone already ([`strip_credentials`]).
    pub fn sign(
        &self,
        method: &Method,
        uri: &http::Uri,
        headers: &mut HeaderMap,
        now: SystemTime,
    ) -> Result<(), SigningError> {
        // An `x-amz-*` value that is not visible ASCII cannot be signed; sent unsigned, S3 would
        // refuse the request anyway.
        let unsignable: Vec<HeaderName> = headers
            .iter()
            .filter(|(n, v)| n.as_str().starts_with("x-amz-") && v.to_str().is_err())
            .map(|(n, _)| n.clone())
            .collect();
        for name in unsignable {
            headers.remove(name);
        }
        let signed: Vec<(&str, &str)> = headers
            .iter()
            .filter(|(n, _)| *n == header::HOST || n.as_str().starts_with("x-amz-"))
            .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
            .collect();
        // Without it the signer would take the host from `uri`, which origin form lacks.
        if !signed.iter().any(|(n, _)| *n == "host") {
            return Err(SigningError::Sign("the request has no Host to sign".into()));
        }
        let scope = Scope {
            credentials: &self.credentials,
            region: &self.region,
            service: &self.service,
            now,
        };
        let added = scope.sign(
            method.as_str(),
            &uri.to_string(),
            signed,
            SignableBody::UnsignedPayload,
        )?;
        apply(added, headers)
    }
}

/// The request headers that carry a client's own SigV4 credentials: removed before corsgate
/// signs with its keys, so the origin judges corsgate's signature alone.
pub(crate) const CLIENT_CREDENTIAL_HEADERS: [HeaderName; 4] = [
    header::AUTHORIZATION,
    HeaderName::from_static("x-amz-date"),
    HeaderName::from_static("x-amz-security-token"),
    HeaderName::from_static("x-amz-content-sha256"),
];

/// Removes [`CLIENT_CREDENTIAL_HEADERS`].
pub(crate) fn strip_credentials(headers: &mut HeaderMap) {
    for name in &CLIENT_CREDENTIAL_HEADERS {
        headers.remove(name);
    }
}

/// One signature's keys, region, service and time.
struct Scope<'a> {
    credentials: &'a Credentials,
    region: &'a str,
    service: &'a str,
    now: SystemTime,
}

impl Scope<'_> {
    /// The headers to add to the request: the signature and what it covers.
    fn sign(
        &self,
        method: &str,
        uri: &str,
        headers: Vec<(&str, &str)>,
        body: SignableBody<'_>,
    ) -> Result<SigningInstructions, SigningError> {
        let identity = aws_credential_types::Credentials::new(
            &self.credentials.access_key_id,
            &self.credentials.secret_access_key,
            self.credentials.session_token.clone(),
            None,
            "corsgate",
        )
        .into();
        // S3 signs the path as sent (no double encoding, no normalisation) and wants the payload
        // hash in x-amz-content-sha256.
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(self.region)
            .name(self.service)
            .time(self.now)
            .settings(settings)
            .build()
            .map_err(|e| SigningError::Sign(e.to_string()))?
            .into();
        let signable = SignableRequest::new(method, uri, headers.into_iter(), body)
            .map_err(|e| SigningError::Sign(e.to_string()))?;
        let (instructions, _signature) = sigv4_sign(signable, &params)
            .map_err(|e| SigningError::Sign(e.to_string()))?
            .into_parts();
        Ok(instructions)
    }
}

fn apply(added: SigningInstructions, headers: &mut HeaderMap) -> Result<(), SigningError> {
    for (name, value) in added.headers() {
        let invalid = || SigningError::Sign(format!("the value of {name} is not a header value"));
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
        let mut value = HeaderValue::from_str(value).map_err(|_| invalid())?;
        // Kept out of debug output, and out of HPACK's table on HTTP/2.
        value.set_sensitive(name == header::AUTHORIZATION || name == "x-amz-security-token");
        headers.insert(name, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn signs_with_s3_headers_and_a_stable_signature() {
        let creds = Credentials::new(
            "AKIDEXAMPLE".into(),
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            None,
        );
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160); // 2015-08-30T12:36:00Z
        let build = || {
            http::Request::get("http://127.0.0.1:9000/photos?cors")
                .header("host", "127.0.0.1:9000")
                .body(())
                .expect("valid request")
        };
        let mut a = build();
        sign(&mut a, &creds, "us-east-1", at).expect("signs");
        let auth = a.headers()["authorization"]
            .to_str()
            .expect("ascii")
            .to_string();
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/s3/aws4_request"
            ),
            "{auth}"
        );
        assert!(a.headers().contains_key("x-amz-date"));
        assert!(a.headers().contains_key("x-amz-content-sha256"));
        let mut b = build();
        sign(&mut b, &creds, "us-east-1", at).expect("signs");
        assert_eq!(a.headers()["authorization"], b.headers()["authorization"]);
        assert!(
            !format!("{creds:?}").contains("wJalr"),
            "the secret never shows"
        );
    }

    #[test]
    fn forwarded_requests_sign_host_and_amz_headers_with_an_unsigned_payload() {
        let creds = Credentials::new(
            "AKIDEXAMPLE".into(),
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            Some("session".into()),
        );
        let signer = OriginSigner::new(
            creds,
            "nyc3".into(),
            "s3".into(),
            vec![Method::GET, Method::HEAD],
            "KEY and SECRET".into(),
        );
        assert!(signer.allows(&Method::GET) && !signer.allows(&Method::PUT));
        assert!(
            !signer.describe().contains("wJalr"),
            "{}",
            signer.describe()
        );
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("cdn.example"));
        headers.insert(header::RANGE, HeaderValue::from_static("bytes=0-9"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("AWS4 client"),
        );
        headers.insert("x-amz-date", HeaderValue::from_static("19700101T000000Z"));
        headers.insert("x-amz-content-sha256", HeaderValue::from_static("abc"));
        headers.insert("x-amz-security-token", HeaderValue::from_static("client"));
        headers.insert("x-amz-checksum-mode", HeaderValue::from_static("ENABLED"));
        headers.insert(
            "x-amz-meta-bad",
            HeaderValue::from_bytes(b"caf\xe9").expect("obs-text"),
        );
        strip_credentials(&mut headers);
        assert!(headers.get(header::AUTHORIZATION).is_none());
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_440_938_160);
        let uri: http::Uri = "/photos/cat.jpg?versionId=1".parse().expect("uri");
        signer
            .sign(&Method::GET, &uri, &mut headers, at)
            .expect("signs");
        let auth = headers[header::AUTHORIZATION].to_str().expect("ascii");
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/nyc3/s3/aws4_request"
            ),
            "{auth}"
        );
        assert!(
            auth.contains(
                "SignedHeaders=host;x-amz-checksum-mode;x-amz-content-sha256;x-amz-date;x-amz-security-token,"
            ),
            "{auth}"
        );
        assert_eq!(headers["x-amz-content-sha256"], "UNSIGNED-PAYLOAD");
        assert_eq!(headers["x-amz-security-token"], "session");
        assert_eq!(headers["x-amz-date"], "20150830T123600Z");
        assert_eq!(headers[header::RANGE], "bytes=0-9", "kept, unsigned");
        assert!(
            headers.get("x-amz-meta-bad").is_none(),
            "unsignable: dropped"
        );

        let mut hostless = HeaderMap::new();
        assert!(signer.sign(&Method::GET, &uri, &mut hostless, at).is_err());
    }
}
