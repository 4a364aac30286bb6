//! The HTTP side of one delivery attempt: sign, POST, classify the outcome.

use std::time::{Duration, Instant};

use std::net::IpAddr;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};

use crate::net::{DestinationPolicy, GuardedResolver};
use crate::signing::{sign, SigningKey, USER_AGENT};

/// What an attempt means for the delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer.
    Delivered,
    /// 410: the endpoint is gone for good.
    Gone,
    /// Worth another try later: any other answer, a timeout, a connection,
    /// DNS or TLS error. `retry_after` comes from a 429 or 503 answer.
    Retry { retry_after: Option<Duration> },
    /// Not sent, and sending again would not help: the destination or the
    /// request is refused before it leaves.
    Refused { reason: String },
}

impl Outcome {
    /// The `outcome` label of attempt metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered => "success",
            Outcome::Gone => "gone",
            Outcome::Retry { .. } => "retry",
            Outcome::Refused { .. } => "refused",
        }
    }
}

/// What one attempt produced.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub outcome: Outcome,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub response_body: String,
    pub duration: Duration,
    /// The request headers that went out (values of custom and
    /// authorization headers redacted), for the test webhook's answer;
    /// empty when no request left.
    pub sent_headers: Vec<(String, String)>,
}

impl AttemptResult {
    /// A failure before the request left, worth another try later (the
    /// endpoint's token could not be fetched).
    pub(crate) fn retry_without_answer(error: String, started: Instant) -> Self {
        AttemptResult {
            outcome: Outcome::Retry { retry_after: None },
            status: None,
            error: Some(error),
            response_body: String::new(),
            duration: started.elapsed(),
            sent_headers: Vec::new(),
        }
    }

    fn refused(reason: String, started: Instant) -> Self {
        AttemptResult {
            outcome: Outcome::Refused {
                reason: reason.clone(),
            },
            status: None,
            error: Some(reason),
            response_body: String::new(),
            duration: started.elapsed(),
            sent_headers: Vec::new(),
        }
    }

    pub fn success(&self) -> bool {
        self.outcome == Outcome::Delivered
    }

    /// A summary for logs, headers and the delivery log.
    pub(crate) fn describe(&self) -> String {
        match (&self.error, self.status) {
            (Some(e), _) => e.clone(),
            (None, Some(s)) => format!("HTTP {s}"),
            (None, None) => "no answer".to_string(),
        }
    }
}

/// A signed outbound request.
pub struct Outbound<'a> {
    pub url: &'a str,
    /// `url` already parsed (a subscription's, kept while it is live);
    /// `None` parses `url`, or `Err` when it does not parse.
    pub parsed: Option<Result<&'a reqwest::Url, String>>,
    /// Keep the headers that went out in the result (the test webhook's
    /// answer); deliveries leave it empty.
    pub show_headers: bool,
    pub event_id: &'a str,
    pub body: &'a bytes::Bytes,
    pub keys: &'a [&'a SigningKey],
    /// The subscription's custom headers.
    pub extra: &'a [(HeaderName, HeaderValue)],
    /// An OAuth2 access token, sent as `Authorization: Bearer`.
    pub bearer: Option<&'a str>,
}

#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    max_response_bytes: usize,
    /// Checked here for IP-literal URLs, which skip the resolver.
    policy: DestinationPolicy,
}

impl Sender {
    pub fn new(
        timeout: Duration,
        max_response_bytes: usize,
        policy: DestinationPolicy,
        source_address: Option<IpAddr>,
        proxy: Option<&str>,
        max_idle_per_host: usize,
    ) -> Result<Self, reqwest::Error> {
        // Proxy variables from the environment would hand every request to
        // a proxy the address guard cannot see past: only an explicit
        // `delivery.proxy` is used.
        let mut builder = reqwest::Client::builder().no_proxy();
        if let Some(proxy) = proxy {
            builder = builder.proxy(reqwest::Proxy::all(proxy)?);
        }
        let client = builder
            .dns_resolver(GuardedResolver::new(policy.clone()))
            .local_address(source_address)
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            // As many idle connections to one host as requests can be in
            // flight: many subscriptions on one host (a platform's own
            // services) keep their connections instead of reconnecting.
            .pool_max_idle_per_host(max_idle_per_host)
            .tcp_nodelay(true)
            .build()?;
        Ok(Sender {
            client,
            max_response_bytes,
            policy,
        })
    }

    /// The destination checks that apply at send time (the resolver checks
    /// names): a URL that parses, an allowed scheme, a permitted IP literal.
    pub(crate) fn guard(&self, url: &str) -> Result<reqwest::Url, String> {
        let url = crate::net::parse_url(url)?;
        self.check(&url)?;
        Ok(url)
    }

    /// The same checks on a URL already parsed.
    fn check(&self, url: &reqwest::Url) -> Result<(), String> {
        // Scheme rules apply at send time too: a subscription registered as
        // http:// while that was allowed stops when it no longer is.
        if !self.policy.permits_scheme(url.scheme()) {
            return Err(format!(
                "destination refused: scheme {} is not allowed",
                url.scheme()
            ));
        }
        let literal = url.host_str().and_then(|h| {
            h.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .ok()
        });
        if let Some(ip) = literal.filter(|ip| !self.policy.permits(*ip)) {
            return Err(format!("destination refused: {ip} is not a public address"));
        }
        Ok(())
    }

    /// The HTTP client, with the address guard in its resolver and no
    /// redirects (the token fetch shares it).
    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub async fn send(&self, req: Outbound<'_>) -> AttemptResult {
        let started = Instant::now();
        let url = match req.parsed {
            Some(Ok(url)) => self.check(url).map(|()| url.clone()),
            Some(Err(e)) => Err(e),
            None => self.guard(req.url),
        };
        let url = match url {
            Ok(url) => url,
            Err(reason) => return AttemptResult::refused(reason, started),
        };
        let timestamp = chrono::Utc::now().timestamp();
        let signature = sign(req.keys, req.event_id, timestamp, req.body);
        let mut headers = HeaderMap::new();
        // Custom headers first: what rewardhooks sets itself always wins
        // (the API refuses those names anyway).
        for (name, value) in req.extra {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(token) = req.bearer {
            match HeaderValue::from_str(&format!("Bearer {token}")) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    headers.insert(AUTHORIZATION, v);
                }
                Err(_) => {
                    return AttemptResult::retry_without_answer(
                        "the OAuth2 access token is not a valid header value".into(),
                        started,
                    )
                }
            }
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let ids = [
            ("webhook-id", req.event_id.to_string()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
        ];
        for (name, value) in ids {
            match HeaderValue::from_str(&value) {
                Ok(v) => {
                    headers.insert(name, v);
                }
                Err(_) => {
                    return AttemptResult::refused(
                        format!("{name} is not a valid header value"),
                        started,
                    )
                }
            }
        }
        let sent_headers = if req.show_headers {
            shown_headers(&headers)
        } else {
            Vec::new()
        };
        let result = self
            .client
            .post(url)
            .headers(headers)
            .body(req.body.clone())
            .send()
            .await;
        let mut response = match result {
            Ok(r) => r,
            Err(e) => {
                return AttemptResult {
                    outcome: Outcome::Retry { retry_after: None },
                    status: None,
                    error: Some(classify(&e)),
                    response_body: String::new(),
                    duration: started.elapsed(),
                    sent_headers,
                }
            }
        };
        let status = response.status().as_u16();
        let retry_after = matches!(status, 429 | 503)
            .then(|| response.headers().get(reqwest::header::RETRY_AFTER))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let mut body = Vec::new();
        let mut error = None;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = self.max_response_bytes.saturating_sub(body.len());
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if body.len() >= self.max_response_bytes {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // The status already decides the outcome; note a cut body.
                    if !(200..300).contains(&status) {
                        error = Some(format!("HTTP {status}; reading body: {}", classify(&e)));
                    }
                    break;
                }
            }
        }
        let outcome = match status {
            200..=299 => Outcome::Delivered,
            410 => Outcome::Gone,
            _ => Outcome::Retry { retry_after },
        };
        AttemptResult {
            outcome,
            status: Some(status),
            error,
            response_body: String::from_utf8_lossy(&body).into_owned(),
            duration: started.elapsed(),
            sent_headers,
        }
    }
}

/// The headers of a request as they may be shown: the ones rewardhooks sets
/// itself in full, the endpoint's own (custom headers, an OAuth2 token) with
/// their values redacted. reqwest adds `user-agent` and `content-length`.
fn shown_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut shown: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| {
            let own = matches!(
                name.as_str(),
                "content-type" | "webhook-id" | "webhook-timestamp" | "webhook-signature"
            );
            let value = if own {
                value.to_str().unwrap_or_default().to_string()
            } else {
                "<redacted>".to_string()
            };
            (name.as_str().to_string(), value)
        })
        .collect();
    shown.push(("user-agent".into(), USER_AGENT.to_string()));
    shown.sort();
    shown
}

pub(crate) fn classify(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect error"
    } else if e.is_builder() {
        "bad request"
    } else {
        "request error"
    };
    let mut message = kind.to_string();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

/// `Retry-After` as seconds or an HTTP date.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = date.to_utc() - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        let future = (chrono::Utc::now() + chrono::Duration::seconds(120))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let d = parse_retry_after(&future).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
