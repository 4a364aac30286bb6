//! Recovery jobs: send a subscription every event of a time window again,
//! read from the input topics' retention (`POST …/recover`), and resending
//! one event read back from its recorded position (`POST …/resend`).
//!
//! A job's plan is fixed when it is created: per input partition, the first
//! offset at or after `since` (offsets-for-times) and the end offset at
//! `until` (the high watermark when `until` is now). Jobs live in the
//! compacted `<prefix>.recoveries` topic (key = job id), which every
//! instance follows; the instance that holds the topic's one partition in
//! the `<group_id>.recover` consumer group runs every running job, so one
//! instance runs a job at a time and another takes over within a session
//! timeout when it dies.
//!
//! Exactly-once from the job: a job checkpoints (per-partition next offset,
//! counts, and where on the deliveries topic its next writes land) only
//! after every delivery before it is acknowledged. A takeover first reads
//! the deliveries topic from that position and skips the input records the
//! job already wrote (each delivery names its job and source record), so a
//! crash between a write and the checkpoint writes nothing twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message, OwnedMessage};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::config::KafkaSettings;
use crate::context::Shared;
use crate::events::{decode, Event};
use crate::kafka::{client_config, ClientKind, OwnedRecord};
use crate::record::{DeliveryHeaders, SourcePosition};

pub(crate) use crate::recoveries::job_matches;
use crate::recoveries::KAFKA_TIMEOUT;
pub use crate::recoveries::{
    IdempotencyStamp, PartitionRange, Recoveries, Recovery, RecoveryError, RecoveryStatus,
};

/// Input records read between checkpoints, at most.
const BATCH: usize = 500;
/// A job pauses while the delivery stage is this many records behind its
/// last write on the subscription's deliveries partition, so its
/// deliveries never queue far ahead of live ones in the subscription's
/// lane.
const MAX_AHEAD: i64 = 100;
/// A job whose runs fail this many times in a row ends as failed.
const MAX_FAILURES: u32 = 10;

fn reader(settings: &KafkaSettings, name: &str) -> Result<BaseConsumer, KafkaError> {
    let mut config = client_config(settings, ClientKind::Consumer);
    config
        .set("group.id", format!("{}.{name}", settings.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    config.create()
}

/// Reads the assigned partitions from their assigned offsets to their
/// ends, as the fetch reports them (some brokers answer the high watermark
/// with the last batch's base offset, so it can be short of the end).
fn read_to_end(
    consumer: &BaseConsumer,
    tpl: &TopicPartitionList,
    deadline: Duration,
    mut each: impl FnMut(&BorrowedMessage<'_>),
) -> Result<(), RecoveryError> {
    let mut open: HashSet<(String, i32)> = tpl
        .elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect();
    if open.is_empty() {
        return Ok(());
    }
    consumer.assign(tpl)?;
    let deadline = Instant::now() + deadline;
    while !open.is_empty() {
        if Instant::now() > deadline {
            return Err(RecoveryError::Other("timed out reading to the end".into()));
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(msg)) => each(&msg),
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.retain(|(_, partition)| *partition != p);
            }
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    Ok(())
}

/// The end of each partition (one past its last record), found by reading
/// from its high watermark.
fn true_ends(
    settings: &KafkaSettings,
    topic: &str,
    highs: &HashMap<i32, i64>,
) -> Result<HashMap<i32, i64>, RecoveryError> {
    let consumer = reader(settings, "recover-ends")?;
    let mut tpl = TopicPartitionList::new();
    for (p, high) in highs {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*high))?;
    }
    let mut ends = highs.clone();
    read_to_end(&consumer, &tpl, KAFKA_TIMEOUT, |msg| {
        let end = ends.entry(msg.partition()).or_insert(0);
        *end = (*end).max(msg.offset() + 1);
    })?;
    Ok(ends)
}

/// The job's plan: every input partition's range for `[since, until)`, and
/// the `until` used. Refuses a window that starts before the earliest
/// record still held (`OutsideRetention`).
pub(crate) async fn plan(
    shared: &Shared,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
) -> Result<(DateTime<Utc>, Vec<PartitionRange>), RecoveryError> {
    let settings = shared.settings.kafka.clone();
    tokio::task::spawn_blocking(move || plan_blocking(&settings, since, until))
        .await
        .map_err(|e| RecoveryError::Other(e.to_string()))?
}

fn plan_blocking(
    settings: &KafkaSettings,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
) -> Result<(DateTime<Utc>, Vec<PartitionRange>), RecoveryError> {
    let consumer = reader(settings, "recover-plan")?;
    let timeout = Timeout::After(KAFKA_TIMEOUT);
    let until_at = until.unwrap_or_else(Utc::now);
    let mut ranges = Vec::new();
    let mut firsts = TopicPartitionList::new();
    for topic in &settings.input_topics {
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        let mut highs = HashMap::new();
        let mut lows = HashMap::new();
        for p in &partitions {
            let (low, high) = consumer.fetch_watermarks(topic, *p, timeout)?;
            lows.insert(*p, low);
            highs.insert(*p, high);
        }
        let real_ends = true_ends(settings, topic, &highs)?;
        let mut at_since = TopicPartitionList::new();
        let mut at_until = TopicPartitionList::new();
        for p in &partitions {
            let (low, end) = (lows[p], real_ends.get(p).copied().unwrap_or(0));
            if low < end {
                firsts.add_partition_offset(topic, *p, Offset::Offset(low))?;
            }
            at_since.add_partition_offset(topic, *p, Offset::Offset(since.timestamp_millis()))?;
            at_until.add_partition_offset(
                topic,
                *p,
                Offset::Offset(until_at.timestamp_millis()),
            )?;
        }
        let starts = consumer.offsets_for_times(at_since, timeout)?;
        let ends = if until.is_some() {
            Some(consumer.offsets_for_times(at_until, timeout)?)
        } else {
            None
        };
        for p in partitions {
            let (low, high) = (lows[&p], real_ends.get(&p).copied().unwrap_or(0));
            let hint =
                |list: &TopicPartitionList| match list.find_partition(topic, p).map(|e| e.offset())
                {
                    Some(Offset::Offset(o)) => o.clamp(low, high),
                    _ => high,
                };
            let bounds = Bounds {
                consumer: &consumer,
                topic,
                partition: p,
                low,
                end: high,
            };
            let next = bounds.offset_for_time(since.timestamp_millis(), hint(&starts))?;
            let end = match &ends {
                Some(ends) => bounds.offset_for_time(until_at.timestamp_millis(), hint(ends))?,
                None => high,
            };
            ranges.push(PartitionRange {
                topic: topic.clone(),
                partition: p,
                next,
                end: end.max(next),
            });
        }
    }
    if let Some(earliest) = earliest_held(&consumer, firsts)? {
        if since < earliest {
            return Err(RecoveryError::OutsideRetention { earliest });
        }
    }
    Ok((until_at, ranges))
}

/// One partition's offsets `[low, end)`, searched by record time.
struct Bounds<'a> {
    consumer: &'a BaseConsumer,
    topic: &'a str,
    partition: i32,
    low: i64,
    end: i64,
}

impl Bounds<'_> {
    /// The first record at or after `offset`: (its offset, its timestamp);
    /// `None` past the end.
    fn record_at(&self, offset: i64) -> Result<Option<(i64, i64)>, RecoveryError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(self.topic, self.partition, Offset::Offset(offset))?;
        self.consumer.assign(&tpl)?;
        let deadline = Instant::now() + KAFKA_TIMEOUT;
        while Instant::now() < deadline {
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m))
                    if m.topic() == self.topic
                        && m.partition() == self.partition
                        && m.offset() >= offset =>
                {
                    return Ok(Some((m.offset(), m.timestamp().to_millis().unwrap_or(0))));
                }
                Some(Err(KafkaError::PartitionEOF(p))) if p == self.partition => return Ok(None),
                Some(Err(KafkaError::PartitionEOF(_))) | Some(Ok(_)) | None => {}
                Some(Err(e)) => return Err(e.into()),
            }
        }
        Err(RecoveryError::Other(format!(
            "timed out reading {}[{}] at {offset}",
            self.topic, self.partition
        )))
    }

    /// The first offset whose record's timestamp is at or after `t` (the
    /// end when none is). `hint` is the broker's offsets-for-times answer,
    /// used when the records around it confirm it (some Kafka-compatible
    /// brokers ignore the timestamp); otherwise a binary search by record
    /// time.
    fn offset_for_time(&self, t: i64, hint: i64) -> Result<i64, RecoveryError> {
        if self.low >= self.end {
            return Ok(self.end);
        }
        let at_or_after = |c: i64| -> Result<bool, RecoveryError> {
            Ok(c >= self.end || self.record_at(c)?.is_none_or(|(_, ts)| ts >= t))
        };
        let before = |c: i64| -> Result<bool, RecoveryError> {
            if c <= self.low {
                return Ok(true);
            }
            // The record just before `c`: found by reading from c - 1.
            Ok(self
                .record_at(c - 1)?
                .is_some_and(|(o, ts)| o >= c || ts < t))
        };
        if at_or_after(hint)? && before(hint)? {
            return Ok(hint);
        }
        let (mut lo, mut hi) = (self.low, self.end);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.record_at(mid)? {
                Some((found, ts)) if ts < t => lo = found + 1,
                _ => hi = mid,
            }
        }
        Ok(lo)
    }
}

/// The time of the oldest record still held in any input partition.
fn earliest_held(
    consumer: &BaseConsumer,
    firsts: TopicPartitionList,
) -> Result<Option<DateTime<Utc>>, RecoveryError> {
    let mut waiting = firsts.count();
    if waiting == 0 {
        return Ok(None);
    }
    consumer.assign(&firsts)?;
    let mut seen = HashSet::new();
    let mut earliest: Option<i64> = None;
    let deadline = Instant::now() + KAFKA_TIMEOUT;
    while waiting > 0 && Instant::now() < deadline {
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = match result {
            Ok(msg) => msg,
            Err(KafkaError::PartitionEOF(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        if seen.insert((msg.topic().to_string(), msg.partition())) {
            waiting -= 1;
            if let Some(ts) = msg.timestamp().to_millis() {
                earliest = Some(earliest.map_or(ts, |e| e.min(ts)));
            }
            let mut one = TopicPartitionList::new();
            one.add_partition(msg.topic(), msg.partition());
            let _ = consumer.pause(&one);
        }
    }
    Ok(earliest.and_then(DateTime::from_timestamp_millis))
}

/// Reads the input record at `source` again (for `resend`).
pub(crate) async fn read_at(
    shared: &Shared,
    source: &SourcePosition,
) -> Result<OwnedMessage, RecoveryError> {
    let settings = shared.settings.kafka.clone();
    let source = source.clone();
    tokio::task::spawn_blocking(move || {
        let consumer = reader(&settings, "resend")?;
        let timeout = Timeout::After(KAFKA_TIMEOUT);
        let (low, _) = consumer.fetch_watermarks(&source.topic, source.partition, timeout)?;
        if source.offset < low {
            return Err(RecoveryError::Expired);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &source.topic,
            source.partition,
            Offset::Offset(source.offset),
        )?;
        consumer.assign(&tpl)?;
        let deadline = Instant::now() + KAFKA_TIMEOUT;
        while Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(msg)) if msg.offset() == source.offset => return Ok(msg.detach()),
                Some(Ok(_)) | Some(Err(KafkaError::PartitionEOF(_))) => {
                    return Err(RecoveryError::NotFound)
                }
                None => {}
                Some(Err(e)) => return Err(e.into()),
            }
        }
        Err(RecoveryError::Other("timed out reading the event".into()))
    })
    .await
    .map_err(|e| RecoveryError::Other(e.to_string()))?
}

/// A fresh delivery of `event` (read from `msg`) to `subscription_id`,
/// as fan-out writes it: key = subscription id, body = the outbound body.
pub(crate) fn delivery_record(
    shared: &Shared,
    subscription_id: &str,
    event: &Event,
    source: SourcePosition,
    recovery: Option<String>,
) -> OwnedRecord {
    let view = shared.store.positions();
    let headers = DeliveryHeaders {
        view: (!view.is_empty()).then_some(view),
        source: Some(source),
        recovery,
        ..DeliveryHeaders::fresh(event)
    };
    OwnedRecord {
        topic: shared.topics.deliveries.clone(),
        key: Some(subscription_id.as_bytes().to_vec()),
        payload: Arc::new(event.body.clone()),
        headers: Arc::new(headers.to_kafka()),
    }
}

/// Decodes an input record as fan-out does.
pub(crate) fn decode_record(shared: &Shared, msg: &OwnedMessage) -> Option<Event> {
    decode(
        &shared.catalog,
        shared.settings.events.max_bytes,
        msg.payload(),
        msg.headers(),
        msg.timestamp().to_millis(),
    )
    .ok()
}

/// Runs every running job while this instance holds the recoveries
/// partition in the `<group_id>.recover` group.
pub async fn run(shared: Arc<Shared>, cancel: CancellationToken) -> anyhow::Result<()> {
    let kafka = &shared.settings.kafka;
    let mut config = client_config(kafka, ClientKind::Consumer);
    config
        .set("group.id", format!("{}.recover", kafka.group_id))
        // Sticky: an instance joining does not take the jobs from the one
        // running them; only a departure moves them.
        .set(
            "partition.assignment.strategy",
            crate::kafka::FANOUT_ASSIGNMENT,
        )
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "latest");
    let consumer: StreamConsumer = config.create()?;
    consumer.subscribe(&[&shared.topics.recoveries])?;
    let mut owning: Option<CancellationToken> = None;
    let mut tasks: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    // Consecutive failed runs per job.
    let failures: Arc<std::sync::Mutex<HashMap<String, u32>>> = Arc::default();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            // Polling drives the group membership; the records are read by
            // the view.
            _ = tokio::time::timeout(Duration::from_millis(500), consumer.recv()) => {}
        }
        let holds = consumer.assignment().is_ok_and(|a| a.count() > 0);
        match (holds, &owning) {
            (true, None) => {
                if let Err(e) = shared.recoveries.fence().await {
                    tracing::warn!(error = %e, "Cannot read the recoveries topic to its end; retrying.");
                    continue;
                }
                tracing::info!("This instance runs the recovery jobs.");
                owning = Some(cancel.child_token());
            }
            (false, Some(token)) => {
                tracing::info!("Another instance runs the recovery jobs now.");
                token.cancel();
                owning = None;
                for (_, task) in tasks.drain() {
                    let _ = task.await;
                }
            }
            _ => {}
        }
        let Some(token) = &owning else { continue };
        tasks.retain(|_, t| !t.is_finished());
        for job in shared.recoveries.running() {
            if let std::collections::hash_map::Entry::Vacant(slot) = tasks.entry(job.id) {
                let (shared, token, id) = (shared.clone(), token.clone(), slot.key().clone());
                let failures = failures.clone();
                slot.insert(tokio::spawn(async move {
                    let Err(e) = run_job(&shared, &id, &token).await else {
                        failures.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                        return;
                    };
                    let failed = {
                        let mut failures = failures.lock().unwrap_or_else(|e| e.into_inner());
                        let n = failures.entry(id.clone()).or_insert(0);
                        *n += 1;
                        *n
                    };
                    if failed < MAX_FAILURES {
                        tracing::warn!(recovery_id = %id, error = %e, failed, "Recovery job interrupted; it resumes from its checkpoint.");
                        tokio::time::sleep(Duration::from_secs(failed.into())).await;
                        return;
                    }
                    // Something that does not pass (a topic gone, a record
                    // Kafka keeps refusing): the job ends as failed.
                    let Some(job) = shared.recoveries.get(&id) else { return };
                    if let Err(e2) = finish(&shared, job, RecoveryStatus::Failed, Some(e.to_string())).await {
                        tracing::warn!(recovery_id = %id, error = %e2, "Cannot mark a recovery job failed; it is tried again.");
                    }
                }));
            }
        }
    }
    if let Some(token) = owning {
        token.cancel();
    }
    for (_, task) in tasks.drain() {
        let _ = task.await;
    }
    Ok(())
}

/// The input records a job wrote after its last checkpoint, found on the
/// deliveries topic: skipped when the job reads them again.
fn written_since_checkpoint(
    settings: &KafkaSettings,
    topic: &str,
    job: &Recovery,
) -> Result<HashSet<SourcePosition>, RecoveryError> {
    let mut written = HashSet::new();
    if job.deliveries_from.is_empty() {
        return Ok(written);
    }
    let consumer = reader(settings, "recover-resume")?;
    let mut tpl = TopicPartitionList::new();
    for (p, from) in &job.deliveries_from {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*from))?;
    }
    read_to_end(&consumer, &tpl, Duration::from_secs(120), |msg| {
        if let Ok(h) = DeliveryHeaders::from_kafka(msg.headers()) {
            if h.recovery.as_deref() == Some(job.id.as_str()) {
                written.extend(h.source);
            }
        }
    })?;
    Ok(written)
}

/// High watermarks of every deliveries partition: a new job's first
/// writes land at or after them.
fn deliveries_ends(
    settings: &KafkaSettings,
    topic: &str,
) -> Result<BTreeMap<i32, i64>, RecoveryError> {
    let consumer = reader(settings, "recover-resume")?;
    let timeout = Timeout::After(KAFKA_TIMEOUT);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut ends = BTreeMap::new();
    for p in metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
    {
        let (_, high) = consumer.fetch_watermarks(topic, p, timeout)?;
        ends.insert(p, high);
    }
    Ok(ends)
}

/// Runs one job from its checkpoint until it ends, or until `stop`.
async fn run_job(
    shared: &Arc<Shared>,
    id: &str,
    stop: &CancellationToken,
) -> Result<(), RecoveryError> {
    let Some(mut job) = shared.recoveries.get(id) else {
        return Ok(());
    };
    if job.status.is_terminal() {
        return Ok(());
    }
    let settings = shared.settings.kafka.clone();
    let deliveries = shared.topics.deliveries.clone();
    // Where this run's writes can land, known before the first one.
    let resume = job.clone();
    let (skip, ends) = tokio::task::spawn_blocking(move || {
        let skip = written_since_checkpoint(&settings, &deliveries, &resume)?;
        let ends = deliveries_ends(&settings, &deliveries)?;
        Ok::<_, RecoveryError>((skip, ends))
    })
    .await
    .map_err(|e| RecoveryError::Other(e.to_string()))??;
    if !skip.is_empty() {
        tracing::info!(recovery_id = %id, already_written = skip.len(), "Resuming a recovery job after its checkpoint; skipping what it already wrote.");
    }
    job.deliveries_from = ends;
    job.updated_at = Utc::now();
    shared.recoveries.write(&job).await?;
    tracing::info!(recovery_id = %id, subscription_id = %job.subscription_id, "Recovery job running.");

    let consumer = reader(&shared.settings.kafka, "recover-reader")?;
    let mut tpl = TopicPartitionList::new();
    for r in job.partitions.iter().filter(|r| r.next < r.end) {
        tpl.add_partition_offset(&r.topic, r.partition, Offset::Offset(r.next))?;
    }
    if tpl.count() > 0 {
        consumer.assign(&tpl)?;
    }
    let consumer = Arc::new(consumer);
    let mut checker = client_config(&shared.settings.kafka, ClientKind::Consumer);
    checker.set(
        "group.id",
        crate::kafka::deliver_group(&shared.settings.kafka),
    );
    let checker: BaseConsumer = checker.create()?;
    let rate = f64::from(shared.settings.recovery.max_events_per_second.max(1));
    let started = Instant::now();
    let mut read_this_run: u64 = 0;
    let since_ms = job.since.timestamp_millis();
    let until_ms = job.until.timestamp_millis();
    while !job.done() {
        if stop.is_cancelled() {
            return Ok(());
        }
        // Cancelled through the API, or the subscription is gone.
        if let Some(seen) = shared.recoveries.get(id) {
            if seen.status == RecoveryStatus::Cancelled {
                return finish(shared, job, RecoveryStatus::Cancelled, None).await;
            }
        }
        let Some(live) = shared.store.get(&job.subscription_id) else {
            let why = "the subscription was deleted".to_string();
            return finish(shared, job, RecoveryStatus::Failed, Some(why)).await;
        };
        if !wait_for_delivery(shared, &checker, &job, stop).await {
            return Ok(());
        }
        let batch = read_batch(&consumer, &job).await?;
        let mut acks = Vec::new();
        for msg in &batch {
            let Some(range) = job
                .partitions
                .iter_mut()
                .find(|r| r.topic == msg.topic() && r.partition == msg.partition())
            else {
                continue;
            };
            if msg.offset() < range.next || msg.offset() >= range.end {
                continue;
            }
            range.next = msg.offset() + 1;
            job.scanned += 1;
            read_this_run += 1;
            let in_window = msg
                .timestamp()
                .to_millis()
                .is_some_and(|ts| ts >= since_ms && ts < until_ms);
            let Some(event) = decode_record(shared, msg).filter(|_| in_window) else {
                continue;
            };
            // The owner's scope, as for every fresh delivery.
            if !job_matches(&live, &job, &event) || !shared.owners.allows(&live.sub.owner, &event) {
                continue;
            }
            job.matched += 1;
            let source = SourcePosition {
                topic: msg.topic().to_string(),
                partition: msg.partition(),
                offset: msg.offset(),
            };
            if skip.contains(&source) {
                job.written += 1;
                continue;
            }
            let record = delivery_record(
                shared,
                &job.subscription_id,
                &event,
                source,
                Some(job.id.clone()),
            );
            acks.push(tokio::spawn({
                let producer = shared.producer.clone();
                async move { record.produce_durably_at(&producer).await }
            }));
        }
        // Position updates for partitions that reached their end without
        // a record at end - 1 (gaps, transaction markers).
        for r in job.partitions.iter_mut().filter(|r| r.next < r.end) {
            if let Ok(positions) = consumer.position() {
                if let Some(Offset::Offset(o)) = positions
                    .find_partition(&r.topic, r.partition)
                    .map(|e| e.offset())
                {
                    if batch.is_empty() && o >= r.end {
                        r.next = r.end;
                    }
                }
            }
        }
        let mut landed: BTreeMap<i32, i64> = BTreeMap::new();
        for ack in acks {
            let (partition, offset) = ack
                .await
                .map_err(|e| RecoveryError::Other(e.to_string()))??;
            let next = landed.entry(partition).or_insert(offset + 1);
            *next = (*next).max(offset + 1);
            job.written += 1;
        }
        if !landed.is_empty() {
            job.deliveries_from = landed;
        }
        job.updated_at = Utc::now();
        shared.recoveries.write(&job).await?;
        // Bounded rate: never ahead of max_events_per_second.
        let due = Duration::from_secs_f64(read_this_run as f64 / rate);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
    finish(shared, job, RecoveryStatus::Finished, None).await
}

/// Waits while the delivery stage is more than [`MAX_AHEAD`] records
/// behind the job's last write (its committed offset on the partition the
/// job writes to). False when stopped.
async fn wait_for_delivery(
    shared: &Shared,
    checker: &BaseConsumer,
    job: &Recovery,
    stop: &CancellationToken,
) -> bool {
    // Known once the job has written: a subscription's deliveries all go
    // to one partition.
    let [(partition, next)] = job
        .deliveries_from
        .iter()
        .map(|(p, o)| (*p, *o))
        .collect::<Vec<_>>()[..]
    else {
        return true;
    };
    loop {
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition(&shared.topics.deliveries, partition)
            .set_offset(Offset::Invalid)
            .is_err()
        {
            return true;
        }
        let committed = tokio::task::block_in_place(|| {
            checker.committed_offsets(tpl, Timeout::After(KAFKA_TIMEOUT))
        });
        let behind = match committed.ok().and_then(|c| {
            c.find_partition(&shared.topics.deliveries, partition)
                .map(|e| e.offset())
        }) {
            Some(Offset::Offset(done)) => next - done,
            _ => return true,
        };
        if behind <= MAX_AHEAD {
            return true;
        }
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// Up to [`BATCH`] records, or what arrived within half a second.
async fn read_batch(
    consumer: &Arc<BaseConsumer>,
    job: &Recovery,
) -> Result<Vec<OwnedMessage>, RecoveryError> {
    let consumer = consumer.clone();
    let want = BATCH.min(
        job.partitions
            .iter()
            .map(|r| (r.end - r.next).max(0) as usize)
            .sum::<usize>()
            .max(1),
    );
    tokio::task::spawn_blocking(move || {
        let mut batch = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(500);
        while batch.len() < want && Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(msg)) => batch.push(msg.detach()),
                Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                Some(Err(e)) => return Err(RecoveryError::Kafka(e)),
            }
        }
        Ok(batch)
    })
    .await
    .map_err(|e| RecoveryError::Other(e.to_string()))?
}

/// Writes the job's end and tells its owner
/// (`rewardhooks.recovery.finished`).
async fn finish(
    shared: &Shared,
    mut job: Recovery,
    status: RecoveryStatus,
    error: Option<String>,
) -> Result<(), RecoveryError> {
    let now = Utc::now();
    job.status = status;
    job.error = error;
    job.updated_at = now;
    job.finished_at = Some(now);
    shared.recoveries.write(&job).await?;
    tracing::info!(recovery_id = %job.id, status = status.as_str(), scanned = job.scanned, matched = job.matched, written = job.written, "Recovery job ended.");
    let summary = crate::operational::RecoverySummary {
        recovery_id: job.id.clone(),
        subscription_id: job.subscription_id.clone(),
        owner: job.owner.clone(),
        status: status.as_str().to_string(),
        scanned: job.scanned,
        matched: job.matched,
        written: job.written,
        since: job.since,
        until: job.until,
        error: job.error.clone(),
    };
    crate::operational::recovery_finished(shared, &summary).await;
    Ok(())
}
