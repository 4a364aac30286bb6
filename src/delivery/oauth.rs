//! OAuth2 client credentials for endpoints that require them: a token per
//! subscription, fetched from its token URL through the same guarded HTTP
//! client as deliveries, cached until shortly before it expires.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::sender::Sender;
use crate::signing::Secret;
use crate::subscriptions::EndpointAuth;

/// Largest token response read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;
/// How long a token without `expires_in` is used before it is fetched again.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// A token is refreshed this long before it expires, at most (and at most a
/// fifth of its lifetime, so short-lived tokens are used too).
const REFRESH_MARGIN: Duration = Duration::from_secs(30);
/// Cache entries kept before idle ones are dropped.
const MAX_ENTRIES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token url refused: {0}")]
    Refused(String),
    #[error("token request failed: {0}")]
    Request(String),
    #[error("token endpoint answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("token response is not usable: {0}")]
    Response(String),
}

struct Cached {
    token: Secret,
    /// Which settings it was fetched with: changed settings fetch anew.
    fingerprint: String,
    refresh_at: Instant,
}

/// Tokens by subscription id. Each subscription's entry has its own lock,
/// so concurrent attempts share one fetch.
#[derive(Default)]
pub(super) struct Tokens {
    entries: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Cached>>>>>,
}

fn fingerprint(auth: &EndpointAuth) -> String {
    use sha2::Digest;
    let EndpointAuth::Oauth2ClientCredentials {
        token_url,
        client_id,
        client_secret,
        scope,
    } = auth;
    let mut h = sha2::Sha256::new();
    for part in [
        token_url.as_str(),
        client_id,
        client_secret.expose(),
        scope.as_deref().unwrap_or(""),
    ] {
        h.update(part.len().to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl Tokens {
    fn entry(&self, id: &str) -> Arc<tokio::sync::Mutex<Option<Cached>>> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(id) {
            let now = Instant::now();
            entries.retain(|_, e| match e.try_lock() {
                Ok(cached) => cached.as_ref().is_some_and(|c| c.refresh_at > now),
                Err(_) => true,
            });
        }
        entries.entry(id.to_string()).or_default().clone()
    }

    /// A token for the subscription: the cached one while it is fresh and
    /// is not `rejected` (a token the endpoint answered 401 to), else a new
    /// one from the token endpoint.
    pub(super) async fn token(
        &self,
        sender: &Sender,
        id: &str,
        auth: &EndpointAuth,
        rejected: Option<&str>,
    ) -> Result<String, TokenError> {
        let entry = self.entry(id);
        let mut cached = entry.lock().await;
        let print = fingerprint(auth);
        if let Some(c) = cached.as_ref() {
            if c.fingerprint == print
                && Instant::now() < c.refresh_at
                && rejected != Some(c.token.expose())
            {
                return Ok(c.token.expose().to_string());
            }
        }
        *cached = None;
        let (token, lifetime) = fetch(sender, auth).await?;
        let margin = REFRESH_MARGIN.min(lifetime / 5);
        *cached = Some(Cached {
            token: Secret::from_string(token.clone()),
            fingerprint: print,
            refresh_at: Instant::now() + lifetime.saturating_sub(margin),
        });
        tracing::debug!(
            subscription_id = id,
            lifetime_s = lifetime.as_secs(),
            "OAuth2 token fetched."
        );
        Ok(token)
    }
}

/// `application/x-www-form-urlencoded` of one value.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

/// One client credentials grant: HTTP Basic client authentication, the
/// grant and scope in a form body.
async fn fetch(sender: &Sender, auth: &EndpointAuth) -> Result<(String, Duration), TokenError> {
    let EndpointAuth::Oauth2ClientCredentials {
        token_url,
        client_id,
        client_secret,
        scope,
    } = auth;
    let url = sender.guard(token_url).map_err(TokenError::Refused)?;
    let mut body = "grant_type=client_credentials".to_string();
    if let Some(scope) = scope {
        body.push_str("&scope=");
        body.push_str(&form_encode(scope));
    }
    let mut response = sender
        .client()
        .post(url)
        .basic_auth(client_id, Some(client_secret.expose()))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(reqwest::header::ACCEPT, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| TokenError::Request(super::sender::classify(&e)))?;
    let status = response.status().as_u16();
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| TokenError::Request(super::sender::classify(&e)))?
    {
        bytes.extend_from_slice(&chunk[..chunk.len().min(MAX_TOKEN_RESPONSE - bytes.len())]);
        if bytes.len() >= MAX_TOKEN_RESPONSE {
            break;
        }
    }
    if !(200..300).contains(&status) {
        // The error body of a token endpoint names the problem
        // (`invalid_client`, …); it carries no token.
        let text: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
        return Err(TokenError::Status { status, body: text });
    }
    let parsed: TokenResponse = serde_json::from_slice(&bytes)
        .map_err(|e| TokenError::Response(format!("not a token response: {e}")))?;
    if parsed
        .token_type
        .as_deref()
        .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
    {
        return Err(TokenError::Response("token_type is not Bearer".into()));
    }
    if parsed.access_token.is_empty()
        || reqwest::header::HeaderValue::from_str(&parsed.access_token).is_err()
    {
        return Err(TokenError::Response(
            "access_token is empty or not a valid header value".into(),
        ));
    }
    // Numbers, or numbers as strings (seen in the wild).
    let lifetime = match parsed.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .map(Duration::from_secs)
    .unwrap_or(DEFAULT_LIFETIME);
    Ok((parsed.access_token, lifetime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_encoded() {
        assert_eq!(form_encode("read write:all"), "read+write%3Aall");
        assert_eq!(form_encode("a&b=c"), "a%26b%3Dc");
    }

    #[test]
    fn changed_settings_change_the_fingerprint() {
        let auth = |secret: &str| EndpointAuth::Oauth2ClientCredentials {
            token_url: "https://a/t".into(),
            client_id: "id".into(),
            client_secret: Secret::from_string(secret.into()),
            scope: None,
        };
        assert_eq!(fingerprint(&auth("s1")), fingerprint(&auth("s1")));
        assert_ne!(fingerprint(&auth("s1")), fingerprint(&auth("s2")));
    }
}
