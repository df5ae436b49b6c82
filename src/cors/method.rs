//! The five methods S3 allows in a CORS rule, and sets of them as a bitset.

use std::fmt;

/// A method an S3 `AllowedMethod` may name. S3 compares method names case-sensitively.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CorsMethod {
    Get,
    Put,
    Post,
    Delete,
    Head,
}

impl CorsMethod {
    pub const ALL: [CorsMethod; 5] = [
        CorsMethod::Get,
        CorsMethod::Put,
        CorsMethod::Post,
        CorsMethod::Delete,
        CorsMethod::Head,
    ];

    /// Parses a method name exactly as S3 does: `get` is not `GET`.
    pub fn parse(name: &[u8]) -> Option<CorsMethod> {
        Some(match name {
            b"GET" => CorsMethod::Get,
            b"PUT" => CorsMethod::Put,
            b"POST" => CorsMethod::Post,
            b"DELETE" => CorsMethod::Delete,
            b"HEAD" => CorsMethod::Head,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CorsMethod::Get => "GET",
            CorsMethod::Put => "PUT",
            CorsMethod::Post => "POST",
            CorsMethod::Delete => "DELETE",
            CorsMethod::Head => "HEAD",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for CorsMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of methods, one bit each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct MethodSet(u8);

impl MethodSet {
    pub fn insert(&mut self, method: CorsMethod) {
        self.0 |= 1 << method.index();
    }

    pub fn contains(self, method: CorsMethod) -> bool {
        self.0 & (1 << method.index()) != 0
    }

    pub(crate) fn is_subset(self, other: MethodSet) -> bool {
        self.0 & !other.0 == 0
    }
}

impl FromIterator<CorsMethod> for MethodSet {
    fn from_iter<I: IntoIterator<Item = CorsMethod>>(iter: I) -> Self {
        let mut set = MethodSet::default();
        for m in iter {
            set.insert(m);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_are_case_sensitive() {
        assert_eq!(CorsMethod::parse(b"PUT"), Some(CorsMethod::Put));
        assert_eq!(CorsMethod::parse(b"put"), None);
        assert_eq!(CorsMethod::parse(b"PATCH"), None);
        assert_eq!(CorsMethod::parse(b"OPTIONS"), None);
    }

    #[test]
    fn set_membership_and_subsets() {
        let rw: MethodSet = [CorsMethod::Get, CorsMethod::Put].into_iter().collect();
        let r: MethodSet = [CorsMethod::Get].into_iter().collect();
        assert!(rw.contains(CorsMethod::Put) && !rw.contains(CorsMethod::Head));
        assert!(r.is_subset(rw) && !rw.is_subset(r));
    }
}
