//! Every case of the shared S3 CORS vectors (tests/data/vectors.json), run against the core.
//! The gateway's end-to-end tests send the same cases over the wire.

use std::collections::BTreeMap;

use corsgate::cors::{BucketCors, CorsRequest, Decision, Policy, Resource};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    configs: BTreeMap<String, String>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    config: Option<String>,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    expect: Expect,
}

#[derive(Deserialize)]
struct Expect {
    status: Option<u16>,
    #[serde(default)]
    forwarded: bool,
    error_code: Option<String>,
    error_message: Option<String>,
    error_method: Option<String>,
    error_resource_type: Option<String>,
    cors_headers: BTreeMap<String, String>,
}

fn load() -> Vectors {
    serde_json::from_str(include_str!("../data/vectors.json")).expect("vectors.json is valid")
}

fn xml_field(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(body[start..end].to_string())
}

#[test]
fn every_shared_vector_passes() {
    let vectors = load();
    assert!(vectors.cases.len() >= 30, "the vector file lost cases");
    let mut failures = Vec::new();
    for case in &vectors.cases {
        if let Err(e) = run(&vectors, case) {
            failures.push(format!("{}: {e}", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn run(vectors: &Vectors, case: &Case) -> Result<(), String> {
    let cors = match &case.config {
        None => BucketCors::NotConfigured,
        Some(name) => {
            let xml = &vectors.configs[name];
            BucketCors::Enabled(Policy::parse(xml.as_bytes()).map_err(|e| e.to_string())?)
        }
    };
    let mut headers = HeaderMap::new();
    for (n, v) in &case.headers {
        let name = HeaderName::from_bytes(n.as_bytes()).map_err(|e| e.to_string())?;
        headers.append(name, HeaderValue::from_str(v).map_err(|e| e.to_string())?);
    }
    let method = Method::from_bytes(case.method.as_bytes()).map_err(|e| e.to_string())?;
    let req = CorsRequest::new(&method, &headers, Resource::of_key(&case.path));
    let expect = &case.expect;
    let (status, grant, denial) = match cors.evaluate(&req) {
        Decision::Preflight(Ok(g)) => (Some(200), Some(g), None),
        Decision::Preflight(Err(d)) => (Some(d.status.as_u16()), None, Some(d)),
        Decision::Actual(g) => (None, g, None),
    };
    if expect.forwarded != status.is_none() {
        return Err(format!("forwarded: expected {}", expect.forwarded));
    }
    if status != expect.status {
        return Err(format!("status {status:?}, expected {:?}", expect.status));
    }
    let got: BTreeMap<String, String> = grant
        .iter()
        .flat_map(|g| g.headers())
        .map(|(n, v)| {
            let v = v.to_str().map_err(|e| e.to_string())?.to_string();
            Ok((n.as_str().to_string(), v))
        })
        .collect::<Result<_, String>>()?;
    if got != expect.cors_headers {
        return Err(format!(
            "headers {got:#?}, expected {:#?}",
            expect.cors_headers
        ));
    }
    if let Some(d) = denial {
        let body = d.to_xml("TEST");
        let fields = [
            ("Code", &expect.error_code),
            ("Message", &expect.error_message),
            ("Method", &expect.error_method),
            ("ResourceType", &expect.error_resource_type),
        ];
        for (tag, want) in fields {
            let got = xml_field(&body, tag);
            if want.is_some() && got != *want {
                return Err(format!("<{tag}> {got:?}, expected {want:?}"));
            }
        }
    }
    Ok(())
}
