//! The configuration file as a TOML document with positions: what turns serde's first error into
//! every problem of the file, each with its line and key path.
//!
//! serde stops at the first unknown key or value of the wrong type. Here the document is read
//! again and again: each error is recorded with its line and key path, the entry it is about is
//! taken out, and what is left is read again, until it reads. The checks of values that follow
//! name their keys (`route[2].origin`), which [`Document::line_of`] finds in the document.
//!
//! Nothing here knows the schema: the `Raw*` structs (with `deny_unknown_fields`) are the schema,
//! so a key added to them is known here at once.

use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use super::KeyProblem;

/// Reading stops after this many unknown keys and wrong types: a file that far off is not a
/// configuration with typos.
const MAX_READS: usize = 100;

/// A parsed TOML document and the text it came from.
pub(super) struct Document<'i> {
    text: &'i str,
    root: Spanned<DeTable<'i>>,
}

/// One step of a path into the document.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Key(String),
    Item(usize),
}

impl<'i> Document<'i> {
    /// Parses `text`; every TOML syntax error, each with its line, when it is not TOML.
    pub(super) fn parse(text: &'i str) -> Result<Document<'i>, Vec<KeyProblem>> {
        let (root, errors) = DeTable::parse_recoverable(text);
        if errors.is_empty() {
            return Ok(Document { text, root });
        }
        Err(errors
            .iter()
            .map(|e| KeyProblem {
                key: String::new(),
                // Some messages run over lines ("invalid table header\nexpected `.`, `]`").
                message: e.message().trim().replace('\n', ": "),
                line: e.span().map(|span| line_at(text, span.start)),
            })
            .collect())
    }

    /// Reads the document as `T`, recording every unknown key and wrong type in `problems` and
    /// reading without them; `None` when an error cannot be placed in the document (then what
    /// is left cannot be read either).
    pub(super) fn read<T: DeserializeOwned>(&self, problems: &mut Vec<KeyProblem>) -> Option<T> {
        let mut root = self.root.clone();
        for _ in 0..MAX_READS {
            let error = match T::deserialize(toml::de::Deserializer::from(root.clone())) {
                Ok(value) => return Some(value),
                Err(error) => error,
            };
            let found = error.span().and_then(|span| find(root.get_ref(), &span));
            let Some(path) = found else {
                problems.push(KeyProblem {
                    key: String::new(),
                    message: error.message().to_string(),
                    line: error.span().map(|span| line_at(self.text, span.start)),
                });
                return None;
            };
            problems.push(KeyProblem {
                key: render(root.get_ref(), &path),
                message: explain(error.message()),
                line: error.span().map(|span| line_at(self.text, span.start)),
            });
            remove(root.get_mut(), &path);
        }
        None
    }

    /// The line where `key` (as the checks name keys: `route[2].rules.poll`, `server.listen[0]`)
    /// is written; when it is missing, the line of the nearest table around it, or line 1.
    pub(super) fn line_of(&self, key: &str) -> usize {
        let mut span = None;
        let mut table = Some(self.root.get_ref());
        for segment in key.split('.') {
            let (name, index) = match segment.split_once('[') {
                Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
                None => (segment, None),
            };
            let Some((k, v)) = table.and_then(|t| t.get_key_value(name)) else {
                break;
            };
            span = Some(k.span());
            let mut value = v.get_ref();
            if let (Some(index), DeValue::Array(items)) = (index, value) {
                // Arrays of tables (`[[route]]`) are counted from 1, as the checks name them;
                // arrays of values from 0.
                let of_tables = items.iter().all(|item| item.get_ref().is_table());
                let position = if of_tables {
                    index.checked_sub(1)
                } else {
                    Some(index)
                };
                let Some(item) = position.and_then(|p| items.get(p)) else {
                    break;
                };
                span = Some(item.span());
                value = item.get_ref();
            }
            table = value.as_table();
        }
        span.map_or(1, |span| line_at(self.text, span.start))
    }

    /// The `file` of every `[[route]]`'s `rules`, with its key and line, whatever else is wrong
    /// with the document.
    pub(super) fn rules_files(&self) -> Vec<(String, usize, String)> {
        let Some(DeValue::Array(routes)) = self.root.get_ref().get("route").map(Spanned::get_ref)
        else {
            return Vec::new();
        };
        routes
            .iter()
            .enumerate()
            .filter_map(|(i, route)| {
                let rules = route.get_ref().as_table()?.get("rules")?;
                let file = rules.get_ref().as_table()?.get("file")?;
                let path = file.get_ref().as_str()?;
                let key = format!("route[{}].rules.file", i + 1);
                Some((key, line_at(self.text, file.span().start), path.to_string()))
            })
            .collect()
    }
}

/// The 1-based line of byte `offset` of `text`.
fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The deepest entry of `table` whose key or value is `span`.
fn find(table: &DeTable<'_>, span: &Range<usize>) -> Option<Vec<Step>> {
    let mut best = None;
    find_in_table(table, span, &mut Vec::new(), &mut best);
    best
}

fn find_in_table(
    table: &DeTable<'_>,
    span: &Range<usize>,
    path: &mut Vec<Step>,
    best: &mut Option<Vec<Step>>,
) {
    for (key, value) in table.iter() {
        path.push(Step::Key(key.get_ref().to_string()));
        if key.span() == *span || value.span() == *span {
            keep_deepest(path, best);
        }
        find_in_value(value.get_ref(), span, path, best);
        path.pop();
    }
}

fn find_in_value(
    value: &DeValue<'_>,
    span: &Range<usize>,
    path: &mut Vec<Step>,
    best: &mut Option<Vec<Step>>,
) {
    match value {
        DeValue::Table(table) => find_in_table(table, span, path, best),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Step::Item(i));
                if item.span() == *span {
                    keep_deepest(path, best);
                }
                find_in_value(item.get_ref(), span, path, best);
                path.pop();
            }
        }
        _ => {}
    }
}

fn keep_deepest(path: &[Step], best: &mut Option<Vec<Step>>) {
    if best.as_ref().is_none_or(|b| path.len() > b.len()) {
        *best = Some(path.to_vec());
    }
}

/// Takes the entry at `path` out of `table`.
fn remove(table: &mut DeTable<'_>, path: &[Step]) {
    let Some((Step::Key(key), rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        table.remove(key.as_str());
        return;
    }
    if let Some(value) = table.get_mut(key.as_str()) {
        remove_in_value(value.get_mut(), rest);
    }
}

fn remove_in_value(value: &mut DeValue<'_>, path: &[Step]) {
    match (value, path.split_first()) {
        (DeValue::Table(table), Some((Step::Key(_), _))) => remove(table, path),
        (DeValue::Array(items), Some((Step::Item(i), rest))) => {
            if rest.is_empty() {
                let kept: DeArray<'_> = std::mem::replace(items, DeArray::new())
                    .into_iter()
                    .enumerate()
                    .filter(|(j, _)| j != i)
                    .map(|(_, item)| item)
                    .collect();
                *items = kept;
            } else if let Some(item) = items.get_mut(*i) {
                remove_in_value(item.get_mut(), rest);
            }
        }
        _ => {}
    }
}

/// `path` as the checks name keys: `server.listen[0]`, `route[2].origin` (arrays of tables count
/// from 1), `server.tls.cert`.
fn render(table: &DeTable<'_>, path: &[Step]) -> String {
    let mut out = String::new();
    let mut value: Option<&DeValue<'_>> = None;
    for step in path {
        match step {
            Step::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
                let within = match value {
                    None => Some(table),
                    Some(v) => v.as_table(),
                };
                value = within
                    .and_then(|t| t.get(key.as_str()))
                    .map(Spanned::get_ref);
            }
            Step::Item(i) => {
                let item = value.and_then(DeValue::as_array).and_then(|a| a.get(*i));
                let of_tables = item.is_some_and(|item| item.get_ref().is_table());
                let shown = if of_tables { i + 1 } else { *i };
                out.push_str(&format!("[{shown}]"));
                value = item.map(Spanned::get_ref);
            }
        }
    }
    out
}

/// serde's message, in the configuration's own terms: `unknown field `lsiten`, expected one of
/// `listen`, ...` becomes "unknown key, did you mean `listen`?".
fn explain(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (unknown, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let known = quoted(expected);
        return match suggestion(unknown, &known) {
            Some(close) => format!("unknown key, did you mean `{close}`?"),
            None if known.is_empty() => "unknown key: this table takes no keys".to_string(),
            None => format!("unknown key (known keys: {})", known.join(", ")),
        };
    }
    let mut message = message.to_string();
    for (rust, toml) in [
        ("expected usize", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected u16", "expected a whole number"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected a table"),
        ("invalid type: map", "invalid type: table"),
        ("invalid type: sequence", "invalid type: array"),
    ] {
        if let Some(at) = message.find(rust) {
            message.replace_range(at..at + rust.len(), toml);
        }
    }
    message
}

/// The `quoted` words of serde's "expected one of `a`, `b`".
fn quoted(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// The known key `unknown` was most likely meant to be: the nearest within two edits (a swap of
/// two letters counts as one), else the one sharing the longest start with it, if that start is
/// most of it (`trusted_proxy`, `trusted_proxies`).
fn suggestion<'k>(unknown: &str, known: &[&'k str]) -> Option<&'k str> {
    let near = known
        .iter()
        .map(|k| (strsim::osa_distance(unknown, k), *k))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance);
    if let Some((_, k)) = near {
        return Some(k);
    }
    let shared = |k: &str| {
        unknown
            .chars()
            .zip(k.chars())
            .take_while(|(a, b)| a == b)
            .count()
    };
    let enough = (unknown.chars().count() / 2).max(4);
    known
        .iter()
        .map(|k| (shared(k), *k))
        .filter(|(n, _)| *n >= enough)
        .max_by_key(|(n, _)| *n)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misspellings_get_the_key_they_were_meant_to_be() {
        let known = ["listen", "tls", "redirect", "timeouts", "trusted_proxies"];
        assert_eq!(suggestion("lsiten", &known), Some("listen"));
        assert_eq!(suggestion("timeout", &known), Some("timeouts"));
        assert_eq!(suggestion("trusted", &known), Some("trusted_proxies"));
        assert_eq!(suggestion("trusted_proxy", &known), Some("trusted_proxies"));
        assert_eq!(suggestion("listen_on", &known), Some("listen"));
        assert_eq!(suggestion("workers", &known), None);
        assert_eq!(
            explain("unknown field `conect`, expected one of `connect`, `idle`"),
            "unknown key, did you mean `connect`?"
        );
        assert_eq!(
            explain("unknown field `x`, expected `connect` or `idle`"),
            "unknown key (known keys: connect, idle)"
        );
    }

    #[test]
    fn every_unknown_key_and_wrong_type_is_found_with_its_line() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Shape {
            a: Option<u32>,
            b: Option<Vec<Inner>>,
        }
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Inner {
            c: Option<String>,
        }
        let text = "a = \"x\"\nzz = 1\n[[b]]\nc = \"ok\"\n[[b]]\nc = 5\nd = 1\n";
        let doc = Document::parse(text).expect("TOML");
        let mut problems = Vec::new();
        let shape: Shape = doc.read(&mut problems).expect("read without the problems");
        assert!(shape.a.is_none());
        assert_eq!(shape.b.map(|b| b.len()), Some(2));
        let mut found: Vec<(Option<usize>, &str)> =
            problems.iter().map(|p| (p.line, p.key.as_str())).collect();
        found.sort();
        assert_eq!(
            found,
            [
                (Some(1), "a"),
                (Some(2), "zz"),
                (Some(6), "b[2].c"),
                (Some(7), "b[2].d"),
            ]
        );
        assert_eq!(doc.line_of("b[2].c"), 6);
        assert_eq!(doc.line_of("b[1].missing"), 3, "the table's own line");
        assert_eq!(doc.line_of("nowhere"), 1);
    }

    #[test]
    fn syntax_errors_are_each_on_their_line() {
        let Err(problems) = Document::parse("a = 1\nb = \nc = [\n") else {
            panic!("not TOML")
        };
        assert!(!problems.is_empty());
        assert!(problems.iter().all(|p| p.line.is_some()), "{problems:?}");
    }
}
