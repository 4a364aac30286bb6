//! `rewardhooks produce`: put CloudEvents of catalog types on the input topic
//! (the catalog example, or your own data), and `--validate-only`: check an
//! event against the catalog the way the fan-out stage will.

use std::time::Duration;

use rdkafka::message::OwnedHeaders;
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use serde_json::Value;

use crate::events::{Catalog, InvalidReason};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The whole CloudEvent as the JSON value (content-type
    /// application/cloudevents+json).
    Structured,
    /// `data` as the value, the attributes as `ce_` headers.
    Binary,
}

/// What to produce.
pub struct ProduceArgs {
    /// A catalog type; optional when the input is a whole CloudEvent.
    pub event_type: Option<String>,
    /// JSON text: a whole CloudEvent (it has `specversion`) or its `data`.
    pub input: Option<String>,
    pub count: u32,
    pub mode: Mode,
    pub id: Option<String>,
    pub key: Option<String>,
    pub source: String,
    /// The input is a whole CloudEvent even without `specversion`
    /// (`--validate-only`).
    pub whole_event: bool,
}

/// Where to produce it.
pub struct Target {
    pub brokers: String,
    pub topic: String,
    pub kafka: crate::config::KafkaSettings,
}

/// Builds the CloudEvent to produce (structured form), before any check.
pub fn build_event(catalog: &Catalog, args: &ProduceArgs) -> anyhow::Result<Value> {
    let input = args
        .input
        .as_deref()
        .map(|text| {
            serde_json::from_str::<Value>(text)
                .map_err(|e| anyhow::anyhow!("input is not JSON: {e}"))
        })
        .transpose()?;
    let whole = input
        .as_ref()
        .is_some_and(|v| args.whole_event || v.get("specversion").is_some());
    if whole {
        let mut event = input.unwrap_or_default();
        if let (Some(wanted), Some(given)) = (&args.event_type, event.get("type")) {
            if given.as_str() != Some(wanted.as_str()) {
                anyhow::bail!("the event's type is {given}, not {wanted:?}");
            }
        }
        if let Some(id) = &args.id {
            event["id"] = Value::String(id.clone());
        }
        return Ok(event);
    }
    let Some(name) = &args.event_type else {
        anyhow::bail!(
            "name an event type ({}), or give a whole CloudEvent (with \"specversion\") as --data or --file",
            names(catalog)
        );
    };
    let Some(kind) = catalog.get(name) else {
        anyhow::bail!("{name:?} is not in the event catalog ({})", names(catalog));
    };
    let mut event = kind.example.clone();
    event["source"] = Value::String(args.source.clone());
    event["id"] = Value::String(args.id.clone().unwrap_or_else(new_event_id));
    event["time"] = Value::String(chrono::Utc::now().to_rfc3339());
    if let Some(data) = input {
        event["data"] = data;
    }
    Ok(event)
}

fn names(catalog: &Catalog) -> String {
    catalog
        .iter()
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn new_event_id() -> String {
    format!("evt_cli_{}", &crate::subscriptions::new_id()[4..])
}

/// Everything wrong with `event` as rewardhooks would see it (empty when it
/// would be accepted), plus CloudEvents attributes it lacks (warnings).
pub fn check(catalog: &Catalog, max_bytes: usize, event: &Value) -> (Vec<String>, Vec<String>) {
    let mut warnings = Vec::new();
    for attr in ["specversion", "source"] {
        if event.get(attr).is_none_or(Value::is_null) {
            warnings.push(format!(
                "{attr} is missing: CloudEvents 1.0 requires it (rewardhooks does not)"
            ));
        }
    }
    if let Some(v) = event.get("specversion").and_then(Value::as_str) {
        if v != "1.0" {
            warnings.push(format!("specversion is {v:?}; CloudEvents 1.0 is \"1.0\""));
        }
    }
    let payload = serde_json::to_vec(event).unwrap_or_default();
    let decoded = crate::events::decode(
        catalog,
        max_bytes,
        Some(&payload),
        None::<&OwnedHeaders>,
        None,
    );
    let errors = match decoded {
        Ok(_) => Vec::new(),
        Err(e) if e.reason == InvalidReason::SchemaViolation => {
            let kind = event
                .get("type")
                .and_then(Value::as_str)
                .and_then(|t| catalog.get(t));
            match (kind, event.get("data")) {
                (Some(kind), Some(data)) if data.is_object() => kind
                    .problems(data)
                    .into_iter()
                    .map(|(path, message)| format!("schema_violation: data{path}: {message}"))
                    .collect(),
                _ => vec![e.to_string()],
            }
        }
        Err(e) => vec![e.to_string()],
    };
    (errors, warnings)
}

/// Produces `args.count` events (fresh ids after the first when counting)
/// and prints one line per event.
pub async fn produce(catalog: &Catalog, target: Target, args: ProduceArgs) -> anyhow::Result<()> {
    let mut kafka = target.kafka.clone();
    kafka.brokers = target.brokers.clone();
    kafka
        .producer
        .entry("message.timeout.ms".into())
        .or_insert_with(|| "15000".into());
    let producer = crate::kafka::producer(&kafka)?;
    let first = build_event(catalog, &args)?;
    let (errors, _) = check(catalog, usize::MAX, &first);
    if !errors.is_empty() {
        anyhow::bail!(
            "the event would be refused (nothing produced):\n  {}\n(check an event with --validate-only)",
            errors.join("\n  ")
        );
    }
    for n in 0..args.count.max(1) {
        let mut event = first.clone();
        if n > 0 {
            event["id"] = Value::String(match &args.id {
                Some(id) => format!("{id}-{n}"),
                None => new_event_id(),
            });
        }
        let id = event["id"].as_str().unwrap_or_default().to_string();
        let event_type = event["type"].as_str().unwrap_or_default().to_string();
        let key = args
            .key
            .clone()
            .or_else(|| event["subject"].as_str().map(str::to_string))
            .unwrap_or_else(|| id.clone());
        let (payload, headers) = match args.mode {
            Mode::Structured => (
                serde_json::to_vec(&event)?,
                crate::kafka::headers([("content-type", "application/cloudevents+json")]),
            ),
            Mode::Binary => {
                let text = |name: &str| event[name].as_str().unwrap_or_default().to_string();
                let attrs = [
                    ("ce_specversion", text("specversion")),
                    ("ce_id", text("id")),
                    ("ce_type", text("type")),
                    ("ce_source", text("source")),
                    ("ce_time", text("time")),
                    ("ce_subject", text("subject")),
                    ("content-type", "application/json".to_string()),
                ];
                let headers = crate::kafka::headers(
                    attrs
                        .iter()
                        .filter(|(_, v)| !v.is_empty())
                        .map(|(k, v)| (*k, v.as_str())),
                );
                (serde_json::to_vec(&event["data"])?, headers)
            }
        };
        let record = FutureRecord::<str, [u8]>::to(&target.topic)
            .key(&key)
            .payload(&payload)
            .headers(headers);
        match producer
            .send(record, Timeout::After(Duration::from_secs(20)))
            .await
        {
            Ok(delivery) => println!(
                "produced {event_type} {id} to {}[{}]@{}",
                target.topic, delivery.partition, delivery.offset
            ),
            Err((e, _)) => anyhow::bail!(
                "cannot produce to {} at {}: {e} (is `rewardhooks dev` running? see --brokers)",
                target.topic,
                target.brokers
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(event_type: Option<&str>, input: Option<Value>) -> ProduceArgs {
        ProduceArgs {
            event_type: event_type.map(str::to_string),
            input: input.map(|v| v.to_string()),
            count: 1,
            mode: Mode::Structured,
            id: None,
            key: None,
            source: "/rewardhooks-cli".into(),
            whole_event: false,
        }
    }

    #[test]
    fn every_catalog_example_checks_clean() {
        let catalog = Catalog::built_in().unwrap();
        for t in catalog.iter() {
            let event = build_event(&catalog, &args(Some(&t.name), None)).unwrap();
            assert!(event["id"].as_str().unwrap().starts_with("evt_cli_"));
            assert_eq!(check(&catalog, 1 << 20, &event), (vec![], vec![]));
        }
    }

    #[test]
    fn check_lists_every_schema_problem_and_missing_attributes() {
        let catalog = Catalog::built_in().unwrap();
        let event = json!({"id":"e1","type":"points.earned","data":{"points":-1}});
        let (errors, warnings) = check(&catalog, 1 << 20, &event);
        assert!(errors.len() >= 2, "{errors:?}");
        assert!(errors
            .iter()
            .all(|e| e.starts_with("schema_violation: data")));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        let (errors, _) = check(
            &catalog,
            1 << 20,
            &json!({"id":"e1","type":"coupon.issued","data":{}}),
        );
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("unknown_type"), "{errors:?}");
    }

    #[test]
    fn data_or_a_whole_event_as_input() {
        let catalog = Catalog::built_in().unwrap();
        let data = json!({"customer_id":"c1","points":5,"reason":"purchase","balance":5});
        let event =
            build_event(&catalog, &args(Some("points.earned"), Some(data.clone()))).unwrap();
        assert_eq!(event["data"], data);
        let whole =
            json!({"specversion":"1.0","id":"x","type":"tier.changed","source":"/t","data":{}});
        assert_eq!(
            build_event(&catalog, &args(None, Some(whole.clone()))).unwrap(),
            whole
        );
        assert!(build_event(&catalog, &args(Some("points.earned"), Some(whole))).is_err());
        assert!(build_event(&catalog, &args(None, None)).is_err());
    }
}
