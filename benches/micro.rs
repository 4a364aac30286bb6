//! Micro-benchmarks of the per-record hot path: signing, matching an event
//! against many subscriptions, decoding an input record.
//! `cargo bench --bench micro` (`make bench-micro`).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use rdkafka::message::OwnedHeaders;
use rewardhooks::events::{decode, Catalog, Event};
use rewardhooks::signing::signature_header;
use rewardhooks::subscriptions::live::{Index, LiveSubscription};
use rewardhooks::subscriptions::{Secret, Subscription};
use serde_json::json;

fn subscription(
    i: usize,
    event_types: Vec<String>,
    filter: Option<serde_json::Value>,
) -> Arc<LiveSubscription> {
    let mut sub = Subscription::new(
        "bench".into(),
        "https://example.com/hook".into(),
        event_types,
    );
    sub.id = format!("sub_{i:08}");
    sub.filter = filter.as_ref().map(rewardhooks::subscriptions::raw_json);
    Arc::new(LiveSubscription::new(sub))
}

fn benches(c: &mut Criterion) {
    let catalog = Catalog::built_in().unwrap();
    let example = catalog.get("tier.changed").unwrap().example.clone();
    let payload = serde_json::to_vec(&example).unwrap();
    let event = Event::new(
        "evt_1".into(),
        "tier.changed".into(),
        chrono::Utc::now(),
        example["data"].clone(),
    );
    let key = Secret::generate().key_bytes().unwrap();

    c.bench_function("sign a webhook", |b| {
        b.iter(|| {
            signature_header(
                &[key.as_slice()],
                black_box("evt_1"),
                1_795_774_500,
                black_box(&event.body),
            )
        })
    });

    c.bench_function("decode a structured CloudEvent", |b| {
        b.iter(|| {
            decode::<OwnedHeaders>(&catalog, 262_144, Some(black_box(&payload)), None, Some(0))
                .unwrap()
        })
    });

    let types = [
        "points.earned",
        "points.redeemed",
        "tier.changed",
        "profile.updated",
    ];
    let mut index = Index::default();
    for i in 0..100_000 {
        let filter = (i % 10 == 0).then(|| json!({"data.new_tier": {"$in": ["gold", "platinum"]}}));
        index.insert(&subscription(i, vec![types[i % 4].to_string()], filter));
    }
    for i in 0..100 {
        index.insert(&subscription(100_000 + i, vec!["tier.*".into()], None));
    }
    c.bench_function("match among 100,000 subscriptions", |b| {
        b.iter(|| black_box(index.matching(black_box(&event))).len())
    });
}

criterion_group!(micro, benches);
criterion_main!(micro);
