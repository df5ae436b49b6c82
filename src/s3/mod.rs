//! The pieces of the S3 protocol corsgate speaks itself: where the bucket is in a request, how
//! to sign the requests corsgate sends or forwards (and the target a signed request is sent
//! to), and what a `GetBucketCors` answer means.
//!
//! No I/O here: the rules layer does the fetching.

pub mod addressing;
pub mod bucket_cors;
pub mod error_body;
pub mod signing;
pub mod target;

pub use addressing::{Addressing, S3Location, is_bucket_name};
pub use bucket_cors::{FetchError, interpret, interpret_document};
pub use signing::{Credentials, OriginSigner, SigningError, sign, sign_payload, strip_credentials};
pub use target::signed_target;
