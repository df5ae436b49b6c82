//! Configuration errors: every problem S3's `PutBucketCors` would reject, as data.
//!
//! Each error carries the S3 error code a bucket would answer with, the rule it belongs to and,
//! when the document gives one, the line and column of the offending element, so that a user can
//! go straight to it.

use std::fmt;

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
    #[error("the JSON is not valid: {0}")]
    InvalidJson(String),
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
    #[error("the configuration has no <CORSRule>")]
    NoRules,
    #[error("the rule has no <AllowedOrigin>")]
    MissingOrigin,
    #[error("the rule has no <AllowedMethod>")]
    MissingMethod,
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

    pub fn in_rule(mut self, rule: RuleRef) -> Problem {
        self.rule = Some(rule);
        self
    }

    pub fn code(&self) -> S3Code {
        self.kind.code()
    }
}

/// `LINE:COL: CODE: message`, the form `corsgate check` prints after the file name.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(pos) = self.pos {
            write!(f, "{pos}: ")?;
        }
        write!(f, "{}: ", self.code())?;
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
}
