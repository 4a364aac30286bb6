//! The payload reference (`docs/events.md`), generated from the catalog so it
//! cannot drift: `rewardhooks docs-events > docs/events.md` (`make docs`).

use serde_json::Value;

use super::catalog::EventType;
use super::{Catalog, Event};
use crate::signing::signature_header;
use crate::signing::Secret;
use crate::signing::USER_AGENT;

/// The example secret and time of the worked examples (the Standard Webhooks
/// specification's test secret).
pub(crate) const EXAMPLE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const EXAMPLE_TIMESTAMP: i64 = 1_795_774_500;

fn type_name(schema: &Value) -> String {
    match schema.get("type").and_then(Value::as_str) {
        Some("array") => {
            let inner = schema.get("items").map(type_name).unwrap_or_default();
            format!("array of {inner}")
        }
        Some(t) => {
            let mut t = t.to_string();
            if let Some(f) = schema.get("format").and_then(Value::as_str) {
                t = format!("{t} ({f})");
            }
            if let Some(values) = schema.get("enum").and_then(Value::as_array) {
                let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
                t = format!("{t}: {}", values.join(" or "));
            }
            if schema.get("exclusiveMinimum").is_some_and(|m| m == 0) {
                t = format!("{t} > 0");
            }
            t
        }
        None => "any".to_string(),
    }
}

/// The webhook a subscriber receives for the catalog example of `t`.
pub(crate) fn example_webhook(t: &EventType) -> (Vec<(String, String)>, String) {
    let ex = &t.example;
    let time = ex["time"]
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.to_utc())
        .unwrap_or_default();
    let event = Event::new(
        ex["id"].as_str().unwrap_or_default().to_string(),
        t.name.clone(),
        time,
        ex["data"].clone(),
    );
    let key = Secret::from_string(EXAMPLE_SECRET.into())
        .key_bytes()
        .unwrap_or_default();
    let signature = signature_header(&[key.as_slice()], &event.id, EXAMPLE_TIMESTAMP, &event.body);
    let headers = vec![
        ("content-type".into(), "application/json".into()),
        ("user-agent".into(), USER_AGENT.into()),
        ("webhook-id".into(), event.id.clone()),
        ("webhook-timestamp".into(), EXAMPLE_TIMESTAMP.to_string()),
        ("webhook-signature".into(), signature),
    ];
    (headers, String::from_utf8_lossy(&event.body).into_owned())
}

/// A sample webhook signed now, as `{"secret","headers","body"}` JSON.
pub fn sample_webhook(event_type: &str, secret: Option<String>) -> anyhow::Result<String> {
    let catalog = Catalog::built_in()?;
    let t = catalog
        .get(event_type)
        .ok_or_else(|| anyhow::anyhow!("{event_type:?} is not in the event catalog"))?;
    let secret = secret.map_or_else(Secret::generate, Secret::from_string);
    let key = secret
        .key_bytes()
        .ok_or_else(|| anyhow::anyhow!("--secret must be whsec_ followed by base64"))?;
    let event = t.example_event(format!(
        "evt_sample_{}",
        chrono::Utc::now().timestamp_millis()
    ));
    let ts = chrono::Utc::now().timestamp();
    let body = String::from_utf8_lossy(&event.body).into_owned();
    Ok(serde_json::json!({
        "secret": secret.expose(),
        "headers": {
            "content-type": "application/json",
            "webhook-id": event.id,
            "webhook-timestamp": ts.to_string(),
            "webhook-signature": signature_header(&[key.as_slice()], &event.id, ts, event.body.as_slice()),
        },
        "body": body,
    })
    .to_string())
}

pub fn events_markdown(catalog: &Catalog) -> String {
    let mut out = String::from(
        "# Event payload reference\n\n\
         Generated from `config/events/` by `make docs`; a test fails when it is stale.\n\n\
         Every webhook is a `POST` with a JSON body `{\"id\",\"type\",\"timestamp\",\"data\"}`:\n\n\
         | field | type | meaning |\n|---|---|---|\n\
         | `id` | string | the event id; also the `webhook-id` header, the same on every retry |\n\
         | `type` | string | one of the types below |\n\
         | `timestamp` | string (RFC 3339, UTC) | when the event happened |\n\
         | `data` | object | the type's payload, described below |\n\n",
    );
    out.push_str(&format!(
        "The examples are signed with the secret `{EXAMPLE_SECRET}` at timestamp \
         {EXAMPLE_TIMESTAMP}; recompute a signature to check your verifier.\n\n"
    ));
    for t in catalog.iter() {
        out.push_str(&format!("## `{}`\n\n{}\n\n", t.name, t.description));
        out.push_str("| field | type | required | meaning |\n|---|---|---|---|\n");
        let required: Vec<&str> = t.schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(props) = t.schema["properties"].as_object() {
            for (name, prop) in props {
                out.push_str(&format!(
                    "| `data.{name}` | {} | {} | {} |\n",
                    type_name(prop),
                    if required.contains(&name.as_str()) {
                        "yes"
                    } else {
                        "no"
                    },
                    prop["description"].as_str().unwrap_or_default()
                ));
            }
        }
        let (headers, body) = example_webhook(t);
        out.push_str("\nExample webhook:\n\n```http\nPOST /your/endpoint HTTP/1.1\n");
        for (k, v) in headers {
            out.push_str(&format!("{k}: {v}\n"));
        }
        let data = serde_json::to_string_pretty(&t.example["data"]).unwrap_or_default();
        out.push_str(&format!(
            "\n{body}\n```\n\nThe signature covers the body exactly as sent. Its `data`, readably:\n\n```json\n{data}\n```\n\n"
        ));
        let schema = serde_json::to_string_pretty(&t.schema).unwrap_or_default();
        out.push_str(&format!(
            "<details><summary>JSON Schema of <code>data</code></summary>\n\n```json\n{schema}\n```\n\n</details>\n\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_payload_reference_is_current() {
        let generated = events_markdown(&Catalog::built_in().unwrap());
        assert_eq!(
            generated,
            include_str!("../../docs/events.md"),
            "docs/events.md is stale: run `make docs`"
        );
    }

    #[test]
    fn worked_examples_verify_with_the_standardwebhooks_crate() {
        let catalog = Catalog::built_in().unwrap();
        for t in catalog.iter() {
            let (headers, body) = example_webhook(t);
            let mut map = http::HeaderMap::new();
            for (k, v) in headers {
                map.insert(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            let webhook = standardwebhooks::Webhook::new(EXAMPLE_SECRET).unwrap();
            // The example timestamp is fixed, so check the signature alone.
            let sig = webhook
                .sign(
                    map["webhook-id"].to_str().unwrap(),
                    EXAMPLE_TIMESTAMP,
                    body.as_bytes(),
                )
                .unwrap();
            assert_eq!(sig, map["webhook-signature"].to_str().unwrap());
        }
    }
}
