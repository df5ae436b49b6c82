//! A real browser against `enforce = "strict"`: headless Chromium loads a page from one site and
//! sends the writes a browser sends without asking anyone (a cross-origin form `POST`, a
//! `no-cors` `fetch` `POST`) to a strict route and to an `s3` one. From a site the rules do not
//! grant, the strict route's origin receives nothing; from a granted site, both do. The same page
//! reads Resource Timing (`Timing-Allow-Origin`) and embeds scripts under COEP
//! (`Cross-Origin-Resource-Policy`).
//!
//! Needs the Debian package `chromium` (`/usr/bin/chromium`, or `$CHROMIUM`); fails, never skips,
//! when it is missing. Host names under `.test` are mapped to 127.0.0.1 inside Chromium only.

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;
use corsgate::config::{Enforce, ResourcePolicy};
use http::Method;

/// Sends every write of `?targets=` (comma-separated gateway URLs), then fetches every URL of
/// `?timed=` with CORS and reports its Resource Timing `responseStart`.
///
/// Chromium's virtual time (`--virtual-time-budget`) runs on while a frame navigates, but stops
/// while a fetch is pending: the page waits for a form's answer by fetching `?wait=`, an origin
/// that answers slowly, until the frame has loaded.
const WRITE_PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>strict writes</title></head>
<body><pre id="result">pending</pre>
<script>
(async () => {
  const params = new URLSearchParams(location.search);
  const list = name => (params.get(name) || "").split(",").filter(Boolean);
  const out = { nocors: [], forms: [], timed: [] };
  const settle = async done => {
    for (let i = 0; i < 50 && !done(); i++) {
      try { await fetch(params.get("wait") + "/tick?" + i, { mode: "no-cors" }); } catch (e) {}
    }
  };
  for (const target of list("targets")) {
    try {
      await fetch(target + "/nocors", { mode: "no-cors", method: "POST", body: "x" });
      out.nocors.push("sent");
    } catch (e) {
      out.nocors.push(String(e));
    }
    let loaded = false;
    {
      const frame = document.createElement("iframe");
      frame.name = "sink-" + out.forms.length;
      document.body.appendChild(frame);
      const form = document.createElement("form");
      form.method = "POST";
      form.action = target + "/form";
      form.target = frame.name;
      const field = document.createElement("input");
      field.name = "comment";
      field.value = "hello";
      form.appendChild(field);
      document.body.appendChild(form);
      // The frame's first load is its initial about:blank; the form's answer comes from
      // another origin, whose location the page cannot read.
      frame.onload = () => {
        try {
          if (frame.contentWindow.location.href === "about:blank") return;
        } catch (e) {}
        loaded = true;
      };
      form.submit();
    }
    await settle(() => loaded);
    out.forms.push(loaded ? "loaded" : "not loaded");
  }
  for (const url of list("timed")) {
    try {
      const r = await fetch(url);
      await r.text();
      const entry = performance.getEntriesByName(url).pop();
      out.timed.push({ status: r.status, responseStart: entry ? entry.responseStart : null });
    } catch (e) {
      out.timed.push({ error: String(e) });
    }
  }
  document.getElementById("result").textContent = JSON.stringify(out);
})();
</script></body></html>"#;

/// Served with `Cross-Origin-Embedder-Policy: require-corp`: loads every script of `?scripts=`
/// without CORS and reports whether each loaded.
const EMBED_PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>embedding under COEP</title></head>
<body><pre id="result">pending</pre>
<script>
(async () => {
  const scripts = (new URLSearchParams(location.search).get("scripts") || "").split(",");
  const out = { scripts: [] };
  for (const src of scripts) {
    out.scripts.push(await new Promise(resolve => {
      const s = document.createElement("script");
      s.src = src;
      s.onload = () => resolve("loaded");
      s.onerror = () => resolve("blocked");
      document.head.appendChild(s);
    }));
  }
  document.getElementById("result").textContent = JSON.stringify(out);
})();
</script></body></html>"#;

fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        path.exists(),
        "{} not found: install the Debian package `chromium` (apt-get install chromium) or set CHROMIUM",
        path.display()
    );
    path
}

/// Loads `url` in a fresh headless Chromium, `.test` names mapped to 127.0.0.1, and returns the
/// page's `#result`.
fn run_page(url: &str) -> serde_json::Value {
    let profile = scratch_dir("chromium-profile");
    let output = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=20000",
            "--host-resolver-rules=MAP *.test 127.0.0.1",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .expect("run chromium");
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&output.stdout);
    let start = dom.find("<pre id=\"result\">").unwrap_or_else(|| {
        panic!(
            "no result in the page; chromium said: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    }) + "<pre id=\"result\">".len();
    let end = start + dom[start..].find("</pre>").expect("closed pre");
    let text = dom[start..end]
        .replace("&quot;", "\"")
        .replace("&amp;", "&");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("page did not finish: {text}"))
}

fn page(body: &'static str, coep: bool) -> Reply {
    let mut headers = vec![("content-type", "text/html; charset=utf-8")];
    if coep {
        headers.push(("cross-origin-embedder-policy", "require-corp"));
    }
    Reply {
        headers,
        body: body.into(),
        ..Reply::default()
    }
}

/// The POSTs an origin received.
fn posts(origin: &Origin) -> Vec<String> {
    origin
        .received()
        .into_iter()
        .filter(|r| r.method == Method::POST)
        .map(|r| r.target)
        .collect()
}

async fn load(url: String) -> serde_json::Value {
    tokio::task::spawn_blocking(move || run_page(&url))
        .await
        .expect("chromium task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_cannot_write_cross_origin_to_a_strict_route_unless_the_rules_grant_it() {
    chromium();
    let app = Origin::start(page(WRITE_PAGE, false)).await;
    let evil = Origin::start(page(WRITE_PAGE, false)).await;
    let embedder = Origin::start(page(EMBED_PAGE, true)).await;
    let app_site = format!("http://app.test:{}", app.addr.port());
    let evil_site = format!("http://evil.test:{}", evil.addr.port());
    let bucket_reply = Reply {
        headers: vec![("content-type", "text/javascript")],
        body: "window.loadedScripts = (window.loadedScripts || 0) + 1;".into(),
        ..Reply::default()
    };
    let slow = Origin::start(Reply {
        delay: std::time::Duration::from_millis(100),
        ..Reply::default()
    })
    .await;
    let wait = slow.url();
    let strict_bucket = Origin::start(bucket_reply.clone()).await;
    let s3_bucket = Origin::start(bucket_reply).await;
    let rules = format!(
        "<CORSConfiguration><CORSRule>\
           <AllowedOrigin>{app_site}</AllowedOrigin>\
           <AllowedMethod>GET</AllowedMethod><AllowedMethod>POST</AllowedMethod>\
         </CORSRule></CORSConfiguration>"
    );
    let mut strict = route(&["strict.test"], &strict_bucket, Some(&rules));
    strict.enforce = Enforce::Strict;
    strict.timing_allow_origin = true;
    strict.cross_origin_resource_policy = Some(ResourcePolicy::CrossOrigin);
    let s3 = route(&["s3.test"], &s3_bucket, Some(&rules));
    let gateway = start(config(vec![strict, s3])).await;
    let port = gateway.addr().port();
    let strict_url = format!("http://strict.test:{port}");
    let s3_url = format!("http://s3.test:{port}");
    let targets = format!("{strict_url},{s3_url}");

    // From a site no rule names: the strict route's origin hears nothing; S3's behaviour, on
    // the s3 route, forwards both writes.
    let seen = load(format!("{evil_site}/?targets={targets}&wait={wait}")).await;
    assert_eq!(
        seen["forms"],
        serde_json::json!(["loaded", "loaded"]),
        "{seen}"
    );
    assert_eq!(
        seen["nocors"],
        serde_json::json!(["sent", "sent"]),
        "{seen}"
    );
    assert_eq!(posts(&strict_bucket), Vec::<String>::new(), "{seen}");
    let mut reached = posts(&s3_bucket);
    reached.sort();
    assert_eq!(reached, ["/form", "/nocors"], "{seen}");

    // From the granted site: both routes forward both writes.
    let timed = format!("{strict_url}/timed.js,{s3_url}/timed.js");
    let seen = load(format!(
        "{app_site}/?targets={targets}&timed={timed}&wait={wait}"
    ))
    .await;
    let mut reached = posts(&strict_bucket);
    reached.sort();
    assert_eq!(reached, ["/form", "/nocors"], "{seen}");
    assert_eq!(posts(&s3_bucket).len(), 4, "{seen}");

    // Resource Timing hides a cross-origin response's phases unless Timing-Allow-Origin names
    // the page: only the route that sends it shows them.
    let strict_timing = &seen["timed"][0];
    let s3_timing = &seen["timed"][1];
    assert_eq!(strict_timing["status"], 200, "{seen}");
    assert!(
        strict_timing["responseStart"]
            .as_f64()
            .is_some_and(|t| t > 0.0),
        "{seen}"
    );
    assert_eq!(s3_timing["status"], 200, "{seen}");
    assert_eq!(s3_timing["responseStart"].as_f64(), Some(0.0), "{seen}");

    // A page under COEP embeds only what carries Cross-Origin-Resource-Policy. COEP applies in
    // secure contexts only: the page comes from localhost.
    let embed_site = format!("http://localhost:{}", embedder.addr.port());
    let scripts = format!("{strict_url}/lib.js,{s3_url}/lib.js");
    let seen = load(format!("{embed_site}/?scripts={scripts}")).await;
    assert_eq!(
        seen["scripts"],
        serde_json::json!(["loaded", "blocked"]),
        "{seen}"
    );
    gateway.shutdown().await;
}
