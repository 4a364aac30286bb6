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
                    schema_key(),
                    Just("data.new_tier".to_string()),
                    Just("data.customer_id".to_string()),
                    Just("data.points".to_string()),
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

/// Field names of the built-in schemas: random keys of a few characters
/// never spell `customer_id`, so without these no generated event would get
/// past the schema check.
fn schema_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("customer_id"),
        Just("points"),
        Just("reason"),
        Just("balance"),
        Just("order_id"),
        Just("expires_at"),
        Just("previous_tier"),
        Just("new_tier"),
        Just("direction"),
    ]
    .prop_map(str::to_string)
}

/// `points.earned` data: valid by construction (the bool says so), or the
/// valid data with one field removed or replaced by anything.
fn arb_points_earned() -> impl Strategy<Value = (Value, bool)> {
    let valid = (
        "[a-z0-9_]{1,40}",
        1i64..i64::MAX,
        "[a-z ]{1,40}",
        0i64..i64::MAX,
        proptest::option::of("[a-z0-9_]{0,20}"),
    )
        .prop_map(|(customer, points, reason, balance, order)| {
            let mut data =
                json!({"customer_id": customer, "points": points, "reason": reason, "balance": balance});
            if let Some(order) = order {
                data["order_id"] = json!(order);
            }
            data
        });
    (valid, 0..3usize, schema_key(), arb_json()).prop_map(|(mut data, mutation, key, value)| {
        match mutation {
            0 => (data, true),
            1 => {
                data.as_object_mut().unwrap().remove(&key);
                let required = ["customer_id", "points", "reason", "balance"];
                (data, !required.contains(&key.as_str()))
            }
            _ => {
                data[key.as_str()] = value;
                (data, false)
            }
        }
    })
}

fn arb_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..3).prop_map(|n| json!(n)),
        "[a-z0-9_ ]{0,8}".prop_map(Value::String),
    ]
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
    fn valid_events_survive_decoding_and_invalid_ones_are_refused_for_their_schema(
        (data, valid) in arb_points_earned(),
        id in "[a-zA-Z0-9_]{1,40}",
    ) {
        let event = json!({"specversion": "1.0", "id": id, "type": "points.earned", "source": "/fuzz", "data": data});
        let bytes = serde_json::to_vec(&event).unwrap();
        match decode::<OwnedHeaders>(&catalog(), 262_144, Some(&bytes), None, Some(0)) {
            Ok(e) => {
                let body: Value = serde_json::from_slice(&e.body).unwrap();
                prop_assert_eq!(&body["id"], &json!(id));
                prop_assert_eq!(&body["data"], &data);
            }
            Err(invalid) => {
                // A replaced field may still be valid (a string for
                // `order_id`); data built valid never is refused.
                prop_assert!(!valid, "valid data refused: {} {}", invalid.reason.as_str(), invalid.message);
                prop_assert_eq!(invalid.reason.as_str(), "schema_violation", "{}", invalid.message);
            }
        }
    }

    #[test]
    fn filters_on_schema_fields_match_exactly_when_the_value_is_equal(
        (data, _) in arb_points_earned(),
        key in schema_key(),
        probe in arb_scalar(),
    ) {
        let filter = json!({ format!("data.{key}"): {"$eq": probe.clone()} });
        let f = Filter::compile(&filter).unwrap();
        let event = Event::new("evt_1".into(), "points.earned".into(), chrono::Utc::now(), data.clone());
        prop_assert_eq!(f.matches(&event), data.get(&key) == Some(&probe));
        // And against the field's own value: always a match.
        if let Some(own) = data.get(&key).filter(|v| !v.is_object() && !v.is_array()) {
            let f = Filter::compile(&json!({ format!("data.{key}"): {"$eq": own} })).unwrap();
            prop_assert!(f.matches(&event), "{} = {} did not match itself", key, own);
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

/// The generators reach the code they claim to test: of 2000 generated
/// `points.earned` events, some decode and some are refused by the schema,
/// and a filter on a field's own value matches. (Measured: 1322 decoded,
/// 678 refused, 931 matches. Before `schema_key` no generated key could
/// spell `customer_id`, a required field of every built-in type, so the
/// decoder's success path was never reached.)
#[test]
fn the_generators_reach_both_outcomes_of_decoding_and_filtering() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let catalog = catalog();
    let (mut decoded, mut refused, mut matched) = (0, 0, 0);
    for n in 0..2000 {
        let (data, _) = arb_points_earned().new_tree(&mut runner).unwrap().current();
        let event = json!({"specversion": "1.0", "id": format!("evt_{n}"), "type": "points.earned", "source": "/fuzz", "data": data.clone()});
        let bytes = serde_json::to_vec(&event).unwrap();
        match decode::<OwnedHeaders>(&catalog, 262_144, Some(&bytes), None, Some(0)) {
            Ok(_) => decoded += 1,
            Err(_) => refused += 1,
        }
        let key = schema_key().new_tree(&mut runner).unwrap().current();
        if let Some(own) = data.get(&key).filter(|v| !v.is_object() && !v.is_array()) {
            let f = Filter::compile(&json!({ format!("data.{key}"): {"$eq": own} })).unwrap();
            let e = Event::new(
                "evt_1".into(),
                "points.earned".into(),
                chrono::Utc::now(),
                data.clone(),
            );
            matched += usize::from(f.matches(&e));
        }
    }
    println!("of 2000: {decoded} decoded, {refused} refused, {matched} filter matches");
    assert!(decoded >= 200, "{decoded} decoded");
    assert!(refused >= 200, "{refused} refused");
    assert!(matched >= 200, "{matched} matched");
}
