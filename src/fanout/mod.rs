//! Fan-out: read CloudEvents from the input topics, validate them, and write
//! one delivery record per matching subscription (key = subscription id).
//! Invalid records go to the invalid topic. An input offset is stored only
//! once every record it caused is acknowledged by the broker.
//!
//! Read fence: records are matched in batches, each after the subscription
//! view has applied the subscriptions topic up to end offsets read after
//! every record of the batch was received, so a subscription whose create
//! answered before an event was produced always gets that event. One end
//! offset lookup per batch; batches grow while a lookup is out.

use std::sync::Arc;

use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use crate::context::Shared;
use crate::events::{decode, is_operational, Invalid, InvalidReason};
use crate::kafka::consumer::{RecordRef, TrackedConsumer};
use crate::kafka::stage::{self, Stage};
use crate::kafka::{is_permanent, OwnedRecord};
use crate::metrics::METRICS;
use crate::record::{DeadReason, DeliveryHeaders, SourcePosition};

pub(crate) const ERROR_HEADER: &str = "rewardhooks-error";

/// A received input record on its way through the fence.
struct Received {
    msg: OwnedMessage,
    record: RecordRef,
    permit: OwnedSemaphorePermit,
}

/// The fan-out stage: hands each record, in order, to the matcher.
struct Fanout {
    to_matcher: mpsc::UnboundedSender<Received>,
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
        // Bounded by the stage's in-flight permits.
        let _ = self.to_matcher.send(Received {
            msg: msg.detach(),
            record,
            permit,
        });
    }
}

/// Takes what was received so far as one batch, fences, then decodes,
/// matches and writes each record in order; an input record's work is done
/// when every record it caused is acknowledged.
async fn matcher(shared: Arc<Shared>, mut received: mpsc::UnboundedReceiver<Received>) {
    while let Some(first) = received.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = received.try_recv() {
            batch.push(more);
        }
        // Subscriptions and owners' scopes, both as of now.
        tokio::join!(shared.store.fence(), shared.owners.fence());
        let view = shared.store.positions();
        for r in batch {
            let acks = fan_out(&shared, &r.msg, &view).await;
            let shared = shared.clone();
            tokio::spawn(async move {
                if acks.wait(&shared, &r.msg).await {
                    r.record.complete();
                }
                drop(r.permit);
            });
        }
    }
}

pub async fn run(shared: Arc<Shared>, cancel: CancellationToken) -> anyhow::Result<()> {
    shared.store.wait_ready().await;
    // An owner's scope applies from the first event.
    shared.owners.wait_ready().await;
    let settings = shared.settings.clone();
    let group = crate::kafka::fanout_group(&settings.kafka);
    // Operational events come through here too, so they are matched and
    // delivered like any other event.
    let mut topics = settings.kafka.input_topics.clone();
    topics.push(shared.topics.operational.clone());
    let consumer = TrackedConsumer::subscribe(
        &settings.kafka,
        &group,
        &topics,
        crate::kafka::FANOUT_ASSIGNMENT,
        shared.fanout_status.clone(),
    )?;
    tracing::info!(%group, topics = ?settings.kafka.input_topics, "Fan-out started.");
    let (to_matcher, received) = mpsc::unbounded_channel();
    let matching = tokio::spawn(matcher(shared, received));
    stage::run(
        "fanout",
        consumer,
        &mut Fanout { to_matcher },
        settings.delivery.max_in_flight,
        settings.delivery.shutdown_timeout,
        cancel,
    )
    .await;
    // The sender is gone with the stage: the matcher finishes what it holds.
    let _ = matching.await;
    Ok(())
}

/// Where a record goes if it can never be written (too large, invalid): a
/// reference in the dead-letter or invalid topic, so the input partition
/// moves on with the record accounted for. Built only when needed.
enum Fallback {
    /// A delivery record: dead-lettered as `undeliverable`.
    DeadLetter,
    /// The copy of an invalid input record: its reference instead.
    Invalid { reason: &'static str },
}

/// One record fan-out produced.
struct Output {
    record: OwnedRecord,
    ack: Result<DeliveryFuture, KafkaError>,
    fallback: Fallback,
}

/// Records produced for one input record, awaiting their acknowledgements.
struct PendingAcks {
    /// The event's delivery headers (`None` for an invalid record).
    event: Option<DeliveryHeaders>,
    sends: Vec<Output>,
}

impl PendingAcks {
    /// Waits until every record is acknowledged, producing again on a
    /// transient failure: an input offset may only move on once its outputs
    /// are durable. Returns false, with the partition marked stuck, when an
    /// output and its fallback can both never be written: the input record
    /// then stays unfinished, so nothing is lost.
    async fn wait(self, shared: &Shared, msg: &OwnedMessage) -> bool {
        let producer = &shared.producer;
        for out in self.sends {
            let written = match out.ack {
                Ok(ack) => match ack.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) if is_permanent(&e) => Err(e),
                    _ => out.record.produce_durably(producer).await,
                },
                Err(e) => Err(e),
            };
            let Err(error) = written else { continue };
            tracing::warn!(topic = %out.record.topic, size = out.record.size(), %error, "A record can never be written; writing its reference instead.");
            let fallback =
                fallback_record(shared, msg, self.event.as_ref(), &out.record, &out.fallback);
            if let Err(e) = fallback.produce_durably(producer).await {
                shared.mark_stuck(
                    msg.topic(),
                    msg.partition(),
                    format!(
                        "cannot write a record to {} nor its reference: {e}",
                        out.record.topic
                    ),
                );
                return false;
            }
        }
        true
    }
}

/// The reference that replaces a record that can never be written.
fn fallback_record(
    shared: &Shared,
    msg: &OwnedMessage,
    event: Option<&DeliveryHeaders>,
    record: &OwnedRecord,
    fallback: &Fallback,
) -> OwnedRecord {
    match *fallback {
        Fallback::DeadLetter => {
            let subscription_id = record
                .key
                .as_deref()
                .map(|k| String::from_utf8_lossy(k).into_owned());
            let dead = DeliveryHeaders {
                subscription_id,
                dead_at_ms: Some(chrono::Utc::now().timestamp_millis()),
                dead_reason: Some(DeadReason::Undeliverable),
                last_error: Some("the delivery record can never be written".into()),
                ..event.cloned().unwrap_or_default()
            };
            OwnedRecord {
                topic: shared.topics.dlq.clone(),
                key: record.key.clone(),
                payload: Arc::new(reference(msg, DeadReason::Undeliverable.as_str())),
                headers: Arc::new(dead.to_kafka()),
            }
        }
        Fallback::Invalid { reason } => OwnedRecord {
            payload: Arc::new(reference(msg, reason)),
            ..record.clone_headers()
        },
    }
}

/// What is kept of a record too large to copy: where it is, how big, its
/// first KiB.
fn reference(msg: &OwnedMessage, reason: &str) -> Vec<u8> {
    let payload = msg.payload().unwrap_or_default();
    let head = String::from_utf8_lossy(&payload[..payload.len().min(1024)]).into_owned();
    serde_json::to_vec(&serde_json::json!({
        "reason": reason,
        "source": {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()},
        "size": payload.len(),
        "head": head,
    }))
    .unwrap_or_default()
}

/// Decodes and routes one input record, enqueueing its outputs in order.
async fn fan_out(shared: &Shared, msg: &OwnedMessage, view: &str) -> PendingAcks {
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
    )
    .and_then(|event| {
        if is_operational(&event.event_type) && msg.topic() != shared.topics.operational {
            return Err(Invalid {
                reason: InvalidReason::ReservedType,
                message: format!(
                    "{} is an operational event type; only rewardhooks emits those",
                    event.event_type
                ),
            });
        }
        Ok(event)
    });
    let mut acks = PendingAcks {
        event: None,
        sends: Vec::new(),
    };
    match decoded {
        Ok(mut event) => {
            // The body moves into the shared payload: serialized once, copied never.
            let body = Arc::new(std::mem::take(&mut event.body));
            // Built once per event; every subscription's record shares them.
            let delivery = DeliveryHeaders {
                view: (!view.is_empty()).then(|| view.to_string()),
                source: Some(SourcePosition {
                    topic: msg.topic().to_string(),
                    partition: msg.partition(),
                    offset: msg.offset(),
                }),
                ..DeliveryHeaders::fresh(&event)
            };
            let headers = Arc::new(delivery.to_kafka());
            // The owner's scope is ANDed into each of its subscriptions.
            let matching = shared.store.matching(&event);
            for live in matching
                .iter()
                .filter(|l| shared.owners.allows(&l.sub.owner, &event))
            {
                let record = OwnedRecord {
                    topic: shared.topics.deliveries.clone(),
                    key: Some(live.sub.id.as_bytes().to_vec()),
                    payload: body.clone(),
                    headers: headers.clone(),
                };
                enqueue(&shared.producer, record, Fallback::DeadLetter, &mut acks).await;
            }
            acks.event = Some(delivery);
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
            let fallback = Fallback::Invalid {
                reason: invalid.reason.as_str(),
            };
            enqueue(&shared.producer, record, fallback, &mut acks).await;
        }
    }
    acks
}

fn invalid_record(shared: &Shared, msg: &OwnedMessage, invalid: &Invalid) -> OwnedRecord {
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
    // A record over events.max_bytes is kept as a reference (where it is,
    // its size, its first KiB): a copy could exceed what the producer or
    // the broker take, and would wedge the partition.
    let payload = msg.payload().unwrap_or_default();
    let payload = if payload.len() > shared.settings.events.max_bytes {
        reference(msg, invalid.reason.as_str())
    } else {
        payload.to_vec()
    };
    OwnedRecord {
        topic: shared.topics.invalid.clone(),
        key: msg.key().map(<[u8]>::to_vec),
        payload: Arc::new(payload),
        headers: Arc::new(headers),
    }
}

/// Hands a record to the producer now (keeping input order), waiting while
/// its queue is full.
async fn enqueue(
    producer: &FutureProducer,
    record: OwnedRecord,
    fallback: Fallback,
    acks: &mut PendingAcks,
) {
    let ack = record.enqueue(producer).await;
    acks.sends.push(Output {
        record,
        ack,
        fallback,
    });
}
