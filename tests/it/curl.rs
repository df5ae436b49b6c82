//! The README's curl commands, run with real curl against the real binary started with the
//! default configuration (ports moved to free ones). Needs `curl`; fails, never skips, without it.

use std::process::Command;

use crate::common::*;

fn curl(args: &[&str]) -> String {
    let output = Command::new("curl")
        .args(["-si", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl must be installed (Debian package `curl`)");
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).replace("\r\n", "\n")
}

#[test]
fn the_readme_curl_commands_show_an_allowed_preflight_a_denied_one_and_a_decorated_get() {
    let root = env!("CARGO_MANIFEST_DIR");
    let demo_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let config = std::fs::read_to_string(format!("{root}/config/corsgate.toml"))
        .expect("default config")
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9000", &format!("127.0.0.1:{demo_port}"))
        // The copy lives elsewhere, and paths in a configuration are relative to its file.
        .replace("\"demo-bucket\"", &format!("\"{root}/config/demo-bucket\""))
        .replace(
            "\"cors-app.xml\"",
            &format!("\"{root}/config/cors-app.xml\""),
        );
    let path = config_file(&config);
    let (_gateway, addr) = Binary::start(&["serve", "--config", &path.to_string_lossy()], root);
    let url = format!("http://{addr}/hello.txt");

    let allowed = curl(&[
        "-X",
        "OPTIONS",
        &url,
        "-H",
        "Origin: https://app.example.com",
        "-H",
        "Access-Control-Request-Method: PUT",
        "-H",
        "Access-Control-Request-Headers: content-type",
    ]);
    assert!(allowed.starts_with("HTTP/1.1 200"), "{allowed}");
    assert!(
        allowed.contains("access-control-allow-origin: https://app.example.com\n"),
        "{allowed}"
    );
    assert!(
        allowed.contains("access-control-allow-headers: content-type\n"),
        "{allowed}"
    );

    let denied = curl(&[
        "-X",
        "OPTIONS",
        &url,
        "-H",
        "Origin: https://evil.example.net",
        "-H",
        "Access-Control-Request-Method: PUT",
    ]);
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
    assert!(denied.contains("<Code>AccessForbidden</Code>"), "{denied}");
    assert!(!denied.contains("access-control-"), "{denied}");

    let get = curl(&[&url, "-H", "Origin: https://www.example.com"]);
    assert!(get.starts_with("HTTP/1.1 200"), "{get}");
    assert!(
        get.contains("access-control-allow-origin: https://www.example.com\n"),
        "{get}"
    );
    assert!(
        get.contains("Hello from the corsgate demo bucket."),
        "{get}"
    );
}
