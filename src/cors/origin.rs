//! `AllowedOrigin` patterns: an exact origin, or one with a single `*` standing for any run of
//! characters (the empty run included), anchored at both ends. Origins compare byte for byte,
//! case-sensitively, exactly as S3 does (docs/cors-semantics.md#matching-origins).

/// A compiled `AllowedOrigin` entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OriginPattern {
    /// A lone `*`: every origin.
    Any,
    /// No wildcard: this origin and nothing else.
    Exact(Box<str>),
    /// `prefix*suffix`.
    Wildcard { prefix: Box<str>, suffix: Box<str> },
}

impl OriginPattern {
    /// Compiles one entry; `None` when it has more than one `*` (S3 refuses those).
    pub fn parse(text: &str) -> Option<OriginPattern> {
        match wildcard_split(text)? {
            None => Some(OriginPattern::Exact(text.into())),
            Some(("", "")) => Some(OriginPattern::Any),
            Some((prefix, suffix)) => Some(OriginPattern::Wildcard {
                prefix: prefix.into(),
                suffix: suffix.into(),
            }),
        }
    }

    pub fn matches(&self, origin: &[u8]) -> bool {
        match self {
            OriginPattern::Any => true,
            OriginPattern::Exact(exact) => exact.as_bytes() == origin,
            OriginPattern::Wildcard { prefix, suffix } => {
                wildcard_matches(prefix.as_bytes(), suffix.as_bytes(), origin)
            }
        }
    }

    /// True when every origin `other` matches, this pattern matches too.
    pub fn covers(&self, other: &OriginPattern) -> bool {
        match (self, other) {
            (OriginPattern::Any, _) => true,
            (_, OriginPattern::Any) => false,
            (_, OriginPattern::Exact(e)) => self.matches(e.as_bytes()),
            (OriginPattern::Exact(_), OriginPattern::Wildcard { .. }) => false,
            (
                OriginPattern::Wildcard { prefix, suffix },
                OriginPattern::Wildcard {
                    prefix: p2,
                    suffix: s2,
                },
            ) => p2.starts_with(&**prefix) && s2.ends_with(&**suffix),
        }
    }
}

/// Splits `text` at its one `*`: `Some(None)` without one, `None` with more than one.
pub(crate) fn wildcard_split(text: &str) -> Option<Option<(&str, &str)>> {
    let mut parts = text.splitn(3, '*');
    let first = parts.next().unwrap_or_default();
    match (parts.next(), parts.next()) {
        (None, _) => Some(None),
        (Some(rest), None) => Some(Some((first, rest))),
        (Some(_), Some(_)) => None,
    }
}

/// `prefix*suffix` against `value`; the prefix and suffix must not overlap.
pub(crate) fn wildcard_matches(prefix: &[u8], suffix: &[u8], value: &[u8]) -> bool {
    value.len() >= prefix.len() + suffix.len()
        && value.starts_with(prefix)
        && value.ends_with(suffix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(pattern: &str, origin: &str) -> bool {
        OriginPattern::parse(pattern)
            .expect("one wildcard at most")
            .matches(origin.as_bytes())
    }

    #[test]
    fn examples_from_the_spec() {
        assert!(m("start*end", "startend"));
        assert!(m("start*end", "start12end"));
        assert!(!m("start*end", "0start12end"));
        assert!(m("*suffix", "foo.suffix"));
        assert!(!m("*suffix", "foo.suffix.get"));
        assert!(m("prefix*", "prefix"));
        assert!(m("*.com", "https://a.b.com"));
        assert!(m("*", "null"));
        assert!(!m("https://a.com", "http://a.com"));
        assert!(!m("https://a.com", "https://a.com:443"));
        assert!(!m("https://a.com", "https://a.com/"));
        assert!(!m("https://A.com", "https://a.com"));
        // The wildcard is not allowed to reuse characters of the prefix for the suffix.
        assert!(!m("ab*ba", "aba"));
    }

    #[test]
    fn more_than_one_wildcard_is_refused() {
        assert_eq!(OriginPattern::parse("http://*.*.com"), None);
        assert_eq!(OriginPattern::parse("**"), None);
    }

    #[test]
    fn coverage() {
        let p = |s| OriginPattern::parse(s).expect("valid");
        assert!(p("*").covers(&p("https://*.a.com")));
        assert!(p("https://*").covers(&p("https://*.a.com")));
        assert!(p("https://*.com").covers(&p("https://x.com")));
        assert!(!p("https://x.com").covers(&p("https://*.com")));
        assert!(!p("https://*.a.com").covers(&p("https://*.com")));
    }

    proptest! {
        #[test]
        fn a_pattern_without_wildcard_matches_only_itself(p in "[a-z:/.]{0,12}", o in "[a-z:/.]{0,12}") {
            prop_assert_eq!(m(&p, &o), p == o);
        }

        #[test]
        fn wildcard_agrees_with_a_naive_matcher(pre in "[ab.]{0,4}", suf in "[ab.]{0,4}", o in "[ab.]{0,9}") {
            let naive = (0..=o.len()).any(|i| (i..=o.len()).any(|j| {
                format!("{}{}{}", pre, &o[i..j], suf) == o && o[..i] == pre && o[j..] == suf
            }));
            prop_assert_eq!(m(&format!("{pre}*{suf}"), &o), naive);
        }
    }
}
