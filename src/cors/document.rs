//! The CORS configuration document as written: S3's `CORSConfiguration` XML or the AWS CLI's
//! JSON form, read into plain strings with the position of every element.
//!
//! Nothing here judges the values (that is `validate`); this module only knows the document's
//! shape. XML is read with quick-xml's event reader rather than its serde deserializer because
//! every problem must name the line and column of the element it is about, and serde drops
//! positions. The JSON form is read with serde; both forms are written back out by
//! `to_xml`/`to_json`, which round-trip through `parse`.

use std::borrow::Cow;

use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::reader::Reader;
use serde::{Deserialize, Deserializer, Serialize};

use super::error::{ConfigError, Pos, Problem, ProblemKind};

/// A value read from the document, with where it was found (JSON values have no position).
#[derive(Clone, Debug, Default, Eq)]
pub struct Located<T> {
    pub value: T,
    pub pos: Option<Pos>,
}

impl<T> Located<T> {
    pub fn new(value: T) -> Self {
        Located { value, pos: None }
    }
}

/// Positions are where a value came from, not part of it.
impl<T: PartialEq> PartialEq for Located<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Located::new)
    }
}

/// One `CORSRule`, every field as the text the document holds (serde names: the JSON form's).
/// Equality ignores positions, as for [`Located`].
#[derive(Clone, Debug, Default, Eq, Deserialize)]
pub struct RuleDoc {
    #[serde(skip)]
    pub pos: Option<Pos>,
    #[serde(rename = "ID", default)]
    pub id: Option<Located<String>>,
    #[serde(rename = "AllowedOrigins", default)]
    pub allowed_origins: Vec<Located<String>>,
    #[serde(rename = "AllowedMethods", default)]
    pub allowed_methods: Vec<Located<String>>,
    #[serde(rename = "AllowedHeaders", default)]
    pub allowed_headers: Vec<Located<String>>,
    #[serde(rename = "ExposeHeaders", default)]
    pub expose_headers: Vec<Located<String>>,
    #[serde(rename = "MaxAgeSeconds", default, deserialize_with = "max_age_text")]
    pub max_age_seconds: Option<Located<String>>,
}

impl PartialEq for RuleDoc {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.allowed_origins == other.allowed_origins
            && self.allowed_methods == other.allowed_methods
            && self.allowed_headers == other.allowed_headers
            && self.expose_headers == other.expose_headers
            && self.max_age_seconds == other.max_age_seconds
    }
}

/// A whole configuration document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Document {
    #[serde(rename = "CORSRules", default)]
    pub rules: Vec<RuleDoc>,
}

/// S3's namespace, written on output so the document can be uploaded as it is.
pub const S3_NAMESPACE: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// Where a document is larger than S3 accepts, we do not even read it.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// The JSON form's MaxAgeSeconds is a number; keep it as text so validation treats both forms
/// alike (and can say what was wrong with it).
fn max_age_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Located<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Int(i64),
        Float(f64),
        Text(String),
    }
    Ok(Option::<Number>::deserialize(d)?.map(|n| {
        Located::new(match n {
            Number::Int(i) => i.to_string(),
            Number::Float(f) => f.to_string(),
            Number::Text(t) => t,
        })
    }))
}

impl Document {
    /// Reads a document, XML or JSON (whichever its first non-blank character says).
    ///
    /// Only the shape is checked here; [`Policy::compile`](super::Policy::compile) judges the
    /// values.
    pub fn parse(bytes: &[u8]) -> Result<Document, ConfigError> {
        match Document::read(bytes) {
            (Some(doc), problems) if problems.is_empty() => Ok(doc),
            (_, problems) => Err(ConfigError { problems }),
        }
    }

    /// Like [`Document::parse`], but keeps reading past problems that leave the document's
    /// meaning clear (an unknown element, stray text), so that its values can be judged too and
    /// every problem reported at once. The document is `None` when it could not be read at all.
    pub fn read(bytes: &[u8]) -> (Option<Document>, Vec<Problem>) {
        match Document::read_strict(bytes) {
            Ok(doc) => (Some(doc), Vec::new()),
            Err((doc, e)) => (doc, e.problems),
        }
    }

    fn read_strict(bytes: &[u8]) -> Result<Document, (Option<Document>, ConfigError)> {
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err((
                None,
                Problem::new(ProblemKind::TooLarge {
                    size: bytes.len(),
                    limit: MAX_DOCUMENT_BYTES,
                })
                .into(),
            ));
        }
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                let valid = std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default();
                let pos = Pos::at(valid, valid.len());
                return Err((
                    None,
                    Problem::new(ProblemKind::NotUtf8).at(Some(pos)).into(),
                ));
            }
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.trim_start().starts_with('{') {
            Document::parse_json(text).map_err(|e| (None, e))
        } else {
            XmlReader::new(text).read()
        }
    }

    fn parse_json(text: &str) -> Result<Document, ConfigError> {
        serde_json::from_str(text).map_err(|e| {
            let pos = Pos {
                line: u32::try_from(e.line()).unwrap_or(u32::MAX),
                col: u32::try_from(e.column()).unwrap_or(u32::MAX),
            };
            let pos = (pos.line > 0).then_some(pos);
            Problem::new(ProblemKind::InvalidJson(e.to_string()))
                .at(pos)
                .into()
        })
    }

    /// The document as S3 XML, with S3's namespace.
    pub fn to_xml(&self) -> String {
        let mut out = format!("<CORSConfiguration xmlns=\"{S3_NAMESPACE}\">\n");
        for rule in &self.rules {
            out.push_str("  <CORSRule>\n");
            let mut field = |name: &str, value: &str| {
                out.push_str(&format!(
                    "    <{name}>{}</{name}>\n",
                    quick_xml::escape::escape(value)
                ));
            };
            if let Some(id) = &rule.id {
                field("ID", &id.value);
            }
            for (name, values) in [
                ("AllowedOrigin", &rule.allowed_origins),
                ("AllowedMethod", &rule.allowed_methods),
                ("AllowedHeader", &rule.allowed_headers),
                ("ExposeHeader", &rule.expose_headers),
            ] {
                for v in values {
                    field(name, &v.value);
                }
            }
            if let Some(max_age) = &rule.max_age_seconds {
                field("MaxAgeSeconds", &max_age.value);
            }
            out.push_str("  </CORSRule>\n");
        }
        out.push_str("</CORSConfiguration>\n");
        out
    }

    /// The document in the AWS CLI's JSON form (`aws s3api put-bucket-cors --cors-configuration`).
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct JsonRule<'a> {
            #[serde(rename = "ID", skip_serializing_if = "Option::is_none")]
            id: Option<&'a str>,
            allowed_origins: Vec<&'a str>,
            allowed_methods: Vec<&'a str>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            allowed_headers: Vec<&'a str>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            expose_headers: Vec<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            max_age_seconds: Option<serde_json::Value>,
        }
        #[derive(Serialize)]
        struct JsonDoc<'a> {
            #[serde(rename = "CORSRules")]
            rules: Vec<JsonRule<'a>>,
        }
        fn strs(v: &[Located<String>]) -> Vec<&str> {
            v.iter().map(|l| l.value.as_str()).collect()
        }
        let doc = JsonDoc {
            rules: self
                .rules
                .iter()
                .map(|r| JsonRule {
                    id: r.id.as_ref().map(|l| l.value.as_str()),
                    allowed_origins: strs(&r.allowed_origins),
                    allowed_methods: strs(&r.allowed_methods),
                    allowed_headers: strs(&r.allowed_headers),
                    expose_headers: strs(&r.expose_headers),
                    max_age_seconds: r.max_age_seconds.as_ref().map(|l| {
                        l.value
                            .parse::<u64>()
                            .map_or_else(|_| l.value.clone().into(), Into::into)
                    }),
                })
                .collect(),
        };
        serde_json::to_string_pretty(&doc).unwrap_or_default()
    }
}

/// Which rule field an element fills.
#[derive(Clone, Copy)]
enum Field {
    Id,
    Origin,
    Method,
    Header,
    Expose,
    MaxAge,
}

impl Field {
    fn from_name(name: &str) -> Option<Field> {
        Some(match name {
            "ID" => Field::Id,
            "AllowedOrigin" => Field::Origin,
            "AllowedMethod" => Field::Method,
            "AllowedHeader" => Field::Header,
            "ExposeHeader" => Field::Expose,
            "MaxAgeSeconds" => Field::MaxAge,
            _ => return None,
        })
    }
}

/// Where the reader stands in the (fixed, three-level) document tree.
enum Level {
    /// Before the root element.
    Prolog,
    /// Inside `<CORSConfiguration>`, between rules.
    Config,
    /// Inside a `<CORSRule>`, between fields.
    Rule(RuleDoc),
    /// Inside a field of a rule, collecting its text.
    Field(RuleDoc, Field, String, Pos),
    /// After the root element closed.
    Done,
}

struct XmlReader<'a> {
    text: &'a str,
    reader: Reader<&'a [u8]>,
    doc: Document,
    problems: Vec<Problem>,
}

impl<'a> XmlReader<'a> {
    fn new(text: &'a str) -> Self {
        let mut reader = Reader::from_str(text);
        reader.config_mut().check_end_names = true;
        XmlReader {
            text,
            reader,
            doc: Document::default(),
            problems: Vec::new(),
        }
    }

    fn pos(&self, offset: u64) -> Pos {
        Pos::at(self.text, usize::try_from(offset).unwrap_or(usize::MAX))
    }

    fn problem(&mut self, kind: ProblemKind, offset: u64) {
        let pos = self.pos(offset);
        self.problems.push(Problem::new(kind).at(Some(pos)));
    }

    /// The document, or every problem found and, when they were all recoverable, the document
    /// read around them.
    fn read(mut self) -> Result<Document, (Option<Document>, ConfigError)> {
        let mut level = Level::Prolog;
        loop {
            let start = self.reader.buffer_position();
            let event = match self.reader.read_event() {
                Ok(event) => event,
                Err(e) => {
                    let at = self.reader.error_position();
                    self.problem(ProblemKind::NotWellFormed(e.to_string()), at);
                    break;
                }
            };
            level = match (level, event) {
                (level, Event::Comment(_) | Event::Decl(_) | Event::PI(_)) => level,
                (_, Event::DocType(_)) => {
                    self.problem(ProblemKind::DocType, start);
                    break;
                }
                (Level::Done, Event::Eof) => break,
                (_, Event::Eof) => {
                    let what = "the document ends before <CORSConfiguration> is closed";
                    self.problem(ProblemKind::NotWellFormed(what.into()), start);
                    break;
                }
                (Level::Prolog, Event::Start(e)) => {
                    if e.local_name().as_ref() == "CORSConfiguration" {
                        Level::Config
                    } else {
                        self.problem(ProblemKind::WrongRoot(name_of(&e)), start);
                        break;
                    }
                }
                (Level::Prolog, Event::Empty(e)) => {
                    if e.local_name().as_ref() == "CORSConfiguration" {
                        Level::Done
                    } else {
                        self.problem(ProblemKind::WrongRoot(name_of(&e)), start);
                        break;
                    }
                }
                (Level::Config, Event::Start(e)) if e.local_name().as_ref() == "CORSRule" => {
                    Level::Rule(RuleDoc {
                        pos: Some(self.pos(start)),
                        ..RuleDoc::default()
                    })
                }
                (Level::Config, Event::Empty(e)) if e.local_name().as_ref() == "CORSRule" => {
                    self.doc.rules.push(RuleDoc {
                        pos: Some(self.pos(start)),
                        ..RuleDoc::default()
                    });
                    Level::Config
                }
                (Level::Config, Event::End(_)) => Level::Done,
                (Level::Rule(rule), Event::Start(e)) => match Field::from_name(local(&e)) {
                    Some(field) => Level::Field(rule, field, String::new(), self.pos(start)),
                    None => {
                        self.unexpected(&e, "CORSRule", start, true);
                        Level::Rule(rule)
                    }
                },
                (Level::Rule(mut rule), Event::Empty(e)) => {
                    match Field::from_name(local(&e)) {
                        Some(field) => {
                            let pos = self.pos(start);
                            self.store(&mut rule, field, String::new(), pos);
                        }
                        None => self.unexpected(&e, "CORSRule", start, false),
                    }
                    Level::Rule(rule)
                }
                (Level::Rule(rule), Event::End(_)) => {
                    self.doc.rules.push(rule);
                    Level::Config
                }
                (Level::Field(rule, field, mut text, pos), Event::Text(t)) => {
                    text.push_str(&t.xml10_content());
                    Level::Field(rule, field, text, pos)
                }
                (Level::Field(rule, field, mut text, pos), Event::CData(t)) => {
                    text.push_str(&t.xml10_content());
                    Level::Field(rule, field, text, pos)
                }
                (Level::Field(rule, field, mut text, pos), Event::GeneralRef(r)) => {
                    match resolve_reference(&r) {
                        Some(s) => text.push_str(&s),
                        None => {
                            let what = format!("undefined entity &{};", r.xml10_content());
                            self.problem(ProblemKind::NotWellFormed(what), start);
                            break;
                        }
                    }
                    Level::Field(rule, field, text, pos)
                }
                (Level::Field(mut rule, field, text, pos), Event::End(_)) => {
                    self.store(&mut rule, field, text, pos);
                    Level::Rule(rule)
                }
                (Level::Field(rule, field, text, pos), Event::Start(e)) => {
                    self.unexpected(&e, field_name(field), start, true);
                    Level::Field(rule, field, text, pos)
                }
                (Level::Field(rule, field, text, pos), Event::Empty(e)) => {
                    self.unexpected(&e, field_name(field), start, false);
                    Level::Field(rule, field, text, pos)
                }
                (level, Event::Text(t)) => {
                    let content = t.xml10_content();
                    if !content.trim().is_empty() {
                        let shown: String = content.trim().chars().take(40).collect();
                        self.problem(ProblemKind::UnexpectedText(shown), start);
                    }
                    level
                }
                (level @ (Level::Config | Level::Done), Event::Start(e)) => {
                    let parent = if matches!(level, Level::Done) {
                        "the document"
                    } else {
                        "CORSConfiguration"
                    };
                    self.unexpected(&e, parent, start, true);
                    level
                }
                (level @ (Level::Config | Level::Done), Event::Empty(e)) => {
                    let parent = if matches!(level, Level::Done) {
                        "the document"
                    } else {
                        "CORSConfiguration"
                    };
                    self.unexpected(&e, parent, start, false);
                    level
                }
                (level, Event::CData(_) | Event::GeneralRef(_)) => {
                    self.problem(ProblemKind::UnexpectedText("character data".into()), start);
                    level
                }
                (level, Event::End(_)) => level,
            };
            if !self.problems.is_empty() && !self.recoverable() {
                break;
            }
        }
        if self.problems.is_empty() {
            return Ok(self.doc);
        }
        let doc = self.recoverable().then_some(self.doc);
        Err((
            doc,
            ConfigError {
                problems: self.problems,
            },
        ))
    }

    /// Structural surprises are reported and skipped so that later problems are found too; a
    /// reader error ends the read.
    fn recoverable(&self) -> bool {
        self.problems.iter().all(|p| {
            matches!(
                p.kind,
                ProblemKind::UnexpectedElement { .. } | ProblemKind::UnexpectedText(_)
            )
        })
    }

    /// Reports an element that has no place here and skips its whole subtree.
    fn unexpected(&mut self, e: &BytesStart<'_>, parent: &str, start: u64, has_content: bool) {
        let element = name_of(e);
        self.problem(
            ProblemKind::UnexpectedElement {
                element,
                parent: parent.to_string(),
            },
            start,
        );
        if has_content {
            let end = e.to_end().into_owned();
            if let Err(err) = self.reader.read_to_end(end.name()) {
                let at = self.reader.error_position();
                self.problem(ProblemKind::NotWellFormed(err.to_string()), at);
            }
        }
    }

    fn store(&mut self, rule: &mut RuleDoc, field: Field, text: String, pos: Pos) {
        let value = Located {
            value: text,
            pos: Some(pos),
        };
        let single = |slot: &mut Option<Located<String>>, problems: &mut Vec<Problem>| {
            if slot.is_some() {
                let kind = ProblemKind::DuplicateElement(field_name(field));
                problems.push(Problem::new(kind).at(Some(pos)));
            } else {
                *slot = Some(value.clone());
            }
        };
        match field {
            Field::Id => single(&mut rule.id, &mut self.problems),
            Field::MaxAge => single(&mut rule.max_age_seconds, &mut self.problems),
            Field::Origin => rule.allowed_origins.push(value),
            Field::Method => rule.allowed_methods.push(value),
            Field::Header => rule.allowed_headers.push(value),
            Field::Expose => rule.expose_headers.push(value),
        }
    }
}

fn field_name(field: Field) -> &'static str {
    match field {
        Field::Id => "ID",
        Field::Origin => "AllowedOrigin",
        Field::Method => "AllowedMethod",
        Field::Header => "AllowedHeader",
        Field::Expose => "ExposeHeader",
        Field::MaxAge => "MaxAgeSeconds",
    }
}

fn local<'e>(e: &'e BytesStart<'_>) -> &'e str {
    e.local_name().into_inner()
}

fn name_of(e: &BytesStart<'_>) -> String {
    e.name().as_ref().to_string()
}

/// Only XML's five predefined entities and character references exist: a CORS document has no
/// DTD, so any other entity is an error (and nothing is ever expanded recursively).
fn resolve_reference<'r>(r: &'r BytesRef<'_>) -> Option<Cow<'r, str>> {
    match r.resolve_char_ref() {
        Ok(Some(c)) => Some(Cow::Owned(c.to_string())),
        Ok(None) => {
            let name = r.xml10_content();
            quick_xml::escape::resolve_predefined_entity(&name).map(Cow::Borrowed)
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn values(v: &[Located<String>]) -> Vec<&str> {
        v.iter().map(|l| l.value.as_str()).collect()
    }

    #[test]
    fn reads_xml_with_namespace_and_any_element_order() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<CORSConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <CORSRule>
    <AllowedMethod>GET</AllowedMethod>
    <ID>one</ID>
    <AllowedOrigin>https://a.example</AllowedOrigin>
    <MaxAgeSeconds>10</MaxAgeSeconds>
    <AllowedMethod>PUT</AllowedMethod>
    <ExposeHeader>ETag</ExposeHeader>
    <AllowedHeader>x-amz-*</AllowedHeader>
  </CORSRule>
</CORSConfiguration>"#;
        let doc = Document::parse(xml.as_bytes()).expect("valid document");
        let rule = &doc.rules[0];
        assert_eq!(rule.id.as_ref().map(|l| l.value.as_str()), Some("one"));
        assert_eq!(values(&rule.allowed_methods), ["GET", "PUT"]);
        assert_eq!(values(&rule.allowed_origins), ["https://a.example"]);
        assert_eq!(values(&rule.allowed_headers), ["x-amz-*"]);
        assert_eq!(values(&rule.expose_headers), ["ETag"]);
        assert_eq!(
            rule.max_age_seconds.as_ref().map(|l| l.value.as_str()),
            Some("10")
        );
        assert_eq!(rule.pos, Some(Pos { line: 3, col: 3 }));
        assert_eq!(rule.allowed_methods[1].pos, Some(Pos { line: 8, col: 5 }));
    }

    #[test]
    fn reads_prefixed_namespace_and_escapes() {
        let xml = r#"<s3:CORSConfiguration xmlns:s3="http://s3.amazonaws.com/doc/2006-03-01/"><s3:CORSRule><s3:AllowedOrigin>https://a&amp;b&#x2e;example</s3:AllowedOrigin><s3:AllowedMethod><![CDATA[GET]]></s3:AllowedMethod></s3:CORSRule></s3:CORSConfiguration>"#;
        let doc = Document::parse(xml.as_bytes()).expect("valid document");
        assert_eq!(
            values(&doc.rules[0].allowed_origins),
            ["https://a&b.example"]
        );
        assert_eq!(values(&doc.rules[0].allowed_methods), ["GET"]);
    }

    #[test]
    fn reads_aws_cli_json() {
        let json = r#"{"CORSRules":[{"ID":"x","AllowedOrigins":["*"],"AllowedMethods":["GET"],"AllowedHeaders":["*"],"ExposeHeaders":["ETag"],"MaxAgeSeconds":3000}]}"#;
        let doc = Document::parse(json.as_bytes()).expect("valid document");
        let rule = &doc.rules[0];
        assert_eq!(values(&rule.allowed_origins), ["*"]);
        assert_eq!(
            rule.max_age_seconds.as_ref().map(|l| l.value.as_str()),
            Some("3000")
        );
    }

    #[test]
    fn unknown_elements_are_all_reported_with_positions() {
        let xml = "<CORSConfiguration>\n<CORSRule><Foo>1</Foo><AllowedOrigin>*</AllowedOrigin>\n<Bar/></CORSRule>\n</CORSConfiguration>";
        let err = Document::parse(xml.as_bytes()).expect_err("unknown elements");
        let positions: Vec<_> = err.problems.iter().map(|p| p.pos).collect();
        assert_eq!(
            positions,
            [
                Some(Pos { line: 2, col: 11 }),
                Some(Pos { line: 3, col: 1 })
            ]
        );
    }

    fn located(values: Vec<String>) -> Vec<Located<String>> {
        values.into_iter().map(Located::new).collect()
    }

    /// Any text a field may hold, markup characters included.
    fn text() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 *:/.<>&'\"é-]{0,12}"
    }

    fn rule() -> impl Strategy<Value = RuleDoc> {
        let list = || proptest::collection::vec(text(), 0..3);
        (
            proptest::option::of(text()),
            list(),
            list(),
            list(),
            list(),
            proptest::option::of("[0-9]{1,6}"),
        )
            .prop_map(|(id, o, m, h, e, age)| RuleDoc {
                pos: None,
                id: id.map(Located::new),
                allowed_origins: located(o),
                allowed_methods: located(m),
                allowed_headers: located(h),
                expose_headers: located(e),
                max_age_seconds: age.map(Located::new),
            })
    }

    proptest! {
        #[test]
        fn xml_and_json_round_trip(rules in proptest::collection::vec(rule(), 0..4)) {
            let doc = Document { rules };
            prop_assert_eq!(&Document::parse(doc.to_xml().as_bytes()).expect("own XML reads back"), &doc);
            // JSON writes MaxAgeSeconds as a number; leading zeros do not survive that.
            let json_doc = Document::parse(doc.to_json().as_bytes()).expect("own JSON reads back");
            prop_assert_eq!(json_doc.rules.len(), doc.rules.len());
            for (a, b) in json_doc.rules.iter().zip(&doc.rules) {
                prop_assert_eq!(&a.allowed_origins, &b.allowed_origins);
                prop_assert_eq!(&a.id, &b.id);
                let age = |r: &RuleDoc| r.max_age_seconds.as_ref().and_then(|l| l.value.parse::<u64>().ok());
                prop_assert_eq!(age(a), age(b));
            }
        }
    }

    #[test]
    fn doctype_and_unknown_entities_are_refused() {
        let xml = r#"<!DOCTYPE x [<!ENTITY e "boom">]><CORSConfiguration/>"#;
        let err = Document::parse(xml.as_bytes()).expect_err("doctype");
        assert_eq!(err.problems[0].kind, ProblemKind::DocType);
        let xml = "<CORSConfiguration><CORSRule><ID>&e;</ID></CORSRule></CORSConfiguration>";
        let err = Document::parse(xml.as_bytes()).expect_err("entity");
        assert!(matches!(
            err.problems[0].kind,
            ProblemKind::NotWellFormed(_)
        ));
    }
}
