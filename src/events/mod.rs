//! Input events: CloudEvents 1.0 on Kafka (structured or binary mode), decoded,
//! validated against the catalog, and turned into the outbound webhook body.

pub mod catalog;
pub mod docs;
pub mod filter;

use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::message::Headers;
use serde::Serialize;
use serde_json::Value;
use std::borrow::Cow;

pub use catalog::Catalog;

/// Types starting with this are operational events: emitted by rewardhooks
/// about an owner's own subscriptions, never accepted from input topics,
/// delivered only to that owner's subscriptions that list the type exactly.
pub const OPERATIONAL_PREFIX: &str = "rewardhooks.";

/// Whether an event type is an operational event's.
pub fn is_operational(event_type: &str) -> bool {
    event_type.starts_with(OPERATIONAL_PREFIX)
}

/// Why an input record was refused; the label of `events_invalid_total` and
/// the prefix of the `rewardhooks-error` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidReason {
    TooLarge,
    NotJson,
    MissingField,
    InvalidField,
    UnknownType,
    SchemaViolation,
    /// An operational event type (`rewardhooks.*`) on an input topic: only
    /// rewardhooks itself emits those.
    ReservedType,
}

impl InvalidReason {
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidReason::TooLarge => "too_large",
            InvalidReason::NotJson => "not_json",
            InvalidReason::MissingField => "missing_field",
            InvalidReason::InvalidField => "invalid_field",
            InvalidReason::UnknownType => "unknown_type",
            InvalidReason::SchemaViolation => "schema_violation",
            InvalidReason::ReservedType => "reserved_type",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", reason.as_str())]
pub struct Invalid {
    pub reason: InvalidReason,
    pub message: String,
}

fn invalid(reason: InvalidReason, message: impl Into<String>) -> Invalid {
    Invalid {
        reason,
        message: message.into(),
    }
}

/// A validated event and its outbound body, serialized once for every
/// subscriber.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub event_type: String,
    /// RFC 3339, UTC.
    pub timestamp: String,
    pub time_ms: i64,
    pub data: Value,
    /// `{"id","type","timestamp","data"}` exactly as POSTed.
    pub body: Vec<u8>,
}

#[derive(Serialize)]
struct Outbound<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    timestamp: &'a str,
    data: &'a Value,
}

impl Event {
    /// Builds an event whose fields are already known to be valid.
    pub fn new(id: String, event_type: String, time: DateTime<Utc>, data: Value) -> Self {
        let timestamp = time.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        let body = serde_json::to_vec(&Outbound {
            id: &id,
            event_type: &event_type,
            timestamp: &timestamp,
            data: &data,
        })
        .unwrap_or_default();
        Event {
            id,
            event_type,
            timestamp,
            time_ms: time.timestamp_millis(),
            data,
            body,
        }
    }

    /// The owner an operational event is about (its `data.owner`).
    pub(crate) fn operational_owner(&self) -> Option<&str> {
        self.data.get("owner").and_then(Value::as_str)
    }

    /// A value of the outbound body by dotted path (`type`, `data.new_tier`),
    /// borrowed from the event where it can be (matching looks up a path
    /// per condition of every candidate subscription).
    pub(crate) fn lookup(&self, path: &str) -> Option<Cow<'_, Value>> {
        let (first, rest) = match path.split_once('.') {
            Some((first, rest)) => (first, Some(rest)),
            None => (path, None),
        };
        let top = |value: &str| {
            rest.is_none()
                .then(|| Cow::Owned(Value::String(value.to_string())))
        };
        let root = match first {
            "id" => return top(&self.id),
            "type" => return top(&self.event_type),
            "timestamp" => return top(&self.timestamp),
            "data" => &self.data,
            _ => return None,
        };
        let mut current = root;
        for segment in rest.into_iter().flat_map(|r| r.split('.')) {
            current = match current {
                Value::Object(map) => map.get(segment)?,
                Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(Cow::Borrowed(current))
    }
}

/// Decodes one Kafka record. `timestamp_ms` is the record's timestamp, used
/// when the event carries no `time`.
pub fn decode<H: Headers>(
    catalog: &Catalog,
    max_bytes: usize,
    payload: Option<&[u8]>,
    headers: Option<&H>,
    timestamp_ms: Option<i64>,
) -> Result<Event, Invalid> {
    let payload = payload.unwrap_or_default();
    let header_bytes: usize = headers
        .map(|h| {
            h.iter()
                .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len))
                .sum()
        })
        .unwrap_or(0);
    let size = payload.len() + header_bytes;
    if size > max_bytes {
        return Err(invalid(
            InvalidReason::TooLarge,
            format!("record is {size} bytes, over events.max_bytes = {max_bytes}"),
        ));
    }
    let ce = |name: &str| crate::kafka::header_str(headers, name);
    let binary = ce("ce_id").is_some() || ce("ce_type").is_some() || ce("ce_specversion").is_some();

    let (id, event_type, time, data) = if binary {
        let data: Value = serde_json::from_slice(payload)
            .map_err(|e| invalid(InvalidReason::NotJson, format!("value is not JSON: {e}")))?;
        (
            ce("ce_id").map(str::to_string),
            ce("ce_type").map(str::to_string),
            ce("ce_time").map(|t| Value::String(t.to_string())),
            Some(data),
        )
    } else {
        let value: Value = serde_json::from_slice(payload)
            .map_err(|e| invalid(InvalidReason::NotJson, format!("value is not JSON: {e}")))?;
        let Value::Object(mut map) = value else {
            return Err(invalid(
                InvalidReason::NotJson,
                "structured CloudEvent must be a JSON object",
            ));
        };
        let text = |v: Option<Value>, field: &str| -> Result<Option<String>, Invalid> {
            match v {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(invalid(
                    InvalidReason::InvalidField,
                    format!("{field} must be a string"),
                )),
            }
        };
        (
            text(map.remove("id"), "id")?,
            text(map.remove("type"), "type")?,
            map.remove("time"),
            map.remove("data"),
        )
    };

    let id = id
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(InvalidReason::MissingField, "id is required"))?;
    if id.len() > 256 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            InvalidReason::InvalidField,
            "id must be 1-256 visible ASCII characters",
        ));
    }
    let event_type = event_type
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(InvalidReason::MissingField, "type is required"))?;
    let Some(kind) = catalog.get(&event_type) else {
        let shown: String = event_type.chars().take(100).collect();
        return Err(invalid(
            InvalidReason::UnknownType,
            format!("type {shown:?} is not in the event catalog"),
        ));
    };
    let time = match time {
        None | Some(Value::Null) => timestamp_ms
            .and_then(DateTime::<Utc>::from_timestamp_millis)
            .unwrap_or_else(Utc::now),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(&s)
            .map_err(|e| {
                invalid(
                    InvalidReason::InvalidField,
                    format!("time is not RFC 3339: {e}"),
                )
            })?
            .to_utc(),
        Some(_) => {
            return Err(invalid(
                InvalidReason::InvalidField,
                "time must be an RFC 3339 string",
            ))
        }
    };
    let data = match data {
        Some(Value::Object(map)) => Value::Object(map),
        None | Some(Value::Null) => {
            return Err(invalid(InvalidReason::MissingField, "data is required"))
        }
        Some(_) => {
            return Err(invalid(
                InvalidReason::SchemaViolation,
                "data must be a JSON object",
            ))
        }
    };
    kind.validate(&data)
        .map_err(|e| invalid(InvalidReason::SchemaViolation, e))?;
    Ok(Event::new(id, event_type, time, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::OwnedHeaders;
    use serde_json::json;

    fn catalog() -> Catalog {
        Catalog::built_in().unwrap()
    }

    fn structured(v: Value) -> Result<Event, Invalid> {
        let bytes = serde_json::to_vec(&v).unwrap();
        decode::<OwnedHeaders>(&catalog(), 262_144, Some(&bytes), None, Some(0))
    }

    #[test]
    fn structured_event_becomes_outbound_body_in_order() {
        let e = structured(json!({
            "specversion":"1.0","id":"evt_1","type":"tier.changed","source":"/t",
            "time":"2026-11-27T10:15:00+01:00",
            "data":{"customer_id":"c","previous_tier":"silver","new_tier":"gold","direction":"upgrade"}
        }))
        .unwrap();
        let body = String::from_utf8(e.body.clone()).unwrap();
        assert!(
            body.starts_with(
                r#"{"id":"evt_1","type":"tier.changed","timestamp":"2026-11-27T09:15:00Z","data":{"#
            ),
            "{body}"
        );
        assert_eq!(e.lookup("data.new_tier").as_deref(), Some(&json!("gold")));
    }

    #[test]
    fn binary_mode_reads_ce_headers_and_defaults_time_to_record_timestamp() {
        let headers = crate::kafka::headers([
            ("ce_id", "evt_b"),
            ("ce_type", "points.earned"),
            ("ce_specversion", "1.0"),
            ("ce_source", "/ledger"),
        ]);
        let data = br#"{"customer_id":"c","points":5,"reason":"r","balance":10}"#;
        let e = decode(
            &catalog(),
            262_144,
            Some(data),
            Some(&headers),
            Some(1_795_000_000_000),
        )
        .unwrap();
        assert_eq!(e.id, "evt_b");
        assert_eq!(e.time_ms, 1_795_000_000_000);
        assert_eq!(e.timestamp, "2026-11-18T11:06:40Z");
    }

    #[test]
    fn invalid_records_are_classified() {
        let cases: Vec<(Vec<u8>, InvalidReason)> = vec![
            (b"not json".to_vec(), InvalidReason::NotJson),
            (b"[1,2]".to_vec(), InvalidReason::NotJson),
            (
                br#"{"type":"points.earned","data":{}}"#.to_vec(),
                InvalidReason::MissingField,
            ),
            (
                br#"{"id":"e","type":"coupon.issued","data":{}}"#.to_vec(),
                InvalidReason::UnknownType,
            ),
            (
                br#"{"id":"e","type":"points.earned","data":{"customer_id":"c"}}"#.to_vec(),
                InvalidReason::SchemaViolation,
            ),
            (
                br#"{"id":"e","type":"points.earned","data":[1]}"#.to_vec(),
                InvalidReason::SchemaViolation,
            ),
            (
                br#"{"id":"e v","type":"points.earned","data":{}}"#.to_vec(),
                InvalidReason::InvalidField,
            ),
            (
                br#"{"id":"e","type":"points.earned","time":"yesterday","data":{}}"#.to_vec(),
                InvalidReason::InvalidField,
            ),
            (vec![b' '; 300_000], InvalidReason::TooLarge),
        ];
        for (payload, reason) in cases {
            let err = decode::<OwnedHeaders>(&catalog(), 262_144, Some(&payload), None, None)
                .unwrap_err();
            assert_eq!(
                err.reason,
                reason,
                "{}",
                String::from_utf8_lossy(&payload[..payload.len().min(80)])
            );
        }
    }
}
