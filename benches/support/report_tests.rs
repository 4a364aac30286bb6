//! Unit tests of the benchmark's pure helpers (`report.rs`), run by
//! `cargo test` as the `bench_report` test target.

#[path = "report.rs"]
mod report;

use report::*;

#[test]
fn percentiles_use_the_nearest_rank() {
    let samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
    let p = Percentiles::of(&samples);
    assert_eq!(p.count, 100);
    assert_eq!((p.p50, p.p90, p.p99, p.max), (50.0, 90.0, 99.0, 100.0));
    let p = Percentiles::of(&[7.0]);
    assert_eq!((p.p50, p.p99, p.max), (7.0, 7.0, 7.0));
    assert_eq!(Percentiles::of(&[]), Percentiles::default());
    // p99 of 10 samples is the largest: nine of ten are not 99%.
    let ten: Vec<f64> = (1..=10).map(f64::from).collect();
    assert_eq!(nearest_rank(&ten, 99.0), 10.0);
    assert_eq!(nearest_rank(&ten, 50.0), 5.0);
}

#[test]
fn cpu_ticks_read_user_and_system_time_past_odd_names() {
    let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 150 37 0 0 20 0 9 0 100 2000000 500 18446744073709551615";
    assert_eq!(cpu_ticks(stat), Some(187));
    assert_eq!(stat_name(stat), Some("tokio (rt) x"));
    assert_eq!(cpu_ticks("garbage"), None);
    assert_eq!(cpu_ticks("1 (x) S 1 2"), None);
}

#[test]
fn metric_sum_adds_matching_series_only() {
    let text = "\
# HELP rewardhooks_retries_scheduled_total Failed deliveries written to a retry tier.
# TYPE rewardhooks_retries_scheduled_total counter
rewardhooks_retries_scheduled_total{delay=\"1s\"} 4
rewardhooks_retries_scheduled_total{delay=\"5s\"} 3
rewardhooks_retries_scheduled_totally 100
rewardhooks_deliveries_total{event_type=\"points.earned\",outcome=\"success\"} 10
rewardhooks_deliveries_total{event_type=\"points.earned\",outcome=\"retry\"} 2
rewardhooks_deliveries_deferred_total 5
";
    assert_eq!(
        metric_sum(text, "rewardhooks_retries_scheduled_total", None),
        7.0
    );
    assert_eq!(
        metric_sum(
            text,
            "rewardhooks_deliveries_total",
            Some("outcome=\"success\"")
        ),
        10.0
    );
    assert_eq!(
        metric_sum(text, "rewardhooks_deliveries_deferred_total", None),
        5.0
    );
    assert_eq!(metric_sum(text, "rewardhooks_missing", None), 0.0);
}

#[test]
fn svg_shows_every_phase_and_baseline_and_escapes_labels() {
    let picture = Picture {
        subtitle: "2026-11-28, commit abc1234, scale 0.1".into(),
        http_baseline: Some(20_000.0),
        kafka_baseline: Some(50_000.0),
        throughput: vec![
            ("1 subscriber".into(), 10_000.0),
            ("1,000 subscribers <1%> & more".into(), 5_000.0),
        ],
        latency: vec![(
            "1,000 events/s, 1 subscriber".into(),
            Percentiles {
                count: 10,
                p50: 10.0,
                p90: 20.0,
                p99: 40.0,
                max: 80.0,
            },
        )],
    };
    let svg = svg(&picture);
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("1 subscriber"));
    assert!(svg.contains("&lt;1%&gt; &amp; more"));
    assert!(!svg.contains("<1%>"));
    assert!(svg.contains("HTTP baseline 20000 req/s"));
    assert!(svg.contains("10000 (50%)"));
    assert!(svg.contains("p99 40.0"));
    assert!(svg.contains("50 ms target"));
    assert!(svg.contains("commit abc1234"));
    // Every element opened is closed (each line is one self-closed
    // element or one text element).
    assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
    let empty = report::svg(&Picture::default());
    assert!(empty.trim_end().ends_with("</svg>"));
}
