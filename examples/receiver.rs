//! A production-shaped webhook receiver for rewardhooks, in Rust (axum):
//!
//! - verifies every request with the Standard Webhooks library
//!   (`standardwebhooks`), which also rejects timestamps more than 5 minutes
//!   away (replays);
//! - deduplicates by `webhook-id` with a bounded store (at-least-once
//!   delivery means the same event can arrive twice);
//! - answers 2xx at once and does the work on a queue, so slow processing
//!   never turns into timeouts and retries; a full queue answers 503 and
//!   rewardhooks retries later.
//!
//! Run it against `rewardhooks dev`:
//!
//! ```sh
//! WEBHOOK_SECRET=whsec_… cargo run --example receiver -- 127.0.0.1:9000
//! ```

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use tokio::sync::mpsc;

/// The last `capacity` webhook ids seen.
pub struct SeenIds {
    ids: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl SeenIds {
    pub fn new(capacity: usize) -> Self {
        SeenIds {
            ids: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// True the first time an id is seen.
    pub fn first_time(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        self.ids.insert(id.to_string());
        self.order.push_back(id.to_string());
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        true
    }
}

#[derive(Clone)]
pub struct Receiver {
    webhook: Arc<standardwebhooks::Webhook>,
    seen: Arc<Mutex<SeenIds>>,
    work: mpsc::Sender<Value>,
}

/// The receiver's routes: `POST /webhook`. Verified, first-seen events go to
/// `work`.
pub fn router(secret: &str, work: mpsc::Sender<Value>) -> Result<Router, String> {
    let webhook = standardwebhooks::Webhook::new(secret).map_err(|e| e.to_string())?;
    let state = Receiver {
        webhook: Arc::new(webhook),
        seen: Arc::new(Mutex::new(SeenIds::new(100_000))),
        work,
    };
    Ok(Router::new()
        .route("/webhook", post(receive))
        .with_state(state))
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if r.webhook.verify(&body, &headers).is_err() {
        // Bad signature or stale timestamp: not from rewardhooks (or replayed).
        return StatusCode::UNAUTHORIZED;
    }
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    if !r.seen.lock().unwrap().first_time(&id) {
        // A redelivery of something already taken: acknowledge, do nothing.
        return StatusCode::OK;
    }
    match r.work.try_send(event) {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(_) => {
            // Busy: forget the id so the retry is taken, and let rewardhooks retry.
            let mut seen = r.seen.lock().unwrap();
            seen.ids.remove(&id);
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = std::env::var("WEBHOOK_SECRET").map_err(|_| "set WEBHOOK_SECRET=whsec_…")?;
    // A port (9000) or an address (127.0.0.1:9000), like the Python and Node receivers.
    let addr = match std::env::args().nth(1) {
        Some(port) if port.parse::<u16>().is_ok() => format!("127.0.0.1:{port}"),
        Some(addr) => addr,
        None => "127.0.0.1:9000".to_string(),
    };
    let (tx, mut rx) = mpsc::channel::<Value>(10_000);
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            // Your work goes here: send the email, update the CRM, …
            println!(
                "{} {} {}",
                event["type"].as_str().unwrap_or_default(),
                event["id"].as_str().unwrap_or_default(),
                event["data"]
            );
        }
    });
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("receiving webhooks on http://{addr}/webhook");
    axum::serve(listener, router(&secret, tx)?).await?;
    Ok(())
}
