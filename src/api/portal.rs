//! The subscriber portal at `/portal`: one owner's web page for endpoints,
//! the catalog, test sends, the delivery log, dead letters, recovery and
//! secrets. Plain HTML, CSS and JavaScript modules embedded in the binary
//! (nothing fetched from another origin, no build step). The page has no
//! private endpoints: it calls the public `/v1` API with the token it was
//! given, so it can do exactly what that token can.
//!
//! Served under a strict Content-Security-Policy (no inline script or
//! style); `api.portal_frame_ancestors` decides who may frame it.

use axum::extract::Path;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The page's files: name under `/portal/assets/`, content type, content.
/// A new page is one module here and one line in `app.js`'s route table.
const ASSETS: &[(&str, &str, &str)] = &[
    ("portal.css", CSS, include_str!("portal/portal.css")),
    ("app.js", JS, include_str!("portal/app.js")),
    ("lib.js", JS, include_str!("portal/lib.js")),
    ("endpoints.js", JS, include_str!("portal/endpoints.js")),
    ("catalog.js", JS, include_str!("portal/catalog.js")),
    ("test.js", JS, include_str!("portal/test.js")),
    ("log.js", JS, include_str!("portal/log.js")),
    (
        "dead_letters.js",
        JS,
        include_str!("portal/dead_letters.js"),
    ),
    ("recover.js", JS, include_str!("portal/recover.js")),
    ("secret.js", JS, include_str!("portal/secret.js")),
];
const INDEX: &str = include_str!("portal/index.html");
const JS: &str = "text/javascript; charset=utf-8";
/// The policy without `api.portal_frame_ancestors`.
const NO_FRAMING_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
const CSS: &str = "text/css; charset=utf-8";

/// The portal's Content-Security-Policy and X-Frame-Options for the
/// configured frame ancestors. X-Frame-Options cannot name another origin,
/// so it is sent only where it says the same as the CSP: `DENY` for none,
/// `SAMEORIGIN` for `'self'` alone; browsers that know CSP follow the CSP.
pub fn security_headers(frame_ancestors: &[String]) -> (String, Option<&'static str>) {
    let csp = if frame_ancestors.is_empty() {
        NO_FRAMING_CSP.to_string()
    } else {
        let ancestors = frame_ancestors.join(" ");
        NO_FRAMING_CSP.replace(
            "frame-ancestors 'none'",
            &format!("frame-ancestors {ancestors}"),
        )
    };
    let xfo = match frame_ancestors {
        [] => Some("DENY"),
        [only] if only == "'self'" => Some("SAMEORIGIN"),
        _ => None,
    };
    (csp, xfo)
}

#[derive(Clone)]
struct Headers {
    csp: HeaderValue,
    xfo: Option<HeaderValue>,
}

impl Headers {
    fn respond(&self, content_type: &'static str, body: &'static str) -> Response {
        let mut response = (
            [
                (header::CONTENT_TYPE, content_type),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::CACHE_CONTROL, "no-cache"),
                (header::REFERRER_POLICY, "no-referrer"),
            ],
            body,
        )
            .into_response();
        let h = response.headers_mut();
        h.insert(header::CONTENT_SECURITY_POLICY, self.csp.clone());
        if let Some(xfo) = &self.xfo {
            h.insert(HeaderName::from_static("x-frame-options"), xfo.clone());
        }
        response
    }
}

/// `/portal` and its assets (no state: every call the page makes goes to
/// `/v1` with the visitor's token).
pub fn router<S: Clone + Send + Sync + 'static>(frame_ancestors: &[String]) -> Router<S> {
    let (csp, xfo) = security_headers(frame_ancestors);
    let headers = Headers {
        // Validated at start (`config::is_frame_source`): always a header
        // value; were it not, no framing at all.
        csp: HeaderValue::from_str(&csp)
            .unwrap_or_else(|_| HeaderValue::from_static(NO_FRAMING_CSP)),
        xfo: xfo.map(HeaderValue::from_static),
    };
    let index = headers.clone();
    Router::new()
        .route(
            "/portal",
            get(move || async move { index.respond("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/portal/assets/{file}",
            get(move |Path(file): Path<String>| async move {
                match ASSETS.iter().find(|(name, _, _)| *name == file) {
                    Some((_, content_type, body)) => headers.respond(content_type, body),
                    None => (StatusCode::NOT_FOUND, "no such file").into_response(),
                }
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::is_frame_source;
    use tower::ServiceExt;

    async fn get(
        frame_ancestors: &[String],
        path: &str,
    ) -> (StatusCode, axum::http::HeaderMap, String) {
        let response = router::<()>(frame_ancestors)
            .oneshot(
                axum::http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn portal_is_served_under_a_strict_csp_and_refuses_framing_by_default() {
        let (status, headers, html) = get(&[], "/portal").await;
        assert_eq!(status, 200);
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("default-src 'self'") && csp.contains("script-src 'self';"));
        assert!(csp.ends_with("frame-ancestors 'none'"));
        assert_eq!(headers["x-frame-options"], "DENY");
        assert!(html.contains("src=\"/portal/assets/app.js\""));
        // Every asset the page needs is served, and none has inline code
        // the CSP would block or writes HTML from strings.
        for (name, _, body) in ASSETS {
            let (status, headers, _) = get(&[], &format!("/portal/assets/{name}")).await;
            assert_eq!(status, 200, "{name}");
            assert!(headers.contains_key(header::CONTENT_SECURITY_POLICY));
            assert!(
                !body.contains("innerHTML") && !body.contains("eval("),
                "{name}"
            );
        }
        assert!(
            !html.contains("<style") && !html.contains(" style=") && !html.contains("<script>")
        );
        // Nothing from another origin.
        assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
        assert_eq!(get(&[], "/portal/assets/nope.js").await.0, 404);
    }

    #[test]
    fn frame_ancestors_follow_the_configuration() {
        let (csp, xfo) = security_headers(&["'self'".into()]);
        assert!(csp.ends_with("frame-ancestors 'self'"));
        assert_eq!(xfo, Some("SAMEORIGIN"));
        let (csp, xfo) = security_headers(&[
            "https://platform.example.com".into(),
            "https://*.example.org".into(),
        ]);
        assert!(csp.ends_with("frame-ancestors https://platform.example.com https://*.example.org"));
        assert_eq!(xfo, None);
        for bad in [
            "*",
            "https://a.com; script-src *",
            "javascript:",
            "'unsafe-inline'",
            "",
        ] {
            assert!(!is_frame_source(bad), "{bad}");
        }
        assert!(is_frame_source("http://localhost:3000"));
    }
}
