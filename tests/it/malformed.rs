//! Hostile and broken rules documents: each gets a clean error naming the problem, never a
//! panic, and never unbounded work.

use corsgate::cors::{Policy, ProblemKind, S3Code};
use proptest::prelude::*;

fn first_problem(bytes: &[u8]) -> ProblemKind {
    let err = Policy::parse(bytes).expect_err("document must be refused");
    assert!(!err.problems.is_empty(), "an error without a problem");
    err.problems[0].kind.clone()
}

const VALID: &str = include_str!("../../config/cors-app.xml");

#[test]
fn truncated_xml_is_malformed() {
    let cut = &VALID[..VALID.len() / 2];
    let kind = first_problem(cut.as_bytes());
    assert_eq!(kind.code(), S3Code::MalformedXML, "{kind:?}");
}

#[test]
fn wrong_root_is_named() {
    let kind = first_problem(b"<LifecycleConfiguration><Rule/></LifecycleConfiguration>");
    assert_eq!(
        kind,
        ProblemKind::WrongRoot("LifecycleConfiguration".into())
    );
}

#[test]
fn entity_expansion_is_refused() {
    let billion_laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<CORSConfiguration><CORSRule><ID>&lol2;</ID></CORSRule></CORSConfiguration>"#;
    assert_eq!(
        first_problem(billion_laughs.as_bytes()),
        ProblemKind::DocType
    );
    let external = r#"<CORSConfiguration><CORSRule><ID>&xxe;</ID></CORSRule></CORSConfiguration>"#;
    assert!(matches!(
        first_problem(external.as_bytes()),
        ProblemKind::NotWellFormed(_)
    ));
}

#[test]
fn ten_megabyte_document_is_refused_by_size() {
    let rule =
        "<CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod></CORSRule>";
    let doc = format!(
        "<CORSConfiguration>{}</CORSConfiguration>",
        rule.repeat(10 * 1024 * 1024 / rule.len())
    );
    assert!(matches!(
        first_problem(doc.as_bytes()),
        ProblemKind::TooLarge { limit: 65536, .. }
    ));
}

#[test]
fn deeply_nested_elements_are_refused() {
    let depth = 5_000;
    let doc = format!(
        "<CORSConfiguration><CORSRule>{}{}</CORSRule></CORSConfiguration>",
        "<a>".repeat(depth),
        "</a>".repeat(depth)
    );
    let err = Policy::parse(doc.as_bytes()).expect_err("nested elements");
    let nested: Vec<_> = err
        .problems
        .iter()
        .filter(|p| matches!(p.kind, ProblemKind::UnexpectedElement { .. }))
        .collect();
    // One report for the outermost stray element; its subtree is skipped, not walked.
    assert_eq!(nested.len(), 1, "{err}");
}

#[test]
fn non_utf8_names_its_position() {
    let mut doc = b"<CORSConfiguration>\n<CORSRule><ID>caf".to_vec();
    doc.extend_from_slice(&[0xe9, b'<']);
    let err = Policy::parse(&doc).expect_err("not UTF-8");
    assert_eq!(err.problems[0].kind, ProblemKind::NotUtf8);
    assert_eq!(
        err.problems[0].to_string(),
        "2:18: MalformedXML: the document is not valid UTF-8"
    );
}

#[test]
fn empty_and_garbage_inputs_are_malformed() {
    for input in [
        &b""[..],
        b"   ",
        b"\x00\x01\x02",
        b"{",
        b"[]",
        b"<",
        b"<CORSConfiguration>",
    ] {
        let err = Policy::parse(input).expect_err("refused");
        assert!(!err.problems.is_empty());
    }
}

#[test]
fn json_with_wrong_types_is_refused_with_position() {
    let err = Policy::parse(br#"{"CORSRules": [{"AllowedOrigins": "*"}]}"#).expect_err("refused");
    // In document order: the rule's missing "AllowedMethods" (at its `{`) comes first.
    let wrong_type = err
        .problems
        .iter()
        .find(|p| matches!(p.kind, ProblemKind::InvalidJson(_)))
        .expect("the wrong type is reported");
    assert!(wrong_type.pos.is_some());
    assert!(err.problems.iter().all(|p| p.pos.is_some()), "{err}");
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Policy::parse(&bytes);
    }

    #[test]
    fn every_corruption_of_a_valid_document_is_parsed_or_refused_with_a_problem(flip in 0..VALID.len(), byte in any::<u8>()) {
        let mut corrupted = VALID.as_bytes().to_vec();
        corrupted[flip] = byte;
        // A flipped byte may leave the document valid (a letter of an origin, a blank): only a
        // refusal must say why.
        if let Err(err) = Policy::parse(&corrupted) {
            prop_assert!(!err.problems.is_empty(), "a refusal without a problem");
        }
    }
}

/// Every cut before the root element's end tag is finished: refused as malformed XML, at a
/// line the cut document has.
#[test]
fn every_truncation_of_a_valid_document_is_malformed_at_a_line_it_has() {
    let end = VALID.trim_end().len();
    assert!(
        Policy::parse(&VALID.as_bytes()[..end]).is_ok(),
        "the whole document is valid"
    );
    for cut in 0..end {
        let truncated = &VALID[..cut];
        let err = Policy::parse(truncated.as_bytes())
            .expect_err(&format!("cut at byte {cut} must be refused"));
        let first = err.problems.first().expect("a refusal names its problem");
        assert_eq!(
            first.kind.code(),
            S3Code::MalformedXML,
            "cut at byte {cut}: {err}"
        );
        // A cut just after a newline ends on the (empty) line that follows it.
        let lines = truncated.matches('\n').count() + 1;
        let pos = first
            .pos
            .unwrap_or_else(|| panic!("cut at byte {cut}: no position: {err}"));
        assert!(
            (1..=lines).contains(&(pos.line as usize)),
            "cut at byte {cut}: line {} of {lines}: {err}",
            pos.line
        );
    }
}
