//! Every case of the shared vectors (tests/data/vectors.json), sent over the wire through the
//! gateway: preflights must be answered without reaching the origin, everything else must reach
//! it and come back with exactly the CORS headers the vector lists.

use std::collections::BTreeMap;

use crate::common::*;
use serde_json::Value;

const VECTORS: &str = include_str!("../data/vectors.json");

#[tokio::test]
async fn every_vector_holds_on_the_wire() {
    let vectors: Value = serde_json::from_str(VECTORS).expect("vectors.json parses");
    let origin = Origin::start(Reply::default()).await;

    // One gateway, one route per named configuration (chosen by Host), plus one with none.
    let mut routes = Vec::new();
    let configs = vectors["configs"].as_object().expect("configs");
    for (name, xml) in configs {
        let host = format!("{name}.test");
        routes.push(route(&[&host], &origin, Some(xml.as_str().expect("xml"))));
    }
    routes.push(route(&["none.test"], &origin, None));
    let gateway = start(config(routes)).await;

    let mut failures = Vec::new();
    for case in vectors["cases"].as_array().expect("cases") {
        if let Err(why) = check(case, &gateway.addr(), &origin).await {
            failures.push(format!("{}: {why}", case["name"].as_str().unwrap_or("?")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing vectors:\n{}",
        failures.len(),
        failures.join("\n")
    );
    gateway.shutdown().await;
}

async fn check(
    case: &Value,
    gateway: &std::net::SocketAddr,
    origin: &Origin,
) -> Result<(), String> {
    let host = match case["config"].as_str() {
        Some(name) => format!("{name}.test"),
        None => "none.test".to_string(),
    };
    let mut headers: Vec<(String, String)> = vec![("host".into(), host)];
    for pair in case["headers"].as_array().ok_or("no headers")? {
        headers.push((
            pair[0].as_str().ok_or("header name")?.to_string(),
            pair[1].as_str().ok_or("header value")?.to_string(),
        ));
    }
    let borrowed: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let method = case["method"].as_str().ok_or("method")?;
    let path = case["path"].as_str().ok_or("path")?;
    let expect = &case["expect"];

    let before = origin.count();
    let answer = send(*gateway, method, path, &borrowed).await;
    let reached = origin.count() - before;

    let forwarded = expect["forwarded"].as_bool().unwrap_or(false);
    if forwarded {
        if reached != 1 {
            return Err(format!(
                "expected to reach the origin once, reached it {reached} times"
            ));
        }
        let last = origin.received().pop().ok_or("origin log empty")?;
        if last.method.as_str() != method || last.target != path {
            return Err(format!("origin saw {} {}", last.method, last.target));
        }
        if answer.status != 200 || answer.body != "origin body" {
            return Err(format!(
                "origin's answer not relayed: {} {:?}",
                answer.status, answer.body
            ));
        }
    } else if reached != 0 {
        return Err("a preflight reached the origin".into());
    }

    if let Some(status) = expect["status"].as_u64()
        && u64::from(answer.status.as_u16()) != status
    {
        return Err(format!(
            "status {} (expected {status}), body {:?}",
            answer.status, answer.body
        ));
    }
    for (field, element) in [
        ("error_code", "Code"),
        ("error_message", "Message"),
        ("error_method", "Method"),
        ("error_resource_type", "ResourceType"),
    ] {
        if let Some(want) = expect[field].as_str() {
            let got = answer.xml(element);
            if got.as_deref() != Some(want) {
                return Err(format!("<{element}> {got:?}, expected {want:?}"));
            }
        }
    }
    if expect["error_code"].is_string() {
        if answer.header("content-type") != Some("application/xml") {
            return Err(format!(
                "error content-type {:?}",
                answer.header("content-type")
            ));
        }
        if answer.xml("RequestId").as_deref() != answer.header("x-amz-request-id") {
            return Err("RequestId body and header differ".into());
        }
    }

    let want: BTreeMap<String, String> = expect["cors_headers"]
        .as_object()
        .ok_or("cors_headers")?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    let got_cors: BTreeMap<String, String> = answer.cors_headers().into_iter().collect();
    let want_cors: BTreeMap<String, String> = want
        .iter()
        .filter(|(k, _)| k.starts_with("access-control-"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if got_cors != want_cors {
        return Err(format!("CORS headers {got_cors:?}, expected {want_cors:?}"));
    }
    let vary = answer.vary_lines();
    match want.get("vary") {
        Some(v) if vary != [v.as_str()] => return Err(format!("Vary {vary:?}, expected {v:?}")),
        Some(_) => {}
        // Without a match, the default cache-safety setting may add `Vary: Origin` to forwarded
        // responses; preflight answers carry no Vary at all.
        None if forwarded && (vary.is_empty() || vary == ["Origin"]) => {}
        None if !forwarded && vary.is_empty() => {}
        None => return Err(format!("unexpected Vary {vary:?}")),
    }
    Ok(())
}
