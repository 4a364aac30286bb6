//! `rewardhooks receive`: a local webhook receiver for trying things out. It
//! verifies each request's Standard Webhooks signature (and that the
//! timestamp is within 5 minutes), prints one line per webhook, and answers
//! 204, or 401 when verification fails. Production receivers are in
//! `examples/` (Rust, Python, Node).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use subtle::ConstantTimeEq;

use crate::signing::{signature_header, Secret};

const TOLERANCE_SECONDS: i64 = 300;

#[derive(Clone)]
struct Receiver {
    key: Arc<Vec<u8>>,
    seen: Arc<Mutex<HashSet<String>>>,
    /// Stop after this many verified webhooks (0: never).
    count: usize,
    done: Arc<tokio::sync::Notify>,
}

/// Whether the headers carry a valid signature of `body` made now-ish.
pub fn verify(key: &[u8], headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), String> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| format!("no {name} header"))
    };
    let id = get("webhook-id")?;
    let ts: i64 = get("webhook-timestamp")?
        .parse()
        .map_err(|_| "webhook-timestamp is not a number".to_string())?;
    if (now - ts).abs() > TOLERANCE_SECONDS {
        return Err(format!("timestamp {ts} is more than 5 minutes from now"));
    }
    let expected = signature_header(&[key], id, ts, body);
    if get("webhook-signature")?
        .split(' ')
        .any(|s| bool::from(s.as_bytes().ct_eq(expected.as_bytes())))
    {
        Ok(())
    } else {
        Err("signature does not match (wrong secret?)".into())
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    match verify(
        &receiver.key,
        &headers,
        &body,
        chrono::Utc::now().timestamp(),
    ) {
        Ok(()) => {
            let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let (fresh, verified) = {
                let mut seen = receiver.seen.lock().unwrap_or_else(|e| e.into_inner());
                (seen.insert(id.clone()), seen.len())
            };
            println!(
                "verified {} {id}{} {}",
                event["type"].as_str().unwrap_or("?"),
                if fresh { "" } else { " (duplicate)" },
                event["data"]
            );
            if receiver.count > 0 && verified >= receiver.count {
                receiver.done.notify_one();
            }
            StatusCode::NO_CONTENT
        }
        Err(why) => {
            println!("rejected {id}: {why}");
            StatusCode::UNAUTHORIZED
        }
    }
}

/// Serves `POST /webhook` (any path) on 127.0.0.1:`port` until Ctrl-C, or
/// until `count` distinct webhooks verified (0: no limit).
pub async fn run(port: u16, secret: String, count: usize) -> anyhow::Result<()> {
    let key = Secret::from_string(secret)
        .key_bytes()
        .ok_or_else(|| anyhow::anyhow!("--secret must be whsec_ followed by base64"))?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on 127.0.0.1:{port}: {e}"))?;
    let done = Arc::new(tokio::sync::Notify::new());
    let state = Receiver {
        key: Arc::new(key),
        seen: Arc::default(),
        count,
        done: done.clone(),
    };
    let router = axum::Router::new()
        .route("/{*path}", post(receive))
        .route("/", post(receive))
        .with_state(state);
    println!(
        "receiving webhooks on http://{}/webhook (verifying signatures; Ctrl-C stops)",
        listener.local_addr()?
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = done.notified() => {}
            }
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_what_the_sample_signs_and_nothing_else() {
        let sample: serde_json::Value = serde_json::from_str(
            &crate::events::docs::sample_webhook("points.earned", None).unwrap(),
        )
        .unwrap();
        let mut headers = HeaderMap::new();
        for (k, v) in sample["headers"].as_object().unwrap() {
            headers.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.as_str().unwrap().parse().unwrap(),
            );
        }
        let body = sample["body"].as_str().unwrap().as_bytes();
        let key = Secret::from_string(sample["secret"].as_str().unwrap().into())
            .key_bytes()
            .unwrap();
        let now = chrono::Utc::now().timestamp();
        assert_eq!(verify(&key, &headers, body, now), Ok(()));
        assert!(verify(&key, &headers, b"{}", now).is_err());
        assert!(verify(&key, &headers, body, now + 600).is_err());
        assert!(verify(&[1, 2, 3], &headers, body, now).is_err());
    }
}
