//! The page for people: `GET /` redirects to `/ui/`, which serves a small
//! single-page app (plain HTML, CSS and JavaScript in `src/http/ui/`,
//! compiled into the binary: nothing to deploy, no CDN, works offline).
//! The page reads the same JSON endpoints as any client (index, stats,
//! health, shadow, accuracy, checks) and acts through the same control
//! calls (promote, rollback, shadow), so it shows nothing the API does not
//! say. Charts are SVG drawn by the page itself: a few bars, bands and a
//! heat map over at most a few hundred numbers need no charting library.
//!
//! Strings from the server (model names, failure reasons, file paths) are
//! put into the page as text, never as markup; the Content-Security-Policy
//! below allows only the page's own script and style besides, so that
//! even a mistake there could not run an injected script.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use hyper::{Response, StatusCode};

use super::Body;

const INDEX: &[u8] = include_bytes!("ui/index.html");
const SCRIPT: &[u8] = include_bytes!("ui/app.js");
const STYLE: &[u8] = include_bytes!("ui/app.css");

/// Scripts and styles from the page's own origin only; no inline script,
/// no frames; data: images for the inline favicon.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// `GET /`: to the page.
pub fn redirect() -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::FOUND;
    r.headers_mut()
        .insert(LOCATION, HeaderValue::from_static("/ui/"));
    r
}

/// `GET /ui/` and its assets; `None` for a file the page does not have.
pub fn asset(file: &str) -> Option<Response<Body>> {
    let (content_type, body) = match file {
        "" | "index.html" => ("text/html; charset=utf-8", INDEX),
        "app.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "app.css" => ("text/css; charset=utf-8", STYLE),
        _ => return None,
    };
    let mut r = Response::new(Full::new(Bytes::from_static(body)));
    let headers = r.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The assets change with the binary; a reload should see a new one.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("content-security-policy", HeaderValue::from_static(POLICY));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    Some(r)
}
