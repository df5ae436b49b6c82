//! The rules document reader and validator, XML and JSON: no input panics it, every problem it
//! reports can be shown, and a document that compiles is written back (`to_xml`, `to_json`) into
//! one that reads and compiles to the same rules.

#![no_main]

use corsgate::cors::document::MAX_DOCUMENT_BYTES;
use corsgate::cors::lint::lint;
use corsgate::cors::{Document, Policy, Rule};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The recovering reader is what `corsgate check` reports from: all of it must display.
    let (_, problems) = Document::read(data);
    for problem in &problems {
        let _ = problem.to_string();
    }
    let (doc, policy) = match Policy::parse_document(data) {
        Ok(compiled) => compiled,
        Err(error) => {
            assert!(!error.problems.is_empty(), "a refusal names no problem");
            let _ = error.to_string();
            return;
        }
    };
    for warning in lint(&doc) {
        let _ = warning.to_string();
    }

    let xml = doc.to_xml();
    if xml.len() <= MAX_DOCUMENT_BYTES {
        let (xml_doc, xml_policy) = Policy::parse_document(xml.as_bytes())
            .unwrap_or_else(|e| panic!("the document's own XML is refused: {e}\n{xml}"));
        assert_eq!(xml_doc, doc, "XML changes the document:\n{xml}");
        assert_same_rules(&xml_policy, &policy, &xml);
    }
    // The JSON form writes MaxAgeSeconds as a number (leading zeros and `+` do not survive it),
    // so the compiled rules are compared, not the text.
    let json = doc.to_json();
    if json.len() <= MAX_DOCUMENT_BYTES {
        let (_, json_policy) = Policy::parse_document(json.as_bytes())
            .unwrap_or_else(|e| panic!("the document's own JSON is refused: {e}\n{json}"));
        assert_same_rules(&json_policy, &policy, &json);
    }
});

fn assert_same_rules(read_back: &Policy, original: &Policy, written: &str) {
    let a: Vec<_> = read_back.rules().iter().map(shape).collect();
    let b: Vec<_> = original.rules().iter().map(shape).collect();
    assert_eq!(a, b, "writing the document changes its rules:\n{written}");
}

/// Everything a rule decides, with the header values it answers with.
fn shape(rule: &Rule) -> impl PartialEq + std::fmt::Debug + use<> {
    (
        rule.index,
        rule.id.clone(),
        rule.origins.clone(),
        rule.methods.clone(),
        rule.headers.clone(),
        rule.expose.clone(),
        rule.max_age,
        rule.allows_any_origin(),
        rule.allow_methods_value().clone(),
        rule.expose_headers_value().cloned(),
        rule.max_age_value().cloned(),
    )
}
