//! Property tests (`make fuzz` runs them with many more cases): the event
//! decoder in both CloudEvents modes and the filter evaluator never panic,
//! whatever they are fed, and valid events survive decoding intact.

use proptest::prelude::*;
use rdkafka::message::{Header, OwnedHeaders};
use rewardhooks::events::filter::Filter;
use rewardhooks::events::{decode, Catalog, Event};
use serde_json::{json, Value};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("points.earned"),
            Just("tier.changed"),
            Just("gold"),
            Just("$in"),
            Just("$exists")
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    "[a-z_.$]{0,10}",
                    Just("data.new_tier".to_string()),
                    Just("$eq".to_string()),
                    Just("$gt".to_string()),
                    Just("$in".to_string()),
                    Just("id".to_string()),
                    Just("type".to_string()),
                    Just("data".to_string()),
                    Just("time".to_string()),
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn catalog() -> Catalog {
    Catalog::built_in().unwrap()
}

proptest! {
    #[test]
    fn structured_decoding_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode::<OwnedHeaders>(&catalog(), 4096, Some(&bytes), None, Some(0));
    }

    #[test]
    fn structured_decoding_never_panics_on_json(value in arb_json(), id in ".{0,20}", t in prop_oneof![Just("points.earned"), Just("tier.changed"), Just("x")]) {
        let mut event = json!({"id": id, "type": t, "data": value.clone()});
        if let Value::Object(extra) = value {
            for (k, v) in extra { event[k] = v; }
        }
        let bytes = serde_json::to_vec(&event).unwrap();
        if let Ok(e) = decode::<OwnedHeaders>(&catalog(), 262_144, Some(&bytes), None, Some(0)) {
            // What decodes is a valid outbound body.
            let body: Value = serde_json::from_slice(&e.body).unwrap();
            prop_assert_eq!(&body["id"], &json!(e.id));
            prop_assert!(body["data"].is_object());
        }
    }

    #[test]
    fn binary_decoding_never_panics(id in ".{0,20}", t in ".{0,20}", time in ".{0,30}", payload in prop::collection::vec(any::<u8>(), 0..512), data in arb_json()) {
        let headers = OwnedHeaders::new()
            .insert(Header { key: "ce_id", value: Some(id.as_bytes()) })
            .insert(Header { key: "ce_type", value: Some(t.as_bytes()) })
            .insert(Header { key: "ce_time", value: Some(time.as_bytes()) })
            .insert(Header { key: "ce_specversion", value: Some(&[0xff, 0xfe][..]) });
        let _ = decode(&catalog(), 4096, Some(&payload), Some(&headers), None);
        let data = serde_json::to_vec(&data).unwrap();
        let _ = decode(&catalog(), 4096, Some(&data), Some(&headers), Some(i64::MAX));
    }

    #[test]
    fn filters_compile_or_refuse_and_never_panic_when_evaluated(filter in arb_json(), data in arb_json()) {
        if let Ok(f) = Filter::compile(&filter) {
            let data = if data.is_object() { data } else { json!({"v": data}) };
            let event = Event::new("evt_1".into(), "tier.changed".into(), chrono::Utc::now(), data);
            let _ = f.matches(&event);
        }
    }
}
