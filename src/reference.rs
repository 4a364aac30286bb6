//! Reference pages generated from the code they describe, so they cannot
//! drift: `docs/metrics.md` from the metrics registry and
//! `docs/configuration-reference.md` from `config/default.toml`. `make docs`
//! writes them (`rewardhooks docs-metrics`, `rewardhooks docs-config`); the
//! tests below fail when a committed page is stale.

use prometheus::core::Collector;
use prometheus::proto::{MetricFamily, MetricType};

use crate::metrics::{Metrics, METRICS};

/// Every collector of [`Metrics`]. The registry's own gather skips label
/// sets that were never used, so the table is built from the collectors; a
/// test checks that this list covers everything registered.
fn collectors(m: &Metrics) -> Vec<&dyn Collector> {
    vec![
        &m.events_consumed,
        &m.events_invalid,
        &m.deliveries,
        &m.delivery_attempt_duration,
        &m.event_to_delivery,
        &m.dead_letters,
        &m.retries_scheduled,
        &m.deliveries_deferred,
        &m.deliveries_dropped,
        &m.deliveries_by_subscription,
        &m.subscriptions,
        &m.consumer_lag,
        &m.in_flight_deliveries,
        &m.rate_limited,
        &m.circuit_open,
        &m.build_info,
        &m.partition_stuck,
        &m.consumer_lag_measured,
        &m.first_attempt_duration,
        &m.unknown_key_subscriptions,
        &m.operational_events,
    ]
}

/// One row of the metrics table.
struct MetricRow {
    name: String,
    kind: &'static str,
    labels: Vec<String>,
    help: String,
    buckets: Vec<f64>,
}

fn kind_name(t: MetricType) -> &'static str {
    match t {
        MetricType::COUNTER => "counter",
        MetricType::GAUGE => "gauge",
        MetricType::HISTOGRAM => "histogram",
        MetricType::SUMMARY => "summary",
        MetricType::UNTYPED => "untyped",
    }
}

fn metric_rows(m: &Metrics) -> Vec<MetricRow> {
    let mut rows: Vec<MetricRow> = collectors(m)
        .into_iter()
        .flat_map(|c| {
            let labels: Vec<Vec<String>> =
                c.desc().iter().map(|d| d.variable_labels.clone()).collect();
            c.collect()
                .into_iter()
                .zip(labels)
                .map(|(family, labels)| row(&family, labels))
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

fn row(family: &MetricFamily, labels: Vec<String>) -> MetricRow {
    let buckets = family
        .get_metric()
        .first()
        .map(|m| {
            m.get_histogram()
                .get_bucket()
                .iter()
                .map(|b| b.upper_bound())
                .collect()
        })
        .unwrap_or_default();
    MetricRow {
        name: family.name().to_string(),
        kind: kind_name(family.get_field_type()),
        labels,
        help: family.help().to_string(),
        buckets,
    }
}

/// A bucket bound as people read it: `5ms`, `2.5s`, `30m`, `3d`.
fn seconds(s: f64) -> String {
    let units = [(86_400.0, "d"), (3_600.0, "h"), (60.0, "m"), (1.0, "s")];
    for (size, unit) in units {
        if s >= size && (s / size).fract() == 0.0 {
            return format!("{}{unit}", s / size);
        }
    }
    if s >= 1.0 {
        format!("{s}s")
    } else {
        format!("{}ms", (s * 1000.0 * 1000.0).round() / 1000.0)
    }
}

/// Escapes text for a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// `docs/metrics.md`: every metric with its type, labels and help text.
pub fn metrics_markdown() -> String {
    let mut out = String::from(
        "# Metrics reference\n\n\
         Generated from the metrics registry (`src/metrics.rs`) by `make docs`; a test \
         fails when it is stale. What to do with them: \
         [operations.md](operations.md#observability).\n\n\
         Prometheus scrapes `GET /metrics` on every instance running the `api` role. \
         Every name starts with `rewardhooks_`. No label carries a URL, a secret or a \
         customer id. Only one metric carries a subscription id: \
         `rewardhooks_deliveries_by_subscription_total`, which is off unless \
         `metrics.per_subscription_labels = true` (one series per subscription, so for \
         small deployments only). A labelled metric appears in `/metrics` once one of \
         its label sets has been counted.\n\n\
         | metric | type | labels | help |\n|---|---|---|---|\n",
    );
    for r in metric_rows(&METRICS) {
        let labels = r
            .labels
            .iter()
            .map(|l| format!("`{l}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut help = cell(&r.help);
        if !r.buckets.is_empty() {
            let bounds: Vec<String> = r.buckets.iter().map(|b| seconds(*b)).collect();
            help.push_str(&format!(" Buckets: {}.", bounds.join(", ")));
        }
        out.push_str(&format!(
            "| `{}` | {} | {labels} | {help} |\n",
            r.name, r.kind
        ));
    }
    out
}

/// One parsed line group of the defaults file.
enum Item {
    /// `[section]` headers with no keys or comments between them.
    Tables(Vec<String>),
    Key {
        name: String,
        value: String,
    },
}

/// Whether `value` is one complete TOML value.
fn is_value(value: &str) -> bool {
    toml::from_str::<toml::Table>(&format!("v = {value}")).is_ok()
}

/// The value part of `key = value # comment`, which may span lines.
fn take_value<'a>(first: &str, lines: &mut impl Iterator<Item = &'a str>) -> String {
    let mut value = first.trim().to_string();
    // A trailing comment: the shortest prefix before a `#` that is a value
    // (a `#` inside a string makes a shorter prefix fail to parse).
    let cut = value
        .match_indices('#')
        .map(|(i, _)| value[..i].trim_end())
        .find(|v| is_value(v))
        .map(str::to_string);
    if let Some(cut) = cut {
        return cut;
    }
    if is_value(&value) {
        return value;
    }
    // A value spread over several lines (an array).
    for line in lines.by_ref() {
        value.push(' ');
        value.push_str(line.trim());
        if is_value(&value) {
            break;
        }
    }
    value
}

/// Comment text for Markdown: prose lines joined (an empty comment line
/// starts a paragraph), indented lines (examples in the comment) as a code
/// block.
fn prose(comment: &[String]) -> String {
    let mut out = String::new();
    let mut code = false;
    for line in comment {
        let is_code = line.starts_with("  ");
        if is_code != code {
            out.push_str(if is_code { "\n\n```toml\n" } else { "```\n\n" });
            code = is_code;
        }
        if code {
            out.push_str(line.trim_start());
            out.push('\n');
        } else if line.trim().is_empty() {
            out.push_str("\n\n");
        } else {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push(' ');
            }
            // Angle brackets would read as HTML tags.
            out.push_str(&line.trim().replace('<', "&lt;").replace('>', "&gt;"));
        }
    }
    if code {
        out.push_str("```");
    }
    out
}

/// `docs/configuration-reference.md`: every key of the defaults file with its
/// default and its comment, section by section.
pub fn config_markdown(toml_text: &str) -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from `config/default.toml` by `make docs`; a test fails when it is \
         stale. How configuration is loaded and what to set for production: \
         [configuration.md](configuration.md).\n\n",
    );
    let mut lines = toml_text.lines();
    let mut comment: Vec<String> = Vec::new();
    // The file's opening comment, up to the first blank line.
    let mut intro_done = false;
    let mut section = String::new();
    let mut items: Vec<(Vec<String>, Item)> = Vec::new();
    // Whether the previous line was a table header.
    let mut after_header = false;
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        let follows_header = std::mem::take(&mut after_header);
        if trimmed.is_empty() {
            if !intro_done && !comment.is_empty() {
                out.push_str(&prose(&comment));
                out.push('\n');
                intro_done = true;
            }
            comment.clear();
            continue;
        }
        if let Some(text) = trimmed.strip_prefix('#') {
            let text = text.strip_prefix(' ').unwrap_or(text);
            comment.push(text.to_string());
            continue;
        }
        intro_done = true;
        if let Some(name) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            section = name.trim().to_string();
            after_header = true;
            let merge = follows_header && comment.is_empty();
            match items.last_mut() {
                Some((_, Item::Tables(tables))) if merge => tables.push(section.clone()),
                _ => items.push((
                    std::mem::take(&mut comment),
                    Item::Tables(vec![section.clone()]),
                )),
            }
            continue;
        }
        let Some((key, rest)) = trimmed.split_once('=') else {
            continue;
        };
        let name = key.trim().trim_matches('"');
        let name = if section.is_empty() {
            name.to_string()
        } else {
            format!("{section}.{name}")
        };
        let value = take_value(rest, &mut lines);
        // A key right after another key shares its comment.
        if comment.is_empty() {
            if let Some((previous, Item::Key { .. })) = items.last() {
                comment = previous.clone();
            }
        }
        items.push((std::mem::take(&mut comment), Item::Key { name, value }));
    }
    let mut in_table = false;
    let mut items = items.into_iter().peekable();
    while let Some((comment, item)) = items.next() {
        match item {
            Item::Tables(tables) => {
                let names: Vec<String> = tables.iter().map(|t| format!("`[{t}]`")).collect();
                out.push_str(&format!("\n## {}\n\n", names.join(", ")));
                if !comment.is_empty() {
                    out.push_str(&prose(&comment));
                    out.push_str("\n\n");
                }
                if !matches!(items.peek(), Some((_, Item::Key { .. }))) {
                    out.push_str("Empty by default.\n");
                }
                in_table = false;
            }
            Item::Key { name, value } => {
                if !in_table {
                    out.push_str("| key | default | meaning |\n|---|---|---|\n");
                    in_table = true;
                }
                let meaning = cell(&prose(&comment).replace('\n', " "));
                out.push_str(&format!("| `{name}` | `{}` | {meaning} |\n", cell(&value)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_metrics_reference_is_current() {
        assert_eq!(
            metrics_markdown(),
            include_str!("../docs/metrics.md"),
            "docs/metrics.md is stale: run `make docs`"
        );
    }

    #[test]
    fn committed_configuration_reference_is_current() {
        assert_eq!(
            config_markdown(crate::config::DEFAULT_TOML),
            include_str!("../docs/configuration-reference.md"),
            "docs/configuration-reference.md is stale: run `make docs`"
        );
    }

    #[test]
    fn metrics_reference_lists_every_registered_metric() {
        // Whatever the registry gathers (unlabelled metrics, and labelled
        // ones some test has counted) must be in the table.
        let listed: Vec<String> = metric_rows(&METRICS).into_iter().map(|r| r.name).collect();
        for family in METRICS.registry.gather() {
            assert!(
                listed.contains(&family.name().to_string()),
                "{} is registered but missing from reference::collectors",
                family.name()
            );
        }
        // And the registry holds no collector beyond the listed ones.
        let debug = format!("{:?}", METRICS.registry);
        let registered = debug
            .split_once("RegistryCore (")
            .and_then(|(_, rest)| rest.split_once(" collectors)"))
            .and_then(|(n, _)| n.parse::<usize>().ok())
            .expect("the registry's Debug output names its collector count");
        assert_eq!(
            registered,
            collectors(&METRICS).len(),
            "a metric is registered but missing from reference::collectors"
        );
    }

    #[test]
    fn every_default_key_is_in_the_configuration_reference() {
        let page = config_markdown(crate::config::DEFAULT_TOML);
        let defaults: toml::Table = toml::from_str(crate::config::DEFAULT_TOML).unwrap();
        fn walk(prefix: &str, table: &toml::Table, page: &str) {
            for (key, value) in table {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                match value {
                    toml::Value::Table(t) if !t.is_empty() => walk(&name, t, page),
                    toml::Value::Table(_) => assert!(page.contains(&format!("`[{name}]`"))),
                    _ => assert!(page.contains(&format!("| `{name}` |")), "{name} missing"),
                }
            }
        }
        walk("", &defaults, &page);
    }

    #[test]
    fn config_parser_handles_shared_comments_trailing_comments_and_long_arrays() {
        let page = config_markdown(
            "# Intro.\n\n[a]\n# Shared.\nx = 1\ny = \"s # not a comment\" # note\n\
             z = [\n  1,\n  2,\n]\n[b]\n[c]\n",
        );
        assert!(page.contains("Intro.\n"));
        assert!(page.contains("| `a.x` | `1` | Shared. |"));
        assert!(page.contains("| `a.y` | `\"s # not a comment\"` | Shared. |"));
        assert!(page.contains("| `a.z` | `[ 1, 2, ]` |"));
        assert!(page.contains("## `[b]`, `[c]`\n\nEmpty by default."));
    }

    #[test]
    fn bucket_bounds_read_as_durations() {
        assert_eq!(seconds(0.005), "5ms");
        assert_eq!(seconds(2.5), "2.5s");
        assert_eq!(seconds(1800.0), "30m");
        assert_eq!(seconds(259_200.0), "3d");
    }
}
