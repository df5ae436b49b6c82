//! A real browser through the gateway: headless Chromium loads a page from one local origin and
//! calls `fetch()` cross-origin through corsgate. Needs the Debian package `chromium`
//! (`/usr/bin/chromium`, or `$CHROMIUM`); fails, never skips, when it is missing.

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;
use http::Method;

/// The page: PUT with a custom header through the gateway, then report what JS could see.
const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>corsgate browser test</title></head>
<body><pre id="result">pending</pre>
<script>
(async () => {
  const gateway = new URLSearchParams(location.search).get("gateway");
  const out = {};
  try {
    const r = await fetch(gateway + "/uploads/cat.txt", {
      method: "PUT",
      headers: { "X-Custom": "from-the-page", "Content-Type": "text/plain" },
      body: "meow",
    });
    out.status = r.status;
    out.etag = r.headers.get("ETag");
    out.secret = r.headers.get("X-Secret");
    out.body = await r.text();
    const timing = performance.getEntriesByType("resource").filter(e => e.name.startsWith(gateway)).pop();
    out.protocol = timing ? timing.nextHopProtocol : null;
  } catch (e) {
    out.error = String(e);
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

/// Loads `url` in a fresh headless Chromium (with `extra` flags) and returns the page's
/// `#result` text.
fn run_page(url: &str, extra: &[&str]) -> serde_json::Value {
    let profile = std::env::temp_dir().join(format!(
        "corsgate-chromium-{}-{}",
        std::process::id(),
        url.len() ^ url.as_ptr() as usize
    ));
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
            "--dump-dom",
        ])
        .args(extra)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_sees_exactly_what_the_rules_allow() {
    chromium();
    let page = Reply {
        headers: vec![("content-type", "text/html; charset=utf-8")],
        body: PAGE.into(),
        ..Reply::default()
    };
    let allowed_site = Origin::start(page.clone()).await;
    let other_site = Origin::start(page).await;
    let bucket = Origin::start(Reply {
        headers: vec![
            ("etag", "\"v1\""),
            ("x-secret", "hidden"),
            ("access-control-allow-origin", "*"),
        ],
        body: "stored".into(),
        ..Reply::default()
    })
    .await;
    let rules = format!(
        "<CORSConfiguration><CORSRule>\
           <AllowedOrigin>{}</AllowedOrigin>\
           <AllowedMethod>PUT</AllowedMethod><AllowedMethod>GET</AllowedMethod>\
           <AllowedHeader>x-custom</AllowedHeader><AllowedHeader>content-type</AllowedHeader>\
           <ExposeHeader>ETag</ExposeHeader>\
         </CORSRule></CORSConfiguration>",
        allowed_site.url()
    );
    let gateway = gateway_for(&bucket, Some(&rules)).await;
    let gateway_url = format!("http://{}", gateway.addr());

    let url = format!("{}/?gateway={gateway_url}", allowed_site.url());
    let allowed = tokio::task::spawn_blocking(move || run_page(&url, &[]))
        .await
        .expect("chromium task");
    assert_eq!(allowed["status"], 200, "{allowed}");
    assert_eq!(
        allowed["etag"], "\"v1\"",
        "an exposed header is readable: {allowed}"
    );
    assert_eq!(
        allowed["secret"],
        serde_json::Value::Null,
        "an unexposed header is not: {allowed}"
    );
    assert_eq!(allowed["body"], "stored");
    let puts: Vec<_> = bucket
        .received()
        .into_iter()
        .filter(|r| r.method == Method::PUT)
        .collect();
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].headers["x-custom"], "from-the-page");
    assert_eq!(puts[0].body_len, 4);

    let url = format!("{}/?gateway={gateway_url}", other_site.url());
    let blocked = tokio::task::spawn_blocking(move || run_page(&url, &[]))
        .await
        .expect("chromium task");
    assert!(
        blocked["error"]
            .as_str()
            .is_some_and(|e| e.contains("TypeError")),
        "a disallowed origin's fetch must fail: {blocked}"
    );
    // The preflight was refused, so the browser never sent the PUT.
    let puts = bucket
        .received()
        .into_iter()
        .filter(|r| r.method == Method::PUT)
        .count();
    assert_eq!(puts, 1);
    assert!(
        bucket
            .received()
            .iter()
            .all(|r| r.method != Method::OPTIONS),
        "preflights reached the origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_talks_http2_over_tls_to_the_gateway_and_sees_the_same_cors() {
    use crate::common::pki::TestCa;
    use corsgate::config::TlsListenerConfig;
    use corsgate::tls::UnknownName;

    chromium();
    let page = Reply {
        headers: vec![("content-type", "text/html; charset=utf-8")],
        body: PAGE.into(),
        ..Reply::default()
    };
    let site = Origin::start(page).await;
    let bucket = Origin::start(Reply {
        headers: vec![
            ("etag", "\"v1\""),
            ("x-secret", "hidden"),
            // Lets the page read the protocol of the cross-origin fetch from Resource Timing.
            ("timing-allow-origin", "*"),
        ],
        body: "stored".into(),
        ..Reply::default()
    })
    .await;
    let rules = format!(
        "<CORSConfiguration><CORSRule>\
           <AllowedOrigin>{}</AllowedOrigin>\
           <AllowedMethod>PUT</AllowedMethod>\
           <AllowedHeader>x-custom</AllowedHeader><AllowedHeader>content-type</AllowedHeader>\
           <ExposeHeader>ETag</ExposeHeader>\
         </CORSRule></CORSConfiguration>",
        site.url()
    );
    let ca = TestCa::new("browser");
    let leaf = ca.leaf(&["gateway.test"]);
    let mut config = config(vec![route(&["*"], &bucket, Some(&rules))]);
    config.server.listen = Vec::new();
    config.server.tls = vec![TlsListenerConfig {
        listen: vec![std::net::SocketAddr::from(([127, 0, 0, 1], 0))],
        certs: vec![leaf.files.clone()],
        unknown_name: UnknownName::DefaultCert,
    }];
    let gateway = start(config).await;
    let gateway_url = format!("https://gateway.test:{}", gateway.tls_addrs[0].port());

    let url = format!("{}/?gateway={gateway_url}", site.url());
    let seen = tokio::task::spawn_blocking(move || {
        run_page(
            &url,
            &[
                // The test CA is not in Chromium's store; the name resolves only here.
                "--ignore-certificate-errors",
                "--host-resolver-rules=MAP gateway.test 127.0.0.1",
            ],
        )
    })
    .await
    .expect("chromium task");
    assert_eq!(seen["status"], 200, "{seen}");
    assert_eq!(seen["protocol"], "h2", "{seen}");
    assert_eq!(seen["etag"], "\"v1\"", "{seen}");
    assert_eq!(seen["secret"], serde_json::Value::Null, "{seen}");
    assert_eq!(seen["body"], "stored");
    let received = bucket.received();
    assert_eq!(received.len(), 1, "only the PUT is forwarded: {received:?}");
    assert_eq!(received[0].headers["x-forwarded-proto"], "https");
    assert_eq!(received[0].headers["x-custom"], "from-the-page");
}
