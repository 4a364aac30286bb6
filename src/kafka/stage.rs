//! The one stage loop that fan-out and delivery share: wait for an in-flight
//! permit, poll the consumer, hand each record to the stage, store the
//! offsets of finished work every tick, back off on consumer errors, and on
//! shutdown drain what is in flight and commit.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::BorrowedMessage;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::kafka::consumer::TrackedConsumer;

/// How often finished offsets are stored (the auto-commit sends them).
const STORE_EVERY: Duration = Duration::from_millis(200);
/// Wait after a consumer error before polling again.
const ERROR_BACKOFF: Duration = Duration::from_millis(200);

/// What a stage does with the records its loop hands it.
pub(crate) trait Stage {
    /// A wake-up from outside the consumer (a retry tier's head falling due).
    type Wake: Send;

    /// Resolves with the next wake-up; never, unless the stage has some.
    fn woken(&mut self) -> impl Future<Output = Option<Self::Wake>> + Send {
        std::future::pending()
    }

    fn on_wake(&mut self, _consumer: &TrackedConsumer, _wake: Self::Wake) {}

    /// Every store tick, after the offsets were stored.
    fn on_tick(&mut self) {}

    /// One record. `permit` is one of `max_in_flight`: hold it until the
    /// record's work is done, and complete the record's reference then.
    fn handle(
        &mut self,
        consumer: &TrackedConsumer,
        msg: BorrowedMessage<'_>,
        permit: OwnedSemaphorePermit,
    ) -> impl Future<Output = ()> + Send;
}

/// Runs a stage until `cancel`, then drains (bounded by `shutdown_timeout`)
/// and commits what is done.
pub(crate) async fn run<S: Stage>(
    name: &str,
    consumer: TrackedConsumer,
    stage: &mut S,
    max_in_flight: usize,
    shutdown_timeout: Duration,
    cancel: CancellationToken,
) {
    consumer.status().set_consuming(true);
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    let mut store_tick = tokio::time::interval(STORE_EVERY);
    'poll: loop {
        let permit = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            Some(wake) = stage.woken() => { stage.on_wake(&consumer, wake); continue }
            _ = store_tick.tick() => {
                consumer.store_done();
                stage.on_tick();
                continue
            }
            permit = in_flight.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let msg = loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break 'poll,
                Some(wake) = stage.woken() => stage.on_wake(&consumer, wake),
                _ = store_tick.tick() => {
                    consumer.store_done();
                    stage.on_tick();
                }
                msg = consumer.recv() => break msg,
            }
        };
        match msg {
            Ok(msg) => stage.handle(&consumer, msg, permit).await,
            Err(e) => {
                tracing::warn!(stage = name, error = %e, "Consuming failed; retrying.");
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
    }
    consumer.status().set_consuming(false);
    consumer.drain_and_commit(shutdown_timeout).await;
    tracing::info!(stage = name, "Stage stopped.");
}
