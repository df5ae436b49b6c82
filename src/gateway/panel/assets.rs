//! The panel's pages: one HTML shell for every page (the script draws the page the path names),
//! its script, style sheet and icon, all embedded in the binary.

use http::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::gateway::{Body, full};

const SHELL: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");
const ICON: &str = include_str!("assets/icon.svg");

const HTML: &str = "text/html; charset=utf-8";

/// The asset `path` names, with its media type.
fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    Some(match path {
        "/" | "/ui/" => (HTML, SHELL),
        "/ui/app.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "/ui/style.css" => ("text/css; charset=utf-8", STYLE),
        "/ui/icon.svg" => ("image/svg+xml", ICON),
        // `/ui/routes/{n}`: a route's rules editor, drawn by the script.
        p if p.strip_prefix("/ui/routes/").is_some_and(is_route_number) => (HTML, SHELL),
        _ => return None,
    })
}

fn is_route_number(rest: &str) -> bool {
    !rest.is_empty() && rest.len() <= 6 && rest.bytes().all(|b| b.is_ascii_digit())
}

pub fn answer<B>(req: &Request<B>) -> Response<Body> {
    let Some((media_type, body)) = asset(req.uri().path()) else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    if !(req.method() == Method::GET || req.method() == Method::HEAD) {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let mut response = Response::new(full(body));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(media_type));
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_the_shell_and_assets_have_their_types() {
        assert_eq!(asset("/").map(|a| a.0), Some(HTML));
        assert_eq!(asset("/ui/routes/12").map(|a| a.0), Some(HTML));
        assert!(asset("/ui/app.js").is_some_and(|a| a.0.starts_with("text/javascript")));
        for missing in [
            "/ui/routes/",
            "/ui/routes/x",
            "/ui/routes/1/2",
            "/ui/nope",
            "/index.html",
        ] {
            assert!(asset(missing).is_none(), "{missing}");
        }
    }

    #[test]
    fn the_shell_loads_only_its_own_assets_and_has_no_inline_code() {
        for needle in ["<script src=\"/ui/app.js\"", "href=\"/ui/style.css\""] {
            assert!(SHELL.contains(needle), "{needle}");
        }
        // Forbidden by the Content-Security-Policy: they would not run, or not apply.
        for inline in [
            " onclick=",
            " onload=",
            " style=\"",
            "<script>",
            "<style>",
            "http://",
            "https://",
        ] {
            assert!(!SHELL.contains(inline), "{inline}");
        }
    }
}
