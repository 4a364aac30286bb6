//! The human pages: a landing page at `/` and the API reference at `/docs`,
//! rendered in the browser from `/openapi.json` by a small self-written
//! script (no third-party renderer, nothing fetched from the network). Served
//! with a strict Content-Security-Policy: no inline script or style.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("pages/index.html");
const DOCS: &str = include_str!("pages/docs.html");
const DOCS_JS: &str = include_str!("pages/docs.js");
const CSS: &str = include_str!("pages/pages.css");

/// Only this origin's own files; no inline code, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn page(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// `/`, `/docs` and their assets (no state, no token).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { page("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/docs",
            get(|| async { page("text/html; charset=utf-8", DOCS) }),
        )
        .route(
            "/assets/docs.js",
            get(|| async { page("text/javascript; charset=utf-8", DOCS_JS) }),
        )
        .route(
            "/assets/pages.css",
            get(|| async { page("text/css; charset=utf-8", CSS) }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn get_page(path: &str) -> (axum::http::StatusCode, axum::http::HeaderMap, String) {
        let response = router::<()>()
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
    async fn pages_link_what_they_promise_under_a_strict_csp() {
        let (status, headers, index) = get_page("/").await;
        assert_eq!(status, 200);
        assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CSP);
        for link in ["/docs", "/openapi.json", "/metrics", "/readyz"] {
            assert!(index.contains(&format!("href=\"{link}\"")), "{link}");
        }
        let (_, _, docs) = get_page("/docs").await;
        assert!(docs.contains("src=\"/assets/docs.js\""));
        // No inline script or style anywhere: the CSP would block it.
        for html in [&index, &docs] {
            assert!(
                !html.contains("<script>") && !html.contains("<style") && !html.contains(" style=")
            );
            assert!(!html.contains("onclick") && !html.contains("onload"));
        }
        let (status, headers, js) = get_page("/assets/docs.js").await;
        assert_eq!(status, 200);
        assert!(headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/javascript"));
        assert!(js.contains("fetch(\"/openapi.json\")"));
        assert!(!js.contains("innerHTML") && !js.contains("eval("));
        assert_eq!(get_page("/assets/pages.css").await.0, 200);
    }
}
