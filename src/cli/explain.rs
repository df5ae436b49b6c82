//! `corsgate explain RULES -X METHOD -H 'Name: value'...`: which rule answers a request, why the
//! others did not, and the exact status and headers S3 would send.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::cors::explain::{to_json, to_text, verdicts};
use crate::cors::{BucketCors, CorsRequest, Policy, Resource};

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
