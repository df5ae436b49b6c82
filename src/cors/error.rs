//! Configuration errors: every problem S3's `PutBucketCors` would reject, as data.
//!
//! Each error carries the S3 error code a bucket would answer with, the rule it belongs to and
//! the line and column of the offending element (or value, in JSON), so that a user can go
//! straight to it. Messages speak the document's own form: `<AllowedOrigin>` for XML,
//! `"AllowedOrigins"` for the AWS CLI's JSON.

use std::fmt;

use super::document::Form;

/// The S3 error code a bucket answers a rejected `PutBucketCors` with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum S3Code {
    MalformedXML,
    InvalidRequest,
}

impl S3Code {
    pub fn as_str(self) -> &'static str {
        match self {
            S3Code::MalformedXML => "MalformedXML",
            S3Code::InvalidRequest => "InvalidRequest",
        }
    }
}

impl fmt::Display for S3Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A 1-based line and column (in characters) inside a rules document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl Pos {
    /// The first character of a document.
    pub(crate) const START: Pos = Pos { line: 1, col: 1 };

    /// The position of byte `offset` in `text`. Offsets past the end clamp to the end.
    pub fn at(text: &str, offset: usize) -> Pos {
        let mut end = offset.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let before = &text[..end];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
        let col = before[line_start..].chars().count() + 1;
        Pos {
            line: u32::try_from(line).unwrap_or(u32::MAX),
            col: u32::try_from(col).unwrap_or(u32::MAX),
        }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// Which rule an error belongs to: its 1-based index in the document and its `ID`, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRef {
    pub index: usize,
    pub id: Option<String>,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.id {
            Some(id) => write!(f, "CORSRule #{} (ID \"{}\")", self.index, id),
            None => write!(f, "CORSRule #{}", self.index),
        }
    }
}

/// What is wrong with a rules document.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProblemKind {
    #[error("the document is not valid UTF-8")]
    NotUtf8,
    #[error("the XML is not well-formed: {0}")]
    NotWellFormed(String),
    #[error("{0}")]
    InvalidJson(JsonProblem),
    #[error("a DOCTYPE is not allowed in a CORS configuration (entities are never expanded)")]
    DocType,
    #[error("the root element must be <CORSConfiguration>, found <{0}>")]
    WrongRoot(String),
    #[error("unexpected element <{element}> inside <{parent}>")]
    UnexpectedElement { element: String, parent: String },
    #[error("unexpected text {0:?} outside a rule's fields")]
    UnexpectedText(String),
    #[error("<{0}> appears more than once in one rule")]
    DuplicateElement(&'static str),
    #[error("{}", no_rules(*.0))]
    NoRules(Form),
    #[error("{}", missing_field(*.0, "AllowedOrigin"))]
    MissingOrigin(Form),
    #[error("{}", missing_field(*.0, "AllowedMethod"))]
    MissingMethod(Form),
    #[error("Found unsupported HTTP method in CORS config. Unsupported method is {0}")]
    UnsupportedMethod(String),
    #[error("AllowedOrigin \"{0}\" can not have more than one wildcard.")]
    OriginWildcards(String),
    #[error("AllowedHeader \"{0}\" can not have more than one wildcard.")]
    HeaderWildcards(String),
    #[error("The number of CORS rules should not exceed allowed limit of 100 rules. (found {0})")]
    TooManyRules(usize),
    #[error("the document is {size} bytes; a CORS configuration may be at most {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("the ID is {0} characters long; at most 255 are allowed")]
    IdTooLong(usize),
    #[error("MaxAgeSeconds {0:?} is not an integer from 0 to 2147483647")]
    BadMaxAge(String),
    #[error("ExposeHeader {0:?} can not be sent in an HTTP header")]
    BadExposeHeader(String),
}

/// What is wrong with a JSON document that is not the AWS CLI's `CORSConfiguration` shape.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JsonProblem {
    #[error("the JSON is not well-formed: {0}")]
    Syntax(String),
    #[error(
        "the document must be a JSON object holding a \"CORSRules\" array (the form of `aws s3api get-bucket-cors`), found {0}"
    )]
    NotAnObject(&'static str),
    #[error("unknown key \"{key}\" in {within}; the keys allowed there are {allowed}")]
    UnknownKey {
        key: String,
        within: &'static str,
        allowed: &'static str,
    },
    #[error("{}\"{key}\" must be {expected}, found {found}", if *.entry { "each entry of " } else { "" })]
    WrongType {
        key: &'static str,
        /// The problem is an item of the array `key`, not `key`'s value itself.
        entry: bool,
        expected: &'static str,
        found: &'static str,
    },
    #[error("the key \"{0}\" appears more than once in one object")]
    DuplicateKey(String),
}

fn no_rules(form: Form) -> &'static str {
    match form {
        Form::Xml => "the configuration has no <CORSRule>",
        Form::Json => "the configuration has no rule: \"CORSRules\" is missing or empty",
    }
}

/// `AllowedOrigin` is an element per value in XML, an array named in the plural in JSON.
fn missing_field(form: Form, xml_element: &str) -> String {
    match form {
        Form::Xml => format!("the rule has no <{xml_element}>"),
        Form::Json => format!("the rule's \"{xml_element}s\" is missing or empty"),
    }
}

impl ProblemKind {
    /// The code S3 answers `PutBucketCors` with for this problem.
    pub fn code(&self) -> S3Code {
        match self {
            ProblemKind::UnsupportedMethod(_)
            | ProblemKind::OriginWildcards(_)
            | ProblemKind::HeaderWildcards(_)
            | ProblemKind::TooManyRules(_)
            | ProblemKind::TooLarge { .. }
            | ProblemKind::IdTooLong(_)
            | ProblemKind::BadExposeHeader(_) => S3Code::InvalidRequest,
            _ => S3Code::MalformedXML,
        }
    }
}

/// One problem found in a rules document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub rule: Option<RuleRef>,
    pub pos: Option<Pos>,
}

impl Problem {
    pub fn new(kind: ProblemKind) -> Problem {
        Problem {
            kind,
            rule: None,
            pos: None,
        }
    }

    pub fn at(mut self, pos: Option<Pos>) -> Problem {
        self.pos = pos;
        self
    }

    pub(crate) fn in_rule(mut self, rule: RuleRef) -> Problem {
        self.rule = Some(rule);
        self
    }

    pub fn code(&self) -> S3Code {
        self.kind.code()
    }

    /// Whether this is a rule's missing `AllowedOrigins`/`AllowedMethods` that only restates a
    /// JSON value of the wrong type among `shape`: `"AllowedOrigins": "*"` is one mistake, and
    /// is reported once.
    pub(crate) fn restates(&self, shape: &[Problem]) -> bool {
        let key = match self.kind {
            ProblemKind::MissingOrigin(Form::Json) => "AllowedOrigins",
            ProblemKind::MissingMethod(Form::Json) => "AllowedMethods",
            _ => return false,
        };
        let index = self.rule.as_ref().map(|r| r.index);
        shape.iter().any(|p| {
            p.rule.as_ref().map(|r| r.index) == index
                && matches!(
                    &p.kind,
                    ProblemKind::InvalidJson(JsonProblem::WrongType { key: k, .. })
                        if *k == key || *k == "CORSRules"
                )
        })
    }
}

/// `LINE:COL: CODE: message`, the form `corsgate check` prints after `FILE:`. A problem about
/// the whole document that has no better place is put at `1:1`, so every line has the same
/// shape for editors and scripts.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: ", self.pos.unwrap_or(Pos::START), self.code())?;
        if let Some(rule) = &self.rule {
            write!(f, "{rule}: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

/// A rejected rules document: every problem found, in document order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.problems))]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

fn render(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    lines.join("\n")
}

impl From<Problem> for ConfigError {
    fn from(problem: Problem) -> Self {
        ConfigError {
            problems: vec![problem],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_counts_lines_and_characters() {
        let text = "ab\nçd\nef";
        assert_eq!(Pos::at(text, 0), Pos { line: 1, col: 1 });
        assert_eq!(Pos::at(text, 3), Pos { line: 2, col: 1 });
        // 'ç' is two bytes but one column.
        assert_eq!(Pos::at(text, 5), Pos { line: 2, col: 2 });
        assert_eq!(Pos::at(text, 1000), Pos { line: 3, col: 3 });
    }

    #[test]
    fn problem_renders_position_code_rule_and_message() {
        let p = Problem::new(ProblemKind::UnsupportedMethod("get".into()))
            .in_rule(RuleRef {
                index: 2,
                id: Some("uploads".into()),
            })
            .at(Some(Pos { line: 7, col: 5 }));
        assert_eq!(
            p.to_string(),
            "7:5: InvalidRequest: CORSRule #2 (ID \"uploads\"): Found unsupported HTTP method in CORS config. Unsupported method is get"
        );
    }

    #[test]
    fn a_problem_without_a_place_is_put_at_the_start() {
        let p = Problem::new(ProblemKind::TooLarge {
            size: 70_000,
            limit: 65_536,
        });
        assert!(p.to_string().starts_with("1:1: InvalidRequest: "), "{p}");
    }
}
