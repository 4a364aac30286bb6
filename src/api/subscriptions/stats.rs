//! `GET /v1/subscriptions/{id}/stats`: success rate and latency of a
//! subscription's recent attempts, for the portal's charts. Computed from the
//! attempts view every instance keeps (the newest
//! `api.attempts_per_subscription` attempts), so `sampled` says how many
//! attempts the numbers stand on.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::find;
use crate::api::auth::Caller;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::{ApiPath, ApiQuery, AppState};
use crate::attempts::AttemptRecord;

/// Buckets in the time series (one per hour of the default window).
const BUCKETS: usize = 24;
const MIN_WINDOW: Duration = Duration::from_secs(60);
const MAX_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// How far back, as a duration (`1h`, `24h`, `7d`); default `24h`, at
    /// most `30d`.
    window: Option<String>,
}

/// Attempts by outcome.
#[derive(Debug, Default, Serialize, ToSchema, PartialEq)]
pub struct OutcomeCounts {
    /// The endpoint answered 2xx.
    pub success: u64,
    /// The endpoint answered with another status.
    pub http_error: u64,
    /// No answer: timeout, connection, TLS or DNS error, or refused.
    pub no_response: u64,
}

/// One bucket of the time series.
#[derive(Debug, Serialize, ToSchema, PartialEq)]
pub struct StatsBucket {
    pub start: DateTime<Utc>,
    pub attempts: u64,
    pub success: u64,
    /// p95 latency of this bucket's attempts, in milliseconds.
    pub p95_ms: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema, PartialEq)]
pub struct SubscriptionStats {
    pub subscription_id: String,
    /// The window, as asked (`24h`).
    pub window: String,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// Attempts in the window.
    pub attempts: u64,
    pub outcomes: OutcomeCounts,
    /// success / attempts, 0 to 1; null without attempts.
    pub success_rate: Option<f64>,
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
    /// Oldest to newest, equal spans covering the window.
    pub series: Vec<StatsBucket>,
    /// Whether the window may hold older attempts than the view keeps (it
    /// keeps the newest `api.attempts_per_subscription`): then the numbers
    /// stand on those newest attempts only.
    pub truncated: bool,
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

impl SubscriptionStats {
    /// Stats of `attempts` (any order) that fall in `window` before `now`.
    pub fn compute(
        subscription_id: &str,
        window_label: &str,
        window: Duration,
        now: DateTime<Utc>,
        attempts: &[AttemptRecord],
        truncated: bool,
    ) -> Self {
        let span = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::days(1));
        let since = now - span;
        let in_window: Vec<&AttemptRecord> = attempts
            .iter()
            .filter(|a| a.at > since && a.at <= now)
            .collect();
        let mut outcomes = OutcomeCounts::default();
        for a in &in_window {
            match (a.success, a.status_code) {
                (true, _) => outcomes.success += 1,
                (false, Some(_)) => outcomes.http_error += 1,
                (false, None) => outcomes.no_response += 1,
            }
        }
        let mut latencies: Vec<u64> = in_window.iter().map(|a| a.duration_ms).collect();
        latencies.sort_unstable();
        let bucket_span = span / BUCKETS as i32;
        let series = (0..BUCKETS)
            .map(|i| {
                let start = since + bucket_span * i as i32;
                let end = start + bucket_span;
                let last = i + 1 == BUCKETS;
                let mine: Vec<&&AttemptRecord> = in_window
                    .iter()
                    .filter(|a| a.at > start && (a.at <= end || last))
                    .collect();
                let mut ms: Vec<u64> = mine.iter().map(|a| a.duration_ms).collect();
                ms.sort_unstable();
                StatsBucket {
                    start,
                    attempts: mine.len() as u64,
                    success: mine.iter().filter(|a| a.success).count() as u64,
                    p95_ms: percentile(&ms, 95.0),
                }
            })
            .collect();
        let total = in_window.len() as u64;
        SubscriptionStats {
            subscription_id: subscription_id.to_string(),
            window: window_label.to_string(),
            since,
            until: now,
            attempts: total,
            success_rate: (total > 0).then(|| outcomes.success as f64 / total as f64),
            outcomes,
            p50_ms: percentile(&latencies, 50.0),
            p95_ms: percentile(&latencies, 95.0),
            series,
            truncated,
        }
    }
}

#[utoipa::path(get, path = "/v1/subscriptions/{id}/stats", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id"), StatsQuery),
    responses(
        (status = 200, description = "Counts by outcome, success rate, p50/p95 latency and a time series", body = SubscriptionStats),
        (status = 400, description = "A window that is not a duration between 1m and 30d", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
pub async fn stats(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> Result<Json<SubscriptionStats>, ApiError> {
    let sub = find(&state, &caller, &id).await?;
    let label = q.window.unwrap_or_else(|| "24h".to_string());
    let window = humantime::parse_duration(label.trim())
        .ok()
        .filter(|w| (MIN_WINDOW..=MAX_WINDOW).contains(w))
        .ok_or_else(|| {
            ApiError::bad_request("window must be a duration between 1m and 30d, like 24h")
        })?;
    let keep = state.shared.settings.api.attempts_per_subscription;
    let attempts = state.shared.attempt_log.recent(&sub.id, None, usize::MAX);
    let now = Utc::now();
    let since = now - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::days(1));
    // A full view whose oldest attempt is inside the window may have
    // dropped older ones that were too.
    let truncated = attempts.len() >= keep && attempts.last().is_some_and(|a| a.at > since);
    Ok(Json(SubscriptionStats::compute(
        &sub.id, &label, window, now, &attempts, truncated,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(
        minutes_ago: i64,
        ms: u64,
        status: Option<u16>,
        now: DateTime<Utc>,
    ) -> AttemptRecord {
        AttemptRecord {
            subscription_id: "sub_1".into(),
            event_id: format!("evt_{minutes_ago}_{ms}"),
            event_type: "points.earned".into(),
            attempt: 1,
            status_code: status,
            success: status.is_some_and(|s| (200..300).contains(&s)),
            duration_ms: ms,
            error: None,
            response_body: String::new(),
            at: now - chrono::Duration::minutes(minutes_ago),
            source: None,
        }
    }

    #[test]
    fn stats_count_outcomes_and_latency_percentiles_inside_the_window() {
        let now = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let mut attempts: Vec<AttemptRecord> = (1..=18)
            .map(|i| attempt(i * 10, i as u64 * 10, Some(200), now))
            .collect();
        attempts.push(attempt(5, 1000, Some(500), now));
        attempts.push(attempt(6, 2000, None, now));
        // Outside the 24 h window: not counted.
        attempts.push(attempt(25 * 60, 5, Some(500), now));
        let s = SubscriptionStats::compute(
            "sub_1",
            "24h",
            Duration::from_secs(86_400),
            now,
            &attempts,
            false,
        );
        assert_eq!(s.attempts, 20);
        assert_eq!(
            s.outcomes,
            OutcomeCounts {
                success: 18,
                http_error: 1,
                no_response: 1
            }
        );
        assert_eq!(s.success_rate, Some(0.9));
        // Latencies 10..180 by tens, then 1000 and 2000: nearest rank.
        assert_eq!(s.p50_ms, Some(100));
        assert_eq!(s.p95_ms, Some(1000));
        assert_eq!(s.series.len(), BUCKETS);
        assert_eq!(s.series.iter().map(|b| b.attempts).sum::<u64>(), 20);
        // The newest hour holds the two failures and five successes.
        let last = s.series.last().unwrap();
        assert_eq!((last.attempts, last.success), (7, 5));
        assert_eq!(last.p95_ms, Some(2000));
        assert!(s.series[0].start == s.since && s.series[0].attempts == 0);
    }

    #[test]
    fn stats_without_attempts_have_no_rate() {
        let now = Utc::now();
        let s =
            SubscriptionStats::compute("sub_1", "1h", Duration::from_secs(3600), now, &[], false);
        assert_eq!(s.attempts, 0);
        assert_eq!(s.success_rate, None);
        assert_eq!(s.p95_ms, None);
        assert!(s
            .series
            .iter()
            .all(|b| b.attempts == 0 && b.p95_ms.is_none()));
    }
}
