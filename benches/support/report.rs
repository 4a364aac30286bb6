//! Pure helpers of the end-to-end benchmark (`benches/e2e.rs`): percentiles,
//! CPU time from `/proc`, sums from Prometheus text, and the SVG picture of a
//! run. Kept apart from the benchmark so `cargo test` checks them (the
//! `bench_report` test target, `report_tests.rs`) while the benchmark itself
//! only runs under `make bench`.
#![allow(dead_code)]

use std::fmt::Write as _;

/// Latency percentiles of one phase, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles (the smallest sample with at least p% of
    /// the samples at or below it); all zero for no samples.
    pub fn of(samples: &[f64]) -> Percentiles {
        let mut sorted = samples.to_vec();
        sorted.sort_by(|a, b| a.total_cmp(b));
        Percentiles {
            count: sorted.len(),
            p50: nearest_rank(&sorted, 50.0),
            p90: nearest_rank(&sorted, 90.0),
            p99: nearest_rank(&sorted, 99.0),
            max: sorted.last().copied().unwrap_or(0.0),
        }
    }
}

/// The nearest-rank percentile `p` (0-100) of sorted samples.
pub fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// User plus system CPU ticks from the text of `/proc/<pid>/stat` (or a
/// thread's `/proc/<pid>/task/<tid>/stat`). The command name may hold spaces
/// and parentheses, so fields are counted after its last `)`.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3 of the file, utime 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The command name of a `/proc/.../stat` text (a thread's name).
pub fn stat_name(stat: &str) -> Option<&str> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    stat.get(open + 1..close)
}

/// The sum of every sample of metric `name` in Prometheus text whose labels
/// contain `label` (e.g. `outcome="success"`), or of all of them.
pub fn metric_sum(text: &str, name: &str, label: Option<&str>) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = match series.find('{') {
                Some(i) => (&series[..i], &series[i..]),
                None => (series, ""),
            };
            if metric != name || label.is_some_and(|want| !labels.contains(want)) {
                return None;
            }
            value.parse::<f64>().ok()
        })
        .sum()
}

/// What the picture shows: throughput per phase against the baselines, and
/// latency percentiles per latency phase.
#[derive(Debug, Default)]
pub struct Picture {
    /// "date, commit, scale" line under the title.
    pub subtitle: String,
    /// The HTTP baseline (requests/s), drawn as a line across the bars.
    pub http_baseline: Option<f64>,
    /// The Kafka pipeline baseline (records/s), written beside the chart.
    pub kafka_baseline: Option<f64>,
    /// (phase, deliveries/s).
    pub throughput: Vec<(String, f64)>,
    /// (phase, percentiles in ms).
    pub latency: Vec<(String, Percentiles)>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A self-contained SVG (no scripts, no external fonts) of a run.
pub fn svg(p: &Picture) -> String {
    const W: f64 = 860.0;
    const LEFT: f64 = 250.0;
    const BAR_W: f64 = 520.0;
    const ROW: f64 = 26.0;
    let mut out = String::new();
    let tp_rows = p.throughput.len().max(1) as f64;
    let lat_rows = (p.latency.len() as f64) * 4.0;
    let tp_top = 70.0;
    let tp_height = tp_rows * ROW + 30.0;
    let lat_top = tp_top + tp_height + 50.0;
    let height = lat_top + lat_rows * 14.0 + p.latency.len() as f64 * 10.0 + 40.0;
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height:.0}" viewBox="0 0 {W} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="10" y="22" font-size="16" font-weight="bold">rewardhooks end-to-end benchmark</text>"#
    );
    let _ = writeln!(
        out,
        r##"<text x="10" y="40" fill="#555">{}</text>"##,
        escape(&p.subtitle)
    );
    // Throughput bars, scaled to the largest of the bars and the baseline.
    let _ = writeln!(
        out,
        r#"<text x="10" y="{:.0}" font-weight="bold">Throughput (deliveries/s) against the HTTP baseline</text>"#,
        tp_top - 8.0
    );
    let top = p
        .throughput
        .iter()
        .map(|(_, v)| *v)
        .chain(p.http_baseline)
        .fold(1.0_f64, f64::max);
    for (i, (label, value)) in p.throughput.iter().enumerate() {
        let y = tp_top + i as f64 * ROW;
        let w = BAR_W * value / top;
        let ratio = p
            .http_baseline
            .filter(|b| *b > 0.0)
            .map(|b| format!(" ({:.0}%)", 100.0 * value / b))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            r#"<text x="{:.0}" y="{:.0}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            y + 15.0,
            escape(label)
        );
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{y:.0}" width="{w:.1}" height="{:.0}" fill="#4a7ebb"/>"##,
            ROW - 6.0
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.0}">{value:.0}{ratio}</text>"#,
            LEFT + w + 4.0,
            y + 15.0
        );
    }
    if let Some(base) = p.http_baseline {
        let x = LEFT + BAR_W * base / top;
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{:.0}" x2="{x:.1}" y2="{:.0}" stroke="#c0392b" stroke-width="2" stroke-dasharray="4 3"/>"##,
            tp_top - 4.0,
            tp_top + tp_rows * ROW
        );
        let _ = writeln!(
            out,
            r##"<text x="{x:.1}" y="{:.0}" fill="#c0392b" text-anchor="end">HTTP baseline {base:.0} req/s</text>"##,
            tp_top + tp_rows * ROW + 14.0
        );
    }
    if let Some(kafka) = p.kafka_baseline {
        let _ = writeln!(
            out,
            r##"<text x="10" y="{:.0}" fill="#555">Kafka pipeline baseline (consume, produce idempotent acks=all): {kafka:.0} records/s</text>"##,
            tp_top + tp_rows * ROW + 14.0
        );
    }
    // Latency: one group of four bars (p50, p90, p99, max) per phase, on a
    // shared scale, with the 50 ms target marked.
    let _ = writeln!(
        out,
        r#"<text x="10" y="{:.0}" font-weight="bold">Event-to-delivery latency (ms): p50, p90, p99, max</text>"#,
        lat_top - 8.0
    );
    let lat_max = p
        .latency
        .iter()
        .map(|(_, l)| l.max)
        .fold(50.0_f64, f64::max);
    let mut y = lat_top;
    for (label, l) in &p.latency {
        let _ = writeln!(
            out,
            r#"<text x="{:.0}" y="{:.0}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            y + 20.0,
            escape(label)
        );
        for (name, v, colour) in [
            ("p50", l.p50, "#7fb3d5"),
            ("p90", l.p90, "#5499c7"),
            ("p99", l.p99, "#2471a3"),
            ("max", l.max, "#1a5276"),
        ] {
            let w = BAR_W * v / lat_max;
            let _ = writeln!(
                out,
                r#"<rect x="{LEFT}" y="{y:.0}" width="{w:.1}" height="12" fill="{colour}"/>"#
            );
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.0}" font-size="10">{name} {v:.1}</text>"#,
                LEFT + w + 4.0,
                y + 10.0
            );
            y += 14.0;
        }
        y += 10.0;
    }
    if !p.latency.is_empty() {
        let x = LEFT + BAR_W * 50.0 / lat_max;
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{:.0}" x2="{x:.1}" y2="{y:.0}" stroke="#c0392b" stroke-width="2" stroke-dasharray="4 3"/>"##,
            lat_top - 4.0
        );
        let _ = writeln!(
            out,
            r##"<text x="{x:.1}" y="{:.0}" fill="#c0392b" text-anchor="middle">50 ms target</text>"##,
            y + 12.0
        );
    }
    out.push_str("</svg>\n");
    out
}
