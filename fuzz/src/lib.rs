//! What the fuzz targets share: the spec's test vectors (`tests/data/vectors.json`), compiled in,
//! as a vocabulary of real rules documents and origins.
//!
//! The vectors are read once per process. A vectors file that does not parse is a broken
//! checkout, not a finding: the targets then run on fuzz-made values alone.

use std::sync::LazyLock;

use corsgate::cors::Document;

const VECTORS: &str = include_str!("../../tests/data/vectors.json");

/// The values the spec's cases use.
#[derive(Debug, Default)]
pub struct Vectors {
    /// Every rules document, by name, as written (XML).
    pub configs: Vec<(String, String)>,
    /// Every `AllowedOrigin` of the documents and every `Origin` the cases send.
    pub origins: Vec<String>,
}

pub fn vectors() -> &'static Vectors {
    static VECTORS_READ: LazyLock<Vectors> = LazyLock::new(|| read(VECTORS).unwrap_or_default());
    &VECTORS_READ
}

fn read(text: &str) -> Option<Vectors> {
    let json: serde_json::Value = serde_json::from_str(text).ok()?;
    let mut out = Vectors::default();
    for (name, doc) in json.get("configs")?.as_object()? {
        let Some(doc) = doc.as_str() else { continue };
        if let Ok(parsed) = Document::parse(doc.as_bytes()) {
            for rule in &parsed.rules {
                out.origins
                    .extend(rule.allowed_origins.iter().map(|o| o.value.clone()));
            }
        }
        out.configs.push((name.clone(), doc.to_string()));
    }
    for case in json.get("cases")?.as_array()? {
        let headers = case.get("headers").and_then(|h| h.as_array());
        for pair in headers.into_iter().flatten() {
            let (Some(name), Some(value)) = (
                pair.get(0).and_then(|n| n.as_str()),
                pair.get(1).and_then(|v| v.as_str()),
            ) else {
                continue;
            };
            if name.eq_ignore_ascii_case("origin") {
                out.origins.push(value.to_string());
            }
        }
    }
    out.origins.sort();
    out.origins.dedup();
    Some(out)
}
