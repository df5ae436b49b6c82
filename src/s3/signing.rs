//! AWS Signature Version 4 for the requests corsgate itself sends to an S3 origin, by the AWS
//! SDK's own signer. Credentials come from the environment, never from a config file.

use std::time::SystemTime;

use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign as sigv4_sign,
};
use aws_sigv4::sign::v4;

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

    /// Reads keys from the named environment variables (the session token is optional).
    pub fn from_env(
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
pub fn sign_payload<B>(
    request: &mut http::Request<B>,
    credentials: &Credentials,
    region: &str,
    now: SystemTime,
    payload: &[u8],
) -> Result<(), SigningError> {
    let identity = aws_credential_types::Credentials::new(
        &credentials.access_key_id,
        &credentials.secret_access_key,
        credentials.session_token.clone(),
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
        .region(region)
        .name("s3")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| SigningError::Sign(e.to_string()))?
        .into();
    let uri = request.uri().to_string();
    let headers: Vec<(&str, &str)> = request
        .headers()
        .iter()
        .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
        .collect();
    let signable = SignableRequest::new(
        request.method().as_str(),
        &uri,
        headers.into_iter(),
        SignableBody::Bytes(payload),
    )
    .map_err(|e| SigningError::Sign(e.to_string()))?;
    let (instructions, _signature) = sigv4_sign(signable, &params)
        .map_err(|e| SigningError::Sign(e.to_string()))?
        .into_parts();
    instructions.apply_to_request_http1x(request);
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
}
