//! Reading S3's XML error documents (`<Error><Code>…</Code><Message>…</Message></Error>`).

use quick_xml::events::Event;
use quick_xml::reader::Reader;

/// The code and message of an S3 error body; empty strings when the body is not one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct S3ErrorBody {
    pub code: String,
    pub message: String,
}

impl S3ErrorBody {
    pub fn parse(body: &[u8]) -> S3ErrorBody {
        let mut out = S3ErrorBody::default();
        let Ok(text) = std::str::from_utf8(body) else {
            return out;
        };
        let mut reader = Reader::from_str(text);
        let mut field: Option<&'static str> = None;
        loop {
            match reader.read_event() {
                Ok(Event::Start(e)) => {
                    field = match e.local_name().as_ref() {
                        "Code" => Some("Code"),
                        "Message" => Some("Message"),
                        _ => None,
                    }
                }
                Ok(Event::Text(t)) => {
                    let value = t.xml10_content();
                    match field {
                        Some("Code") => out.code.push_str(&value),
                        Some("Message") => out.message.push_str(&value),
                        _ => {}
                    }
                }
                Ok(Event::GeneralRef(r)) => {
                    let resolved = r
                        .resolve_char_ref()
                        .ok()
                        .flatten()
                        .map(String::from)
                        .or_else(|| {
                            quick_xml::escape::resolve_predefined_entity(&r.xml10_content())
                                .map(String::from)
                        });
                    if let (Some(s), Some(f)) = (resolved, field) {
                        if f == "Code" {
                            out.code.push_str(&s)
                        } else {
                            out.message.push_str(&s)
                        }
                    }
                }
                Ok(Event::End(_)) => field = None,
                Ok(Event::Eof) | Err(_) => break,
                Ok(_) => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_code_and_message() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>NoSuchCORSConfiguration</Code><Message>The CORS configuration does not exist</Message><BucketName>b</BucketName></Error>"#;
        let e = S3ErrorBody::parse(body);
        assert_eq!(e.code, "NoSuchCORSConfiguration");
        assert_eq!(e.message, "The CORS configuration does not exist");
    }

    #[test]
    fn garbage_gives_empty_fields() {
        assert_eq!(S3ErrorBody::parse(b"\xff<html>"), S3ErrorBody::default());
        assert_eq!(
            S3ErrorBody::parse(b"<html><body>502</body></html>").code,
            ""
        );
    }
}
