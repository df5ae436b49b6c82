//! The two facts about a TLS certificate its expiry metric needs, read from its DER: when it
//! expires (`notAfter`) and its first DNS name (subjectAltName `dNSName`).
//!
//! A full X.509 parser would be a dozen crates for two fields of certificates rustls has
//! already parsed and accepted; this walks the DER structure of RFC 5280 §4.1 just far enough.
//! Every read is bounds-checked: a certificate it cannot follow gives `None` (no series),
//! never a panic.

/// What the expiry metric shows of one certificate.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Described {
    /// The first `dNSName` of its subjectAltName, if it has one.
    pub(crate) dns_name: Option<String>,
    /// `notAfter`, in Unix seconds.
    pub not_after: i64,
}

const SEQUENCE: u8 = 0x30;
const EXPLICIT_0: u8 = 0xa0;
const EXPLICIT_3: u8 = 0xa3;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// `dNSName [2] IA5String` in GeneralName (implicit, primitive).
const DNS_NAME: u8 = 0x82;
/// id-ce-subjectAltName, 2.5.29.17.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// One DER element.
struct Element<'a> {
    tag: u8,
    contents: &'a [u8],
}

/// Takes the next element off the front of `input`.
fn next<'a>(input: &mut &'a [u8]) -> Option<Element<'a>> {
    let (&tag, rest) = input.split_first()?;
    // Multi-byte tags never occur in the fields read here.
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        let len = bytes
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    *input = rest;
    Some(Element { tag, contents })
}

fn expect<'a>(input: &mut &'a [u8], tag: u8) -> Option<&'a [u8]> {
    next(input).filter(|e| e.tag == tag).map(|e| e.contents)
}

/// Reads a certificate (DER) far enough for its expiry and first DNS name.
pub(crate) fn describe(der: &[u8]) -> Option<Described> {
    let mut input = der;
    let mut certificate = expect(&mut input, SEQUENCE)?;
    let mut tbs = expect(&mut certificate, SEQUENCE)?;
    let mut element = next(&mut tbs)?;
    if element.tag == EXPLICIT_0 {
        // The version; the serial number follows.
        element = next(&mut tbs)?;
    }
    let _serial = element;
    let _signature = expect(&mut tbs, SEQUENCE)?;
    let _issuer = expect(&mut tbs, SEQUENCE)?;
    let mut validity = expect(&mut tbs, SEQUENCE)?;
    let _not_before = next(&mut validity)?;
    let not_after = time(next(&mut validity)?)?;
    let _subject = expect(&mut tbs, SEQUENCE)?;
    let _public_key = expect(&mut tbs, SEQUENCE)?;
    let mut dns_name = None;
    // Then the optional unique IDs ([1], [2]) and the extensions ([3]).
    while let Some(element) = next(&mut tbs) {
        if element.tag == EXPLICIT_3 {
            let mut wrapper = element.contents;
            dns_name = expect(&mut wrapper, SEQUENCE).and_then(first_dns_name);
        }
    }
    Some(Described {
        dns_name,
        not_after,
    })
}

/// The first `dNSName` of the subjectAltName among `extensions`.
fn first_dns_name(mut extensions: &[u8]) -> Option<String> {
    while let Some(mut extension) = expect(&mut extensions, SEQUENCE) {
        if expect(&mut extension, OID)? != SUBJECT_ALT_NAME {
            continue;
        }
        let mut value = next(&mut extension)?;
        if value.tag == BOOLEAN {
            value = next(&mut extension)?;
        }
        if value.tag != OCTET_STRING {
            return None;
        }
        let mut octets = value.contents;
        let mut names = expect(&mut octets, SEQUENCE)?;
        while let Some(name) = next(&mut names) {
            if name.tag == DNS_NAME {
                return std::str::from_utf8(name.contents).ok().map(str::to_string);
            }
        }
        return None;
    }
    None
}

/// `UTCTime` (`YYMMDDHHMMSSZ`, years 1950 to 2049) or `GeneralizedTime` (`YYYYMMDDHHMMSSZ`),
/// as RFC 5280 §4.1.2.5 allows them, in Unix seconds.
fn time(element: Element<'_>) -> Option<i64> {
    let text = std::str::from_utf8(element.contents).ok()?;
    let digits = text.strip_suffix('Z')?;
    let (year, rest) = match (element.tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy: i64 = digits.get(..2)?.parse().ok()?;
            (
                if yy < 50 { 2000 + yy } else { 1900 + yy },
                digits.get(2..)?,
            )
        }
        (GENERALIZED_TIME, 14) => (digits.get(..4)?.parse().ok()?, digits.get(4..)?),
        _ => return None,
    };
    if !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |at: usize| -> Option<i64> { rest.get(at..at + 2)?.parse().ok() };
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(names: &[&str], not_after: (i32, u8, u8)) -> Vec<u8> {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("valid names");
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("sign").der().to_vec()
    }

    #[test]
    fn expiry_and_first_dns_name_are_read() {
        let der = certificate(&["cdn.example.com", "www.example.com"], (2031, 1, 2));
        assert_eq!(
            describe(&der),
            Some(Described {
                dns_name: Some("cdn.example.com".into()),
                not_after: 1_925_078_400,
            })
        );
    }

    #[test]
    fn expiry_from_2050_on_is_a_generalized_time() {
        let der = certificate(&["a.example"], (2050, 1, 1));
        assert_eq!(
            describe(&der).map(|d| d.not_after),
            Some(2_524_608_000),
            "2050-01-01T00:00:00Z"
        );
    }

    #[test]
    fn a_certificate_without_a_dns_name_still_has_an_expiry() {
        let der = certificate(&["127.0.0.1"], (2031, 1, 2));
        assert_eq!(
            describe(&der),
            Some(Described {
                dns_name: None,
                not_after: 1_925_078_400,
            })
        );
    }

    #[test]
    fn truncated_or_foreign_bytes_give_nothing() {
        let der = certificate(&["a.example"], (2031, 1, 2));
        for end in [0, 1, 2, 10, der.len() / 2] {
            assert_eq!(describe(&der[..end]), None, "cut at {end}");
        }
        assert_eq!(describe(b"-----BEGIN CERTIFICATE-----"), None);
        assert_eq!(describe(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }
}
