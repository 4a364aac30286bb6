//! Endpoint credentials: custom request headers and OAuth2 client
//! credentials a subscription's endpoint requires besides the signature.
//! Their secret parts are sealed at rest like the signing secret (see
//! `store`) and only ever shown redacted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::signing::Secret;

/// Custom headers a subscription may carry, at most.
pub const MAX_HEADERS: usize = 10;
/// Longest custom header value, in bytes.
pub const MAX_HEADER_VALUE: usize = 1024;
/// Longest custom header name, in bytes.
const MAX_HEADER_NAME: usize = 256;

/// Header names rewardhooks sets itself or that belong to the connection,
/// refused as custom headers (lower case). `webhook-*` is refused as a prefix.
const RESERVED: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "user-agent",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "expect",
];

/// How rewardhooks authenticates to an endpoint, besides signing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EndpointAuth {
    /// OAuth 2.0 client credentials grant (RFC 6749 §4.4): a token fetched
    /// from `token_url` is sent as `Authorization: Bearer`.
    Oauth2ClientCredentials {
        token_url: String,
        client_id: String,
        client_secret: Secret,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
    },
}

impl EndpointAuth {
    /// The same with the client secret redacted, as the API shows it.
    pub fn redacted(&self) -> serde_json::Value {
        match self {
            EndpointAuth::Oauth2ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
            } => {
                let mut v = serde_json::json!({
                    "type": "oauth2_client_credentials",
                    "token_url": token_url,
                    "client_id": client_id,
                    "client_secret": redact(client_secret.expose()),
                });
                if let Some(scope) = scope {
                    v["scope"] = serde_json::Value::String(scope.clone());
                }
                v
            }
        }
    }
}

/// Why custom headers or auth settings are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("at most {MAX_HEADERS} headers are allowed, got {0}")]
    TooMany(usize),
    #[error("header name {0:?} is not a valid HTTP header name")]
    BadName(String),
    #[error("header {0:?} is set by rewardhooks or belongs to the connection; it cannot be set")]
    Reserved(String),
    #[error("header {0:?} is listed twice (header names are case-insensitive)")]
    Duplicate(String),
    #[error("the value of header {0:?} must be 1 to {MAX_HEADER_VALUE} bytes without control characters")]
    BadValue(String),
    #[error("header Authorization cannot be combined with auth, which sets it")]
    AuthConflict,
    #[error("auth.{0} must be 1 to 1024 characters without control characters")]
    BadAuthField(&'static str),
}

/// Checks custom headers: count, names, values.
pub fn check_headers(
    headers: &BTreeMap<String, String>,
    auth: bool,
) -> Result<(), CredentialsError> {
    if headers.len() > MAX_HEADERS {
        return Err(CredentialsError::TooMany(headers.len()));
    }
    let mut seen = std::collections::HashSet::new();
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if name.is_empty()
            || name.len() > MAX_HEADER_NAME
            || reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
        {
            return Err(CredentialsError::BadName(printable(name)));
        }
        if lower.starts_with("webhook-") || RESERVED.contains(&lower.as_str()) {
            return Err(CredentialsError::Reserved(name.clone()));
        }
        if !seen.insert(lower.clone()) {
            return Err(CredentialsError::Duplicate(name.clone()));
        }
        if auth && lower == "authorization" {
            return Err(CredentialsError::AuthConflict);
        }
        if value.is_empty()
            || value.len() > MAX_HEADER_VALUE
            || value.chars().any(char::is_control)
            || reqwest::header::HeaderValue::from_str(value).is_err()
        {
            return Err(CredentialsError::BadValue(name.clone()));
        }
    }
    Ok(())
}

/// Checks the plain fields of an auth setting (the token URL is checked
/// against the destination policy by the caller).
pub fn check_auth(auth: &EndpointAuth) -> Result<(), CredentialsError> {
    let EndpointAuth::Oauth2ClientCredentials {
        client_id,
        client_secret,
        scope,
        ..
    } = auth;
    let fine = |s: &str| !s.is_empty() && s.len() <= 1024 && !s.chars().any(char::is_control);
    if !fine(client_id) {
        return Err(CredentialsError::BadAuthField("client_id"));
    }
    if !fine(client_secret.expose()) {
        return Err(CredentialsError::BadAuthField("client_secret"));
    }
    if scope.as_deref().is_some_and(|s| !fine(s)) {
        return Err(CredentialsError::BadAuthField("scope"));
    }
    Ok(())
}

/// A name for an error message, control characters escaped.
fn printable(name: &str) -> String {
    name.chars().flat_map(char::escape_debug).take(64).collect()
}

/// A credential as the API shows it: a leading scheme word kept
/// (`Bearer`, `Basic`), the rest `****` and its last 4 characters, or only
/// `****` when it is too short for its end to be shown safely.
pub fn redact(value: &str) -> String {
    let (scheme, secret) = match value.split_once(' ') {
        Some((scheme, rest))
            if !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphabetic()) =>
        {
            (Some(scheme), rest.trim_start())
        }
        _ => (None, value),
    };
    let chars: Vec<char> = secret.chars().collect();
    let tail: String = if chars.len() >= 12 {
        chars[chars.len() - 4..].iter().collect()
    } else {
        String::new()
    };
    match scheme {
        Some(scheme) => format!("{scheme} ****{tail}"),
        None => format!("****{tail}"),
    }
}

/// Header values as the API shows them.
pub fn redacted_headers(headers: &BTreeMap<String, Secret>) -> BTreeMap<String, String> {
    headers
        .iter()
        .map(|(name, value)| (name.clone(), redact(value.expose())))
        .collect()
}

/// The headers a PATCH asks for: a value equal to the redacted form of the
/// current value of the same header keeps the current value, so what GET
/// shows can be sent back unchanged.
pub fn merge_redacted(
    current: &BTreeMap<String, Secret>,
    asked: &BTreeMap<String, String>,
) -> BTreeMap<String, Secret> {
    asked
        .iter()
        .map(|(name, value)| {
            let kept = current
                .get(name)
                .filter(|cur| redact(cur.expose()) == *value)
                .cloned();
            (
                name.clone(),
                kept.unwrap_or_else(|| Secret::from_string(value.clone())),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reserved_hop_by_hop_and_control_characters_are_refused() {
        assert!(check_headers(
            &map(&[("Authorization", "Bearer x"), ("X-Api-Key", "k")]),
            false
        )
        .is_ok());
        for name in [
            "webhook-id",
            "Webhook-Signature",
            "Content-Type",
            "content-length",
            "Host",
            "Connection",
            "Transfer-Encoding",
            "Upgrade",
            "TE",
        ] {
            assert_eq!(
                check_headers(&map(&[(name, "v")]), false),
                Err(CredentialsError::Reserved(name.into())),
                "{name}"
            );
        }
        assert!(matches!(
            check_headers(&map(&[("X-Bad\nName", "v")]), false),
            Err(CredentialsError::BadName(_))
        ));
        assert!(matches!(
            check_headers(&map(&[("X-Ok", "a\r\nInjected: 1")]), false),
            Err(CredentialsError::BadValue(_))
        ));
        let long = "v".repeat(MAX_HEADER_VALUE + 1);
        assert!(matches!(
            check_headers(&map(&[("X-Long", &long)]), false),
            Err(CredentialsError::BadValue(_))
        ));
        let many: BTreeMap<String, String> =
            (0..11).map(|i| (format!("X-{i}"), "v".into())).collect();
        assert_eq!(
            check_headers(&many, false),
            Err(CredentialsError::TooMany(11))
        );
        assert_eq!(
            check_headers(&map(&[("X-A", "1"), ("x-a", "2")]), false),
            Err(CredentialsError::Duplicate("x-a".into()))
        );
        assert_eq!(
            check_headers(&map(&[("authorization", "Bearer x")]), true),
            Err(CredentialsError::AuthConflict)
        );
    }

    #[test]
    fn redaction_keeps_the_scheme_and_at_most_the_last_four_characters() {
        assert_eq!(redact("Bearer sk_live_0123456789abcd"), "Bearer ****abcd");
        assert_eq!(redact("0123456789abcdef"), "****cdef");
        assert_eq!(redact("short"), "****");
        assert_eq!(redact("Basic abc"), "Basic ****");
        let current: BTreeMap<String, Secret> = [(
            "Authorization".to_string(),
            Secret::from_string("Bearer sk_live_0123456789abcd".into()),
        )]
        .into();
        let merged = merge_redacted(
            &current,
            &map(&[("Authorization", "Bearer ****abcd"), ("X-New", "n")]),
        );
        assert_eq!(
            merged["Authorization"].expose(),
            "Bearer sk_live_0123456789abcd"
        );
        assert_eq!(merged["X-New"].expose(), "n");
        assert!(!format!("{merged:?}").contains("sk_live"));
    }

    #[test]
    fn auth_reads_and_shows_only_a_redacted_client_secret() {
        let auth: EndpointAuth = serde_json::from_value(serde_json::json!({
            "type": "oauth2_client_credentials",
            "token_url": "https://auth.example.com/token",
            "client_id": "rewardhooks",
            "client_secret": "cs_0123456789wxyz",
        }))
        .unwrap();
        assert!(check_auth(&auth).is_ok());
        let shown = auth.redacted();
        assert_eq!(shown["client_secret"], "****wxyz");
        assert!(!format!("{auth:?}").contains("cs_0123"));
        assert!(
            serde_json::from_value::<EndpointAuth>(serde_json::json!({"type": "basic"})).is_err()
        );
    }
}
