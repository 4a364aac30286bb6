//! Fan-out: read CloudEvents from the input topics, validate them, and write
//! one delivery record per matching subscription (key = subscription id).
//! Invalid records go to the invalid topic. An input offset is stored only
//! once every record it caused is acknowledged by the broker.

use std::sync::Arc;

use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::context::Shared;
use crate::events::{decode, Invalid};
use crate::kafka::consumer::TrackedConsumer;
use crate::kafka::stage::{self, Stage};
use crate::kafka::OwnedRecord;
use crate::metrics::METRICS;
use crate::record::DeliveryHeaders;

pub const ERROR_HEADER: &str = "rewardhooks-error";

/// The fan-out stage: decode, match, write; an input record's work is done
/// when every record it caused is acknowledged.
struct Fanout {
    shared: Arc<Shared>,
}

impl Stage for Fanout {
    type Wake = ();

    async fn handle(
        &mut self,
        consumer: &TrackedConsumer,
        msg: BorrowedMessage<'_>,
        permit: OwnedSemaphorePermit,
    ) {
        let record = consumer.begin(&msg);
        let acks = fan_out(&self.shared, &msg).await;
        let producer = self.shared.producer.clone();
        tokio::spawn(async move {
            acks.wait(&producer).await;
            record.complete();
            drop(permit);
        });
    }
}

pub async fn run(shared: Arc<Shared>, cancel: CancellationToken) -> anyhow::Result<()> {
    shared.store.wait_ready().await;
    let settings = shared.settings.clone();
    let group = crate::kafka::fanout_group(&settings.kafka);
    let consumer = TrackedConsumer::subscribe(
        &settings.kafka,
        &group,
        &settings.kafka.input_topics,
        "cooperative-sticky",
    )?;
    tracing::info!(%group, topics = ?settings.kafka.input_topics, "Fan-out started.");
    stage::run(
        "fanout",
        consumer,
        &mut Fanout { shared },
        settings.delivery.max_in_flight,
        settings.delivery.shutdown_timeout,
        cancel,
    )
    .await;
    Ok(())
}

/// Records produced for one input record, awaiting their acknowledgements.
struct PendingAcks {
    sends: Vec<(OwnedRecord, DeliveryFuture)>,
}

impl PendingAcks {
    /// Waits until every record is acknowledged, producing again on failure:
    /// an input offset may only move on once its outputs are durable.
    async fn wait(self, producer: &FutureProducer) {
        for (record, ack) in self.sends {
            if !matches!(ack.await, Ok(Ok(_))) {
                record.produce_durably(producer).await;
            }
        }
    }
}

/// Decodes and routes one input record, enqueueing its outputs in order.
async fn fan_out(shared: &Shared, msg: &BorrowedMessage<'_>) -> PendingAcks {
    METRICS
        .events_consumed
        .with_label_values(&[msg.topic()])
        .inc();
    let settings = &shared.settings;
    let decoded = decode(
        &shared.catalog,
        settings.events.max_bytes,
        msg.payload(),
        msg.headers(),
        msg.timestamp().to_millis(),
    );
    let mut acks = PendingAcks { sends: Vec::new() };
    match decoded {
        Ok(mut event) => {
            // The body moves into the shared payload: serialized once, copied never.
            let body = Arc::new(std::mem::take(&mut event.body));
            // Built once per event; every subscription's record shares them.
            let headers = DeliveryHeaders::fresh(&event).to_kafka();
            for live in shared.store.matching(&event) {
                let record = OwnedRecord {
                    topic: shared.topics.deliveries.clone(),
                    key: Some(live.sub.id.as_bytes().to_vec()),
                    payload: body.clone(),
                    headers: headers.clone(),
                };
                enqueue(&shared.producer, record, &mut acks).await;
            }
            tracing::debug!(event_id = %event.id, event_type = %event.event_type, "Event fanned out.");
        }
        Err(invalid) => {
            let record = invalid_record(shared, msg, &invalid);
            METRICS
                .events_invalid
                .with_label_values(&[invalid.reason.as_str()])
                .inc();
            tracing::info!(
                topic = msg.topic(),
                partition = msg.partition(),
                offset = msg.offset(),
                reason = invalid.reason.as_str(),
                error = %invalid.message,
                "Invalid event sent to the invalid topic."
            );
            enqueue(&shared.producer, record, &mut acks).await;
        }
    }
    acks
}

fn invalid_record(shared: &Shared, msg: &BorrowedMessage<'_>, invalid: &Invalid) -> OwnedRecord {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = msg.headers() {
        for h in original.iter() {
            headers = headers.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    let error = invalid.to_string();
    let partition = msg.partition().to_string();
    let offset = msg.offset().to_string();
    for (key, value) in [
        (ERROR_HEADER, error.as_str()),
        ("rewardhooks-source-topic", msg.topic()),
        ("rewardhooks-source-partition", partition.as_str()),
        ("rewardhooks-source-offset", offset.as_str()),
    ] {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    OwnedRecord {
        topic: shared.topics.invalid.clone(),
        key: msg.key().map(<[u8]>::to_vec),
        payload: Arc::new(msg.payload().unwrap_or_default().to_vec()),
        headers,
    }
}

/// Hands a record to the producer now (keeping input order), waiting while
/// its queue is full.
async fn enqueue(producer: &FutureProducer, record: OwnedRecord, acks: &mut PendingAcks) {
    let ack = record.enqueue(producer).await;
    acks.sends.push((record, ack));
}
