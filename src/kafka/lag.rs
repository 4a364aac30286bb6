//! Consumer lag: for each of rewardhooks' consumer groups and each topic it
//! reads, the records not yet committed (high watermark minus committed
//! offset, summed over partitions). Computed from the group's committed
//! offsets, so every API instance reports the whole group's lag: aggregate
//! with `max`, not `sum`.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::config::KafkaSettings;
use crate::kafka::{client_config, ClientKind};
use crate::metrics::METRICS;

/// A consumer group and the topics it reads.
pub struct Group {
    pub name: String,
    pub topics: Vec<String>,
}

/// Per partition, the group's lag, or an error text.
fn measure(consumer: &BaseConsumer, topics: &[String]) -> Result<Vec<(String, i32, i64)>, String> {
    let timeout = Timeout::After(Duration::from_secs(10));
    let mut tpl = TopicPartitionList::new();
    let mut highs = Vec::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| e.to_string())?;
        for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), timeout)
                .map_err(|e| e.to_string())?;
            tpl.add_partition(topic, p.id());
            highs.push((topic.clone(), p.id(), low, high));
        }
    }
    let committed = consumer
        .committed_offsets(tpl, timeout)
        .map_err(|e| e.to_string())?;
    let mut lags = Vec::with_capacity(highs.len());
    for (topic, partition, low, high) in highs {
        let position = match committed
            .find_partition(&topic, partition)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(o)) => o,
            _ => low,
        };
        lags.push((topic, partition, (high - position).max(0)));
    }
    Ok(lags)
}

/// Refreshes `rewardhooks_consumer_lag{group,topic,partition}` every
/// `interval`, and the time of the last complete measurement.
pub async fn run(
    settings: KafkaSettings,
    groups: Vec<Group>,
    interval: Duration,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut consumers = Vec::new();
    for group in groups {
        let mut config = client_config(&settings, ClientKind::Consumer);
        config
            .set("group.id", &group.name)
            .set("enable.auto.commit", "false");
        let consumer: BaseConsumer = config.create()?;
        consumers.push((group, consumer));
    }
    let consumers = std::sync::Arc::new(consumers);
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let consumers = consumers.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for (group, consumer) in consumers.iter() {
                match measure(consumer, &group.topics) {
                    Ok(lags) => {
                        for (topic, partition, lag) in lags {
                            METRICS
                                .consumer_lag
                                .with_label_values(&[
                                    group.name.as_str(),
                                    topic.as_str(),
                                    &partition.to_string(),
                                ])
                                .set(lag);
                        }
                        METRICS
                            .consumer_lag_measured
                            .with_label_values(&[group.name.as_str()])
                            .set(chrono::Utc::now().timestamp());
                    }
                    Err(e) => tracing::debug!(group = %group.name, error = %e, "Lag not measured."),
                }
            }
        })
        .await;
    }
}
