//! One compiled `CORSRule`: its patterns and its response header values, built once. What a
//! grant is made of; the policy compiles rules and picks among them.

use http::HeaderValue;

use super::error::RuleRef;
use super::header::HeaderPattern;
use super::method::{CorsMethod, MethodSet};
use super::origin::OriginPattern;

/// One compiled `CORSRule`.
#[derive(Clone, Debug)]
pub struct Rule {
    /// 1-based position in the document.
    pub index: usize,
    pub id: Option<String>,
    pub origins: Vec<OriginPattern>,
    /// In document order: `Access-Control-Allow-Methods` lists them so.
    pub methods: Vec<CorsMethod>,
    pub(crate) method_set: MethodSet,
    pub headers: Vec<HeaderPattern>,
    pub expose: Vec<String>,
    pub max_age: Option<u32>,
    pub(super) any_origin: bool,
    pub(super) allow_methods: HeaderValue,
    pub(super) expose_headers: Option<HeaderValue>,
    pub(super) max_age_value: Option<HeaderValue>,
}

impl Rule {
    pub(crate) fn rule_ref(&self) -> RuleRef {
        RuleRef {
            index: self.index,
            id: self.id.clone(),
        }
    }

    /// A lone `*` AllowedOrigin: S3 then answers `Access-Control-Allow-Origin: *` and sends no
    /// `Access-Control-Allow-Credentials`.
    pub fn allows_any_origin(&self) -> bool {
        self.any_origin
    }

    pub fn allow_methods_value(&self) -> &HeaderValue {
        &self.allow_methods
    }

    pub fn expose_headers_value(&self) -> Option<&HeaderValue> {
        self.expose_headers.as_ref()
    }

    pub fn max_age_value(&self) -> Option<&HeaderValue> {
        self.max_age_value.as_ref()
    }
}
