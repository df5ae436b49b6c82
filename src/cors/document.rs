//! The CORS configuration document as written: S3's `CORSConfiguration` XML or the AWS CLI's
//! JSON form, read into plain strings with the position of every element or value.
//!
//! Nothing here judges the values (compiling a [`Policy`](super::Policy) does); this module
//! only knows the document's shape. XML is read with quick-xml's event reader rather than its serde deserializer because
//! every problem must name the line and column of the element it is about, and serde drops
//! positions. JSON is checked for syntax by serde_json (its messages and positions are good),
//! then walked by a small reader of our own for the same reason. Both forms are written back
//! out by `to_xml`/`to_json`, which round-trip through `parse`.

use std::borrow::Cow;

use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::reader::Reader;
use serde::Serialize;

use super::error::{ConfigError, JsonProblem, Pos, Problem, ProblemKind, RuleRef};

/// Which form a document was written in, so that problems can be worded in its terms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Form {
    /// S3's `CORSConfiguration` XML.
    #[default]
    Xml,
    /// The AWS CLI's `{"CORSRules": [...]}`.
    Json,
}

/// A value read from the document, with where it was found.
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

/// One `CORSRule`, every field as the text the document holds.
/// Equality ignores positions, as for [`Located`].
#[derive(Clone, Debug, Default, Eq)]
pub struct RuleDoc {
    pub pos: Option<Pos>,
    pub id: Option<Located<String>>,
    pub allowed_origins: Vec<Located<String>>,
    pub allowed_methods: Vec<Located<String>>,
    pub allowed_headers: Vec<Located<String>>,
    pub expose_headers: Vec<Located<String>>,
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

/// A whole configuration document. Equality compares the rules only: the same rules written as
/// XML or JSON are the same configuration.
#[derive(Clone, Debug, Default, Eq)]
pub struct Document {
    pub rules: Vec<RuleDoc>,
    pub form: Form,
    /// Where the list of rules is: the `<CORSConfiguration>` element, or the JSON `"CORSRules"`
    /// key (the top-level object when there is none). Problems about the whole document point
    /// here.
    pub pos: Option<Pos>,
}

impl PartialEq for Document {
    fn eq(&self, other: &Self) -> bool {
        self.rules == other.rules
    }
}

/// S3's namespace, written on output so the document can be uploaded as it is.
pub(crate) const S3_NAMESPACE: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// Where a document is larger than S3 accepts, we do not even read it.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

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
    /// meaning clear (an unknown element or key, stray text, a repeated `ID`, a value of the
    /// wrong JSON type), so that its values can be judged too and every problem reported at
    /// once. The document is `None` when it could not be read at all.
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
                .at(Some(Pos::START))
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
        // `[` too: a bare rules array (`aws s3api get-bucket-cors --query CORSRules`) is a JSON
        // mistake, and deserves a JSON answer rather than an XML one.
        if text.trim_start().starts_with(['{', '[']) {
            JsonReader::read(text)
        } else {
            XmlReader::new(text).read()
        }
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
                        self.doc.pos = Some(self.pos(start));
                        Level::Config
                    } else {
                        self.problem(ProblemKind::WrongRoot(name_of(&e)), start);
                        break;
                    }
                }
                (Level::Prolog, Event::Empty(e)) => {
                    if e.local_name().as_ref() == "CORSConfiguration" {
                        self.doc.pos = Some(self.pos(start));
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

    /// Structural surprises are reported and skipped (a repeated `ID` or `MaxAgeSeconds` keeps
    /// its first value) so that later problems are found too; a reader error ends the read.
    fn recoverable(&self) -> bool {
        self.problems.iter().all(|p| {
            matches!(
                p.kind,
                ProblemKind::UnexpectedElement { .. }
                    | ProblemKind::UnexpectedText(_)
                    | ProblemKind::DuplicateElement(_)
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
        // Rules are added to the document when they close: this one is the next.
        let rule_ref = RuleRef {
            index: self.doc.rules.len() + 1,
            id: rule.id.as_ref().map(|id| id.value.clone()),
        };
        let single = |slot: &mut Option<Located<String>>, problems: &mut Vec<Problem>| {
            if slot.is_some() {
                let kind = ProblemKind::DuplicateElement(field_name(field));
                problems.push(Problem::new(kind).in_rule(rule_ref).at(Some(pos)));
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

/// The keys a JSON rule may have, as `JsonProblem::UnknownKey` lists them.
const JSON_RULE_KEYS: &str = "\"ID\", \"AllowedOrigins\", \"AllowedMethods\", \"AllowedHeaders\", \
                              \"ExposeHeaders\" and \"MaxAgeSeconds\"";

/// The AWS CLI's JSON form, walked over text serde_json has already found well-formed (so the
/// walk never meets a syntax error and never nests deeper than serde_json allows): every rule
/// and value keeps its position, and every shape problem is reported, not only the first.
struct JsonReader<'a> {
    text: &'a str,
    /// Byte offset of the next unread character.
    at: usize,
    /// Positions are asked for in document order: counting on from the last one keeps the walk
    /// linear in the document's size.
    counted: (usize, Pos),
    /// The rule being read (1-based), named by the problems found inside it.
    rule: Option<usize>,
    problems: Vec<Problem>,
}

impl<'a> JsonReader<'a> {
    fn read(text: &'a str) -> Result<Document, (Option<Document>, ConfigError)> {
        // Read into a `Value` and dropped: its errors say more than `IgnoredAny`'s ("trailing
        // comma" where the other says "expected value").
        if let Err(e) = serde_json::from_str::<serde_json::Value>(text) {
            let problem = Problem::new(ProblemKind::InvalidJson(JsonProblem::Syntax(
                syntax_message(&e),
            )));
            return Err((None, problem.at(Some(syntax_pos(text, &e))).into()));
        }
        let mut reader = JsonReader {
            text,
            at: 0,
            counted: (0, Pos::START),
            rule: None,
            problems: Vec::new(),
        };
        reader.skip_ws();
        let mut doc = Document {
            rules: Vec::new(),
            form: Form::Json,
            pos: Some(reader.pos_here()),
        };
        if reader.peek() != Some(b'{') {
            let found = kind_of(reader.peek());
            reader.problem(JsonProblem::NotAnObject(found), doc.pos);
            return Err((None, reader.into_error()));
        }
        reader.object(|r, key, key_pos| match key.as_str() {
            "CORSRules" => {
                doc.pos = Some(key_pos);
                doc.rules = r.rules();
            }
            _ => r.unknown(key, key_pos, "the document's object", "\"CORSRules\""),
        });
        if reader.problems.is_empty() {
            Ok(doc)
        } else {
            Err((Some(doc), reader.into_error()))
        }
    }

    fn into_error(self) -> ConfigError {
        ConfigError {
            problems: self.problems,
        }
    }

    fn problem(&mut self, problem: JsonProblem, pos: Option<Pos>) {
        let mut p = Problem::new(ProblemKind::InvalidJson(problem)).at(pos);
        if let Some(index) = self.rule {
            p = p.in_rule(RuleRef { index, id: None });
        }
        self.problems.push(p);
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.at += 1;
        }
    }

    fn pos_here(&mut self) -> Pos {
        let (from, mut pos) = self.counted;
        let Some(between) = self.text.get(from..self.at) else {
            return Pos::at(self.text, self.at);
        };
        for c in between.chars() {
            if c == '\n' {
                pos.line = pos.line.saturating_add(1);
                pos.col = 1;
            } else {
                pos.col = pos.col.saturating_add(1);
            }
        }
        self.counted = (self.at, pos);
        pos
    }

    /// Past a string, its quotes included (escapes are one backslash and the byte after it, or
    /// the start of a `\uXXXX` whose hex digits never contain a quote).
    fn skip_string(&mut self) {
        self.at += 1;
        while let Some(b) = self.peek() {
            self.at += if b == b'\\' { 2 } else { 1 };
            if b == b'"' {
                return;
            }
        }
    }

    /// A string's value; the reader stands on its opening quote.
    fn string(&mut self) -> String {
        let start = self.at;
        self.skip_string();
        let raw = self.text.get(start..self.at).unwrap_or_default();
        serde_json::from_str(raw).unwrap_or_else(|_| raw.trim_matches('"').to_string())
    }

    /// Past a number, `true`, `false` or `null`, returning its text.
    fn scalar(&mut self) -> &'a str {
        let start = self.at;
        while let Some(b) = self.peek() {
            if matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n') {
                break;
            }
            self.at += 1;
        }
        self.text.get(start..self.at).unwrap_or_default()
    }

    /// Past one whole value, however deep, without recursion.
    fn skip_value(&mut self) {
        let mut depth = 0usize;
        loop {
            self.skip_ws();
            match self.peek() {
                None => return,
                Some(b'{' | b'[') => {
                    depth += 1;
                    self.at += 1;
                }
                Some(b'}' | b']') => {
                    self.at += 1;
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return;
                    }
                }
                Some(b',' | b':') => self.at += 1,
                Some(b'"') => {
                    self.skip_string();
                    if depth == 0 {
                        return;
                    }
                }
                Some(_) => {
                    self.scalar();
                    if depth == 0 {
                        return;
                    }
                }
            }
        }
    }

    /// Calls `on_key` with the reader on each value of the object the reader stands on; the
    /// callback reads exactly that value. A repeated key is reported and its value skipped.
    fn object(&mut self, mut on_key: impl FnMut(&mut Self, String, Pos)) {
        self.at += 1;
        let mut seen = std::collections::HashSet::new();
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                // `}`, the only other thing well-formed JSON has here.
                self.at += 1;
                return;
            }
            let key_pos = self.pos_here();
            let key = self.string();
            self.skip_ws();
            self.at += 1; // `:`
            self.skip_ws();
            if seen.insert(key.clone()) {
                on_key(self, key, key_pos);
            } else {
                self.problem(JsonProblem::DuplicateKey(key), Some(key_pos));
                self.skip_value();
            }
            self.skip_ws();
            if self.peek() == Some(b',') {
                self.at += 1;
            }
        }
    }

    /// Calls `on_item` with the reader on each item of the array the reader stands on.
    fn array(&mut self, mut on_item: impl FnMut(&mut Self)) {
        self.at += 1;
        loop {
            self.skip_ws();
            match self.peek() {
                None => return,
                Some(b']') => {
                    self.at += 1;
                    return;
                }
                Some(_) => on_item(self),
            }
            self.skip_ws();
            if self.peek() == Some(b',') {
                self.at += 1;
            }
        }
    }

    fn unknown(&mut self, key: String, pos: Pos, within: &'static str, allowed: &'static str) {
        self.problem(
            JsonProblem::UnknownKey {
                key,
                within,
                allowed,
            },
            Some(pos),
        );
        self.skip_value();
    }

    /// Reports the value the reader stands on (`key`'s, or an item of `key`'s array when
    /// `entry`) as not of the `expected` type, and skips it.
    fn wrong_type(&mut self, key: &'static str, entry: bool, expected: &'static str) {
        let pos = self.pos_here();
        let found = kind_of(self.peek());
        self.problem(
            JsonProblem::WrongType {
                key,
                entry,
                expected,
                found,
            },
            Some(pos),
        );
        self.skip_value();
    }

    /// Every entry counts as a rule, an entry that is not an object too (as an empty rule), so
    /// that `CORSRule #N` is always the array's Nth entry.
    fn rules(&mut self) -> Vec<RuleDoc> {
        let mut rules = Vec::new();
        if self.peek() != Some(b'[') {
            self.wrong_type("CORSRules", false, "an array of rule objects");
            return rules;
        }
        self.array(|r| {
            r.rule = Some(rules.len() + 1);
            let before = r.problems.len();
            let rule = if r.peek() == Some(b'{') {
                r.rule_object()
            } else {
                let pos = Some(r.pos_here());
                r.wrong_type("CORSRules", true, "an object");
                RuleDoc {
                    pos,
                    ..RuleDoc::default()
                }
            };
            // The ID may come after the problems found before it: name it in all of them.
            if let Some(id) = &rule.id {
                for p in &mut r.problems[before..] {
                    if let Some(rule_ref) = &mut p.rule {
                        rule_ref.id = Some(id.value.clone());
                    }
                }
            }
            rules.push(rule);
            r.rule = None;
        });
        rules
    }

    fn rule_object(&mut self) -> RuleDoc {
        let mut rule = RuleDoc {
            pos: Some(self.pos_here()),
            ..RuleDoc::default()
        };
        self.object(|r, key, key_pos| match key.as_str() {
            "ID" => rule.id = r.optional_string("ID"),
            "AllowedOrigins" => rule.allowed_origins = r.strings("AllowedOrigins"),
            "AllowedMethods" => rule.allowed_methods = r.strings("AllowedMethods"),
            "AllowedHeaders" => rule.allowed_headers = r.strings("AllowedHeaders"),
            "ExposeHeaders" => rule.expose_headers = r.strings("ExposeHeaders"),
            "MaxAgeSeconds" => rule.max_age_seconds = r.max_age(),
            _ => r.unknown(key, key_pos, "a rule", JSON_RULE_KEYS),
        });
        rule
    }

    /// A string, or `null` for none.
    fn optional_string(&mut self, key: &'static str) -> Option<Located<String>> {
        match self.peek() {
            Some(b'"') => {
                let pos = self.pos_here();
                let value = self.string();
                Some(Located {
                    value,
                    pos: Some(pos),
                })
            }
            Some(b'n') => {
                self.scalar();
                None
            }
            _ => {
                self.wrong_type(key, false, "a string");
                None
            }
        }
    }

    fn strings(&mut self, key: &'static str) -> Vec<Located<String>> {
        let mut values = Vec::new();
        if self.peek() != Some(b'[') {
            self.wrong_type(key, false, "an array of strings");
            return values;
        }
        self.array(|r| {
            if r.peek() == Some(b'"') {
                let pos = r.pos_here();
                let value = r.string();
                values.push(Located {
                    value,
                    pos: Some(pos),
                });
            } else {
                r.wrong_type(key, true, "a string");
            }
        });
        values
    }

    /// The number's text as written, so that validation judges it as it judges XML's (and can
    /// say what was wrong with `3000.5`); a quoted number is read the same way.
    fn max_age(&mut self) -> Option<Located<String>> {
        let pos = self.pos_here();
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => Some(Located {
                value: self.scalar().to_string(),
                pos: Some(pos),
            }),
            Some(b'"') => Some(Located {
                value: self.string(),
                pos: Some(pos),
            }),
            Some(b'n') => {
                self.scalar();
                None
            }
            _ => {
                self.wrong_type("MaxAgeSeconds", false, "an integer");
                None
            }
        }
    }
}

/// What a JSON value is, from its first character, as a message names it.
fn kind_of(first: Option<u8>) -> &'static str {
    match first {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(_) => "a number",
        None => "nothing",
    }
}

/// serde_json's message without its ` at line L column C`: the position leads the line instead.
fn syntax_message(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    message
        .strip_suffix(&suffix)
        .map_or(message.clone(), str::to_string)
}

/// serde_json counts columns in bytes; ours are characters.
fn syntax_pos(text: &str, e: &serde_json::Error) -> Pos {
    let line_start = text
        .split_inclusive('\n')
        .take(e.line().saturating_sub(1))
        .map(str::len)
        .sum::<usize>();
    let line_len = text[line_start..]
        .find('\n')
        .unwrap_or(text.len() - line_start);
    let col_bytes = e.column().saturating_sub(1).min(line_len);
    Pos::at(text, line_start + col_bytes)
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
            let doc = Document { rules, ..Document::default() };
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

    fn json_problems(json: &str) -> Vec<String> {
        match Document::parse(json.as_bytes()) {
            Ok(_) => vec![],
            Err(e) => e.problems.iter().map(Problem::to_string).collect(),
        }
    }

    #[test]
    fn json_rules_and_values_have_positions() {
        let json = "{\"CORSRules\": [\n  {\"AllowedOrigins\": [\"https://é.example\", \"https://b.example\"],\n   \"MaxAgeSeconds\": 60}\n]}";
        let doc = Document::parse(json.as_bytes()).expect("valid");
        assert_eq!(doc.form, Form::Json);
        assert_eq!(doc.pos, Some(Pos { line: 1, col: 2 }));
        let rule = &doc.rules[0];
        assert_eq!(rule.pos, Some(Pos { line: 2, col: 3 }));
        // Columns count characters: 'é' is two bytes.
        assert_eq!(rule.allowed_origins[1].pos, Some(Pos { line: 2, col: 44 }));
        let max_age = rule.max_age_seconds.as_ref().expect("MaxAgeSeconds");
        assert_eq!(
            (max_age.value.as_str(), max_age.pos),
            ("60", Some(Pos { line: 3, col: 21 }))
        );
    }

    #[test]
    fn every_json_shape_problem_is_reported_once_in_json_terms() {
        let json = r#"{"CORSRules": [
  {"AllowedOrigins": ["*", 7], "AllowedMethod": ["GET"], "ID": "a", "ID": "b"},
  "not a rule",
  {"AllowedMethods": {"GET": true}, "MaxAgeSeconds": false, "Deep": [[[[{"x": [1]}]]]]}
], "Version": 2}"#;
        assert_eq!(
            json_problems(json),
            [
                "2:28: MalformedXML: CORSRule #1 (ID \"a\"): each entry of \"AllowedOrigins\" must be a string, found a number",
                "2:32: MalformedXML: CORSRule #1 (ID \"a\"): unknown key \"AllowedMethod\" in a rule; the keys allowed there are \"ID\", \"AllowedOrigins\", \"AllowedMethods\", \"AllowedHeaders\", \"ExposeHeaders\" and \"MaxAgeSeconds\"",
                "2:69: MalformedXML: CORSRule #1 (ID \"a\"): the key \"ID\" appears more than once in one object",
                // Every entry is a rule, so that the next one is still #3.
                "3:3: MalformedXML: CORSRule #2: each entry of \"CORSRules\" must be an object, found a string",
                "4:22: MalformedXML: CORSRule #3: \"AllowedMethods\" must be an array of strings, found an object",
                "4:54: MalformedXML: CORSRule #3: \"MaxAgeSeconds\" must be an integer, found a boolean",
                "4:61: MalformedXML: CORSRule #3: unknown key \"Deep\" in a rule; the keys allowed there are \"ID\", \"AllowedOrigins\", \"AllowedMethods\", \"AllowedHeaders\", \"ExposeHeaders\" and \"MaxAgeSeconds\"",
                "5:4: MalformedXML: unknown key \"Version\" in the document's object; the keys allowed there are \"CORSRules\"",
            ]
        );
    }

    #[test]
    fn json_that_is_not_the_cli_form_says_what_it_should_be() {
        assert_eq!(
            json_problems(r#"  [{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}]"#),
            [
                "1:3: MalformedXML: the document must be a JSON object holding a \"CORSRules\" array (the form of `aws s3api get-bucket-cors`), found an array"
            ]
        );
        assert_eq!(
            json_problems("{\"CORSRules\": {}}"),
            ["1:15: MalformedXML: \"CORSRules\" must be an array of rule objects, found an object"]
        );
    }

    #[test]
    fn json_syntax_errors_carry_serde_json_message_at_a_character_column() {
        assert_eq!(
            json_problems(
                "{\"CORSRules\": [\n  {\"ID\": \"é\", \"AllowedMethods\": [\"GET\",]}\n]}"
            ),
            ["2:40: MalformedXML: the JSON is not well-formed: trailing comma"]
        );
        let deep = format!("{{\"CORSRules\": {}{}}}", "[".repeat(200), "]".repeat(200));
        let problems = json_problems(&deep);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("recursion limit exceeded"),
            "{problems:?}"
        );
    }

    proptest! {
        #[test]
        fn any_json_ish_text_is_read_without_panic(body in "[{}\\[\\]\",:0-9a-zA-Z \n\\\\é-]{0,80}") {
            let text = format!("{{\"CORSRules\": [{body}");
            let _ = Document::parse(text.as_bytes());
            let _ = Document::parse(body.as_bytes());
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
