//! One set of rules in force (a route's, or one bucket's), swapped atomically, with the record of
//! how it got there: when it was last loaded, and the last load's error.
//!
//! Requests read [`LiveRules::current`] (one lock-free load); loaders offer what they read with
//! [`LiveRules::offer`], which swaps only when the rules really changed (so the preflight cache,
//! keyed by generation, stays warm across no-op reloads), or report a failure with
//! [`LiveRules::failed`], which never touches the rules in force.
//!
//! Rules S3 accepts but that are risky (the warnings of `corsgate check`, see
//! [`crate::cors::lint`]) are found when a new document is installed: each is logged once, as a
//! warning with its code, and shown in `GET /-/rules` for as long as the document is in force.
//! A source that refuses such documents ([`Loaded::deny_warnings`]) turns them into a load
//! error instead.

use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::{ArcSwapOption, Guard};
use serde_json::{Value, json};

use super::RulesError;
use super::snapshot::Snapshot;
use crate::cors::lint::{Lint, lint};
use crate::cors::{BucketCors, Document};
use crate::metrics::{self, RulesLoad, RulesSource};
use crate::s3::FetchError;

/// Rules as read from a source, with the document they were compiled from.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub cors: BucketCors,
    /// The document as written (for `/-/rules`, and to tell a change from a no-op reload);
    /// `None` unless `cors` is `Enabled`.
    pub document: Option<Document>,
}

impl Loaded {
    pub fn without_document(cors: BucketCors) -> Loaded {
        Loaded {
            cors,
            document: None,
        }
    }

    /// Same state and same document (positions and formatting aside).
    fn same_as(&self, cors: &BucketCors, document: Option<&Document>) -> bool {
        let state = |c: &BucketCors| match c {
            BucketCors::Enabled(_) => 0,
            BucketCors::NotConfigured => 1,
            BucketCors::NoSuchBucket => 2,
        };
        state(&self.cors) == state(cors) && self.document.as_ref() == document
    }

    /// The document's lint warnings, in document order.
    pub fn warnings(&self) -> Vec<Lint> {
        let mut warnings = self.document.as_ref().map(lint).unwrap_or_default();
        warnings.sort_by_key(|w| w.pos);
        warnings
    }

    /// `rules.deny_warnings`: these rules, unless their document has warnings; then an error
    /// that names every warning's code, as an invalid document's names its problems. `source`
    /// names the document in the message (a path, `bucket NAME`).
    pub fn deny_warnings(self, source: impl FnOnce() -> String) -> Result<Loaded, RulesError> {
        let warnings = self.warnings();
        if warnings.is_empty() {
            return Ok(self);
        }
        Err(RulesError::Warnings {
            document: source(),
            warnings,
        })
    }
}

/// The snapshot a request is judged by, held for the whole request.
pub struct Current(Guard<Option<Arc<Snapshot>>>);

impl Deref for Current {
    type Target = Snapshot;

    fn deref(&self) -> &Snapshot {
        self.0
            .as_deref()
            .expect("a Current is only built from a loaded snapshot")
    }
}

/// A failed load, as the admin listener shows it.
#[derive(Clone, Debug)]
struct Failure {
    at: SystemTime,
    error: Value,
}

#[derive(Debug, Default)]
struct Record {
    document: Option<Document>,
    /// The last load that succeeded, whether or not it changed anything.
    loaded_at: Option<SystemTime>,
    /// When the rules in force were installed.
    changed_at: Option<SystemTime>,
    /// The last load's error; cleared by the next successful load.
    last_error: Option<Failure>,
    /// The lint warnings of the document in force.
    warnings: Vec<Lint>,
}

/// Rules in force plus their history.
#[derive(Debug, Default)]
pub struct LiveRules {
    current: ArcSwapOption<Snapshot>,
    // Only loaders and the admin listener take this lock, never a request.
    record: Mutex<Record>,
    /// Names the rules in log lines (`route[1]: cors.xml`); empty for rules never logged.
    label: String,
}

impl LiveRules {
    /// Nothing loaded yet: requests find no rules until the first good load.
    pub fn empty() -> LiveRules {
        LiveRules::default()
    }

    pub fn with(loaded: Loaded) -> LiveRules {
        let live = LiveRules::empty();
        live.offer(loaded);
        live
    }

    /// Nothing loaded yet; `label` starts the log lines about these rules (their warnings).
    pub fn named(label: String) -> LiveRules {
        LiveRules {
            label,
            ..LiveRules::default()
        }
    }

    /// The rules in force, if any were ever loaded. Lock-free.
    pub fn current(&self) -> Option<Current> {
        let guard = self.current.load();
        guard.is_some().then(|| Current(guard))
    }

    /// Installs `loaded` unless it is what is already in force; returns whether it swapped.
    /// Clears the last error either way: this load succeeded.
    pub fn offer(&self, loaded: Loaded) -> bool {
        let mut record = self.record.lock().unwrap_or_else(|p| p.into_inner());
        let now = SystemTime::now();
        record.loaded_at = Some(now);
        record.last_error = None;
        let unchanged = self
            .current
            .load()
            .as_deref()
            .is_some_and(|s| loaded.same_as(&s.cors, record.document.as_ref()));
        if unchanged {
            return false;
        }
        record.warnings = loaded.warnings();
        for warning in &record.warnings {
            tracing::warn!("{}:{warning}", self.label);
        }
        record.document = loaded.document;
        record.changed_at = Some(now);
        self.current
            .store(Some(Arc::new(Snapshot::new(loaded.cors))));
        true
    }

    /// Records a failed load; the rules in force stay.
    pub fn failed(&self, error: &RulesError) {
        let mut record = self.record.lock().unwrap_or_else(|p| p.into_inner());
        record.last_error = Some(Failure {
            at: SystemTime::now(),
            error: error_view(error),
        });
    }

    /// The generation in force (0 when nothing is loaded).
    pub fn generation(&self) -> u64 {
        self.current.load().as_deref().map_or(0, |s| s.generation)
    }

    /// What `GET /-/rules` shows.
    pub fn view(&self) -> Value {
        let record = self.record.lock().unwrap_or_else(|p| p.into_inner());
        let snapshot = self.current.load_full();
        let state = match snapshot.as_deref().map(|s| &s.cors) {
            None => "not-loaded",
            Some(BucketCors::Enabled(_)) => "enabled",
            Some(BucketCors::NotConfigured) => "not-configured",
            Some(BucketCors::NoSuchBucket) => "no-such-bucket",
        };
        let document = record
            .document
            .as_ref()
            .and_then(|d| serde_json::from_str::<Value>(&d.to_json()).ok());
        json!({
            "state": state,
            "generation": snapshot.as_deref().map(|s| s.generation),
            "document": document,
            "loaded_at": record.loaded_at.map(timestamp),
            "changed_at": record.changed_at.map(timestamp),
            "last_error": record.last_error.as_ref().map(|f| {
                let mut e = f.error.clone();
                e["at"] = Value::String(timestamp(f.at));
                e
            }),
            "warnings": record.warnings.iter().map(warning_view).collect::<Vec<_>>(),
        })
    }
}

/// Counts one load of a route's rules (`Ok(changed)`, or why it failed) in
/// `corsgate_rules_reloads_total`. `label` is the loader's log label, `route[N]`: the route is
/// labelled `N`.
pub(crate) fn count_load(label: &str, source: RulesSource, loaded: &Result<bool, RulesError>) {
    let route = label
        .strip_prefix("route[")
        .and_then(|l| l.strip_suffix(']'))
        .unwrap_or(label);
    let load = match loaded {
        Ok(true) => RulesLoad::Applied,
        Ok(false) => RulesLoad::Unchanged,
        Err(
            RulesError::Invalid { .. }
            | RulesError::Warnings { .. }
            | RulesError::Fetch {
                error: FetchError::InvalidDocument(_),
                ..
            },
        ) => RulesLoad::Invalid,
        Err(_) => RulesLoad::Error,
    };
    metrics::rules_loaded(route, source, load);
}

/// One lint warning as `GET /-/rules` shows it.
fn warning_view(warning: &Lint) -> Value {
    json!({
        "code": warning.kind.code(),
        "message": warning.kind.to_string(),
        "line": warning.pos.map(|pos| pos.line),
        "col": warning.pos.map(|pos| pos.col),
        "rule": warning.rule.index,
    })
}

fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// An error as data: the message, and each document problem with its position and S3 code.
fn error_view(error: &RulesError) -> Value {
    let mut problems: Vec<Value> = error
        .problems()
        .iter()
        .map(|p| {
            json!({
                "line": p.pos.map(|pos| pos.line),
                "col": p.pos.map(|pos| pos.col),
                "code": p.code().as_str(),
                "rule": p.rule.as_ref().map(|r| r.index),
                "message": p.kind.to_string(),
            })
        })
        .collect();
    if let RulesError::Warnings { warnings, .. } = error {
        problems.extend(warnings.iter().map(warning_view));
    }
    let origin_code = match error {
        RulesError::Fetch {
            error: crate::s3::FetchError::Origin { code, status, .. },
            ..
        } => Some(json!({ "status": status.as_u16(), "code": code })),
        _ => None,
    };
    json!({
        "message": error.to_string(),
        "problems": problems,
        "origin": origin_code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cors::Policy;

    fn enabled(xml: &str) -> Loaded {
        let (document, policy) = Policy::parse_document(xml.as_bytes()).expect("valid");
        Loaded {
            cors: BucketCors::Enabled(policy),
            document: Some(document),
        }
    }

    const A: &str = "<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule></CORSConfiguration>";

    #[test]
    fn the_same_document_reloaded_keeps_the_generation() {
        let live = LiveRules::with(enabled(A));
        let before = live.generation();
        // Same rules, other formatting: not a change.
        assert!(!live.offer(enabled(&A.replace("<CORSRule>", "\n  <CORSRule>"))));
        assert_eq!(live.generation(), before);
        assert!(live.offer(Loaded::without_document(BucketCors::NotConfigured)));
        assert!(live.generation() > before);
    }

    #[test]
    fn a_failure_keeps_the_rules_and_is_shown_until_the_next_success() {
        let live = LiveRules::with(enabled(A));
        let generation = live.generation();
        let error = RulesError::Invalid {
            path: "cors.xml".into(),
            error: Policy::parse(b"<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>get</AllowedMethod></CORSRule></CORSConfiguration>")
                .expect_err("invalid"),
        };
        live.failed(&error);
        assert_eq!(live.generation(), generation);
        let view = live.view();
        assert_eq!(view["state"], "enabled");
        assert_eq!(view["last_error"]["problems"][0]["code"], "InvalidRequest");
        assert_eq!(view["last_error"]["problems"][0]["line"], 1);
        live.offer(enabled(A));
        assert!(live.view()["last_error"].is_null());
    }

    #[test]
    fn warnings_are_shown_while_their_document_is_in_force() {
        let risky = "<CORSConfiguration>\n<CORSRule>\n  <AllowedOrigin>null</AllowedOrigin>\n  <AllowedMethod>GET</AllowedMethod>\n</CORSRule>\n</CORSConfiguration>";
        let live = LiveRules::named("route[1]: cors.xml".into());
        live.offer(enabled(risky));
        let warnings = live.view()["warnings"].clone();
        assert_eq!(warnings[0]["code"], "W-NULL-ORIGIN");
        assert_eq!(warnings[0]["line"], 3);
        assert_eq!(warnings[0]["col"], 3);
        assert_eq!(warnings.as_array().map(Vec::len), Some(1));
        live.offer(enabled(A));
        assert_eq!(live.view()["warnings"], serde_json::json!([]));
    }

    #[test]
    fn deny_warnings_refuses_a_document_naming_every_code() {
        let risky = "<CORSConfiguration><CORSRule><AllowedOrigin>null</AllowedOrigin><AllowedMethod>PUT</AllowedMethod></CORSRule></CORSConfiguration>";
        let error = enabled(risky)
            .deny_warnings(|| "cors.xml".into())
            .expect_err("warnings");
        let message = error.to_string();
        assert!(
            message.starts_with("cors.xml: refused, the document has warnings and deny_warnings is set: W-ETAG-NOT-EXPOSED, W-NULL-ORIGIN"),
            "{message}"
        );
        assert!(message.contains("\ncors.xml:1:"), "{message}");
        let live = LiveRules::with(enabled(A));
        live.failed(&error);
        let problems = live.view()["last_error"]["problems"].clone();
        assert_eq!(problems[1]["code"], "W-NULL-ORIGIN");
        assert!(enabled(A).deny_warnings(|| "cors.xml".into()).is_ok());
    }

    #[test]
    fn nothing_loaded_means_no_current_rules() {
        let live = LiveRules::empty();
        assert!(live.current().is_none());
        assert_eq!(live.view()["state"], "not-loaded");
    }
}
