//! The attempt log's writer: one per instance. Attempts from every lane are
//! written as one record of the attempts topic per batch, a JSON array
//! ([`crate::attempts::decode`] reads it back): one batch is written at a
//! time and what arrives meanwhile (up to [`MAX_BATCH_BYTES`]) is the next.
//! One produce and one follower read per batch instead of per delivery:
//! `make bench` measured the attempt log at about a third of the CPU of a
//! delivery before (docs/performance.md).
//!
//! A delivery still completes only once its attempt is durable: each waiter
//! hears whether its batch was written.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::FutureProducer;
use tokio::sync::{mpsc, oneshot};

use crate::attempts::AttemptRecord;
use crate::kafka::{is_permanent, OwnedRecord};

/// A batch closes once its JSON reaches this size: far below the 1 MB a
/// broker takes by default, with room for one more attempt (a response body
/// is kept up to `delivery.max_response_bytes`).
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Attempts waiting for the writer; lanes wait when it is full.
const QUEUE: usize = 16 * 1024;

type Waiter = oneshot::Sender<bool>;

/// Hands attempts to the writer task.
pub(super) struct AttemptWriter {
    tx: mpsc::Sender<(AttemptRecord, Waiter)>,
}

impl AttemptWriter {
    /// Starts the writer: batches go to `topic` keyed by `key` (this
    /// instance's, so its batches stay in order in one partition).
    pub fn start(producer: FutureProducer, topic: String, key: String, window: Duration) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let key = key.into_bytes();
        let write = move |payload: Vec<u8>, attempts: Vec<AttemptRecord>| {
            let record = OwnedRecord {
                topic: topic.clone(),
                key: Some(key.clone()),
                payload: Arc::new(payload),
                headers: Arc::default(),
            };
            let producer = producer.clone();
            async move { write_batch(&producer, record, attempts).await }
        };
        tokio::spawn(run(rx, window, MAX_BATCH_BYTES, write));
        AttemptWriter { tx }
    }

    /// Logs one attempt; true once it is durable in the attempts topic,
    /// false when it never can be.
    pub async fn write(&self, attempt: AttemptRecord) -> bool {
        let (done, written) = oneshot::channel();
        if self.tx.send((attempt, done)).await.is_err() {
            return false;
        }
        written.await.unwrap_or(false)
    }
}

/// Group commit: one batch is written at a time, and what arrives while it
/// is written is the next batch. An idle instance writes an attempt at once;
/// under load batches grow with the write's round trip. `window`
/// (`delivery.attempt_log_linger`, 0 by default) waits longer for more.
/// Every waiter hears how its batch went.
async fn run<W, F>(
    mut rx: mpsc::Receiver<(AttemptRecord, Waiter)>,
    window: Duration,
    max_bytes: usize,
    write: W,
) where
    W: Fn(Vec<u8>, Vec<AttemptRecord>) -> F,
    F: Future<Output = bool>,
{
    while let Some(first) = rx.recv().await {
        let deadline = tokio::time::Instant::now() + window;
        let mut payload = b"[".to_vec();
        let mut attempts = Vec::new();
        let mut waiters = Vec::new();
        let mut next = Some(first);
        while let Some((attempt, waiter)) = next.take() {
            if attempts.is_empty() {
                payload.push(b'\n');
            } else {
                payload.extend_from_slice(b",\n");
            }
            // An attempt record is plain data: it always serializes.
            let _ = serde_json::to_writer(&mut payload, &attempt);
            attempts.push(attempt);
            waiters.push(waiter);
            if payload.len() >= max_bytes {
                break;
            }
            // What is already waiting joins; then, within the window, what
            // comes. Nothing more: the batch closes.
            next = match rx.try_recv() {
                Ok(more) => Some(more),
                Err(_) if window.is_zero() => None,
                Err(_) => tokio::time::timeout_at(deadline, rx.recv())
                    .await
                    .unwrap_or_default(),
            };
        }
        payload.extend_from_slice(b"\n]");
        let ok = write(payload, attempts).await;
        for waiter in waiters {
            let _ = waiter.send(ok);
        }
    }
}

/// Writes one batch durably; a batch the broker refuses for good (too
/// large for its limits) is written one attempt per record instead.
async fn write_batch(
    producer: &FutureProducer,
    record: OwnedRecord,
    attempts: Vec<AttemptRecord>,
) -> bool {
    let error = match record.produce_durably(producer).await {
        Ok(()) => return true,
        Err(e) => e,
    };
    if !is_permanent(&error) || attempts.len() == 1 {
        tracing::warn!(attempts = attempts.len(), %error, "Attempt records can never be written; they are missing from the delivery log.");
        return false;
    }
    tracing::info!(attempts = attempts.len(), %error, "An attempt batch was refused; writing its attempts one by one.");
    let mut all = true;
    for attempt in attempts {
        let single = OwnedRecord {
            payload: Arc::new(serde_json::to_vec(&attempt).unwrap_or_default()),
            key: Some(attempt.subscription_id.as_bytes().to_vec()),
            ..record.clone_headers()
        };
        if let Err(e) = single.produce_durably(producer).await {
            tracing::warn!(subscription_id = %attempt.subscription_id, error = %e, "An attempt record can never be written; it is missing from the delivery log.");
            all = false;
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn attempt(n: u32) -> AttemptRecord {
        crate::attempts::sample(&format!("sub_{n}"), n)
    }

    /// Starts `run` with a sink that keeps each batch it is given and
    /// answers `ok`.
    fn writer(
        window: Duration,
        max_bytes: usize,
        ok: bool,
    ) -> (AttemptWriter, Arc<Mutex<Vec<Vec<AttemptRecord>>>>) {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let seen = batches.clone();
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(rx, window, max_bytes, move |payload, attempts| {
            // The payload is what the attempts view reads back.
            assert_eq!(crate::attempts::decode(&payload).unwrap(), attempts);
            seen.lock().unwrap().push(attempts);
            async move { ok }
        }));
        (AttemptWriter { tx }, batches)
    }

    #[tokio::test]
    async fn attempts_of_one_window_share_one_record_and_each_hears_it_was_written() {
        let (writer, batches) = writer(Duration::from_millis(200), MAX_BATCH_BYTES, true);
        let writer = Arc::new(writer);
        let results = futures::future::join_all((0..50).map(|n| {
            let writer = writer.clone();
            async move { writer.write(attempt(n)).await }
        }))
        .await;
        assert!(results.iter().all(|ok| *ok));
        let batches = batches.lock().unwrap();
        assert_eq!(batches.len(), 1, "one window, one record");
        assert_eq!(batches[0].len(), 50);
    }

    #[tokio::test]
    async fn what_arrives_while_a_batch_is_written_is_the_next_batch() {
        // No window: an attempt alone is written at once, and the 30 that
        // come while that write is out go together in the next record.
        let batches = Arc::new(Mutex::new(Vec::new()));
        let seen = batches.clone();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let open = gate.clone();
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(
            rx,
            Duration::ZERO,
            MAX_BATCH_BYTES,
            move |_, attempts| {
                let first = seen.lock().unwrap().is_empty();
                seen.lock().unwrap().push(attempts);
                let gate = gate.clone();
                async move {
                    if first {
                        let _ = gate.acquire().await;
                    }
                    true
                }
            },
        ));
        let writer = Arc::new(AttemptWriter { tx });
        let alone = tokio::spawn({
            let writer = writer.clone();
            async move { writer.write(attempt(0)).await }
        });
        tokio::time::timeout(Duration::from_secs(10), async {
            while batches.lock().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the first attempt is written without waiting for more");
        let rest: Vec<_> = (1..=30)
            .map(|n| {
                let writer = writer.clone();
                tokio::spawn(async move { writer.write(attempt(n)).await })
            })
            .collect();
        // All 30 are queued behind the write that is out.
        tokio::time::timeout(Duration::from_secs(10), async {
            while writer.tx.max_capacity() - writer.tx.capacity() < 30 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the 30 attempts queue behind the write");
        open.add_permits(1);
        assert!(alone.await.unwrap());
        for r in rest {
            assert!(r.await.unwrap());
        }
        let sizes: Vec<usize> = batches.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1, 30]);
    }

    #[tokio::test]
    async fn a_batch_closes_at_its_size_limit() {
        // About 230 bytes per attempt: 2 KiB holds 9 or so.
        let (writer, batches) = writer(Duration::from_secs(5), 2048, true);
        let writer = Arc::new(writer);
        futures::future::join_all((0..40).map(|n| {
            let writer = writer.clone();
            async move { writer.write(attempt(n)).await }
        }))
        .await;
        let batches = batches.lock().unwrap();
        assert!(batches.len() >= 4, "{} batches", batches.len());
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 40);
        assert!(batches.iter().all(|b| b.len() < 40));
    }

    #[tokio::test]
    async fn a_batch_that_is_not_written_fails_each_of_its_attempts() {
        let (writer, _) = writer(Duration::from_millis(10), MAX_BATCH_BYTES, false);
        assert!(!writer.write(attempt(1)).await);
    }
}
