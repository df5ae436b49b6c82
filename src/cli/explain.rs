//! `corsgate explain RULES -X METHOD -H 'Name: value'...`: which rule answers a request, why the
//! others did not, and the exact status and headers S3 would send.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde_json::{Map, Value, json};

use crate::cors::explain::{Precondition, Verdict, verdicts};
use crate::cors::{BucketCors, CorsRequest, Decision, Grant, Policy, Resource};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The rules file (S3 XML or AWS CLI JSON).
    pub rules: PathBuf,
    /// The request method (OPTIONS for a preflight).
    #[arg(short = 'X', long = "request", value_name = "METHOD")]
    pub method: String,
    /// A request header, as `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,
    /// The object key; `/` is the bucket root.
    #[arg(long, default_value = "/object")]
    pub path: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &ExplainArgs) -> ExitCode {
    match explain(args) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err((code, message)) => {
            eprintln!("{message}");
            ExitCode::from(code)
        }
    }
}

fn explain(args: &ExplainArgs) -> Result<String, (u8, String)> {
    let usage = |m: String| (super::EXIT_USAGE, m);
    let method = Method::from_bytes(args.method.as_bytes())
        .map_err(|_| usage(format!("-X {:?} is not an HTTP method", args.method)))?;
    let headers = parse_headers(&args.headers).map_err(usage)?;
    let bytes = super::read_file(&args.rules).map_err(usage)?;
    let name = args.rules.display();
    let policy = Policy::parse(&bytes).map_err(|e| {
        let lines: Vec<String> = e.problems.iter().map(|p| format!("{name}:{p}")).collect();
        (1, lines.join("\n"))
    })?;
    let req = CorsRequest::new(&method, &headers, Resource::of_key(&args.path));
    let report = verdicts(&policy, &req);
    let cors = BucketCors::Enabled(policy);
    let decision = cors.evaluate(&req);
    Ok(if args.json {
        to_json(&decision) + "\n"
    } else {
        to_text(&cors, &req, &report, &decision, &args.path)
    })
}

fn parse_headers(raw: &[String]) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for h in raw {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("-H {h:?}: expected 'Name: value'"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("-H {h:?}: {:?} is not a header name", name.trim()))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("-H {h:?}: the value is not a valid header value"))?;
        map.append(name, value);
    }
    Ok(map)
}

fn headers_of(grant: Option<&Grant<'_>>) -> Vec<(String, String)> {
    grant
        .map(|g| {
            g.headers()
                .map(|(n, v)| {
                    let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                    (n.as_str().to_string(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn to_json(decision: &Decision<'_>) -> String {
    let (kind, status, grant, denial) = match decision {
        Decision::Preflight(Ok(g)) => ("preflight", json!(200), Some(g), None),
        Decision::Preflight(Err(d)) => ("preflight", json!(d.status.as_u16()), None, Some(d)),
        Decision::Actual(g) => ("actual", Value::Null, g.as_ref(), None),
    };
    let headers: Map<String, Value> = headers_of(grant)
        .into_iter()
        .map(|(n, v)| (n, Value::String(v)))
        .collect();
    json!({
        "kind": kind,
        "status": status,
        "matched_rule": grant.map(|g| g.rule.index),
        "headers": headers,
        "error": denial.map(|d| json!({"code": d.code(), "message": d.message()})),
    })
    .to_string()
}

pub(crate) fn to_text(
    cors: &BucketCors,
    req: &CorsRequest<'_>,
    report: &Result<Vec<Verdict>, Precondition>,
    decision: &Decision<'_>,
    path: &str,
) -> String {
    let mut out = String::new();
    let kind = if req.is_preflight() {
        "preflight, answered by corsgate"
    } else {
        "actual request, forwarded to the origin"
    };
    out += &format!("{} {path} ({kind})\n", req.method);
    match report {
        Err(why) => out += &format!("no rule considered: {why}\n"),
        Ok(verdicts) => {
            let rules = cors.policy().map(Policy::rules).unwrap_or_default();
            for (rule, verdict) in rules.iter().zip(verdicts) {
                out += &format!("  {}: {verdict}\n", rule.rule_ref());
            }
        }
    }
    match decision {
        Decision::Preflight(Ok(grant)) => {
            out += &format!("=> 200 OK ({} matched)\n", grant.rule.rule_ref());
            for (n, v) in headers_of(Some(grant)) {
                out += &format!("{n}: {v}\n");
            }
        }
        Decision::Preflight(Err(denial)) => {
            out += &format!("=> {}\n{}\n", denial.status, denial.to_xml("EXPLAIN"));
        }
        Decision::Actual(Some(grant)) => {
            out += &format!(
                "=> origin's response, with these headers ({} matched):\n",
                grant.rule.rule_ref()
            );
            for (n, v) in headers_of(Some(grant)) {
                out += &format!("{n}: {v}\n");
            }
        }
        Decision::Actual(None) => out += "=> origin's response, with no Access-Control-* headers\n",
    }
    out
}
