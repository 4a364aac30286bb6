//! Bearer tokens: each owner token sees its own subscriptions, the admin
//! token sees all. Tokens are kept and compared as SHA-256 digests, in
//! constant time.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;
use crate::config::ApiSettings;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Owner(String),
}

impl Caller {
    /// The owner whose subscriptions the caller may see; `None` = all.
    pub(crate) fn owner_scope(&self) -> Option<&str> {
        match self {
            Caller::Admin => None,
            Caller::Owner(o) => Some(o),
        }
    }

    pub(crate) fn may_see(&self, owner: &str) -> bool {
        self.owner_scope().is_none_or(|o| o == owner)
    }
}

pub struct Auth {
    entries: Vec<([u8; 32], Caller)>,
}

fn digest(configured: &str) -> Option<[u8; 32]> {
    if let Some(hex) = configured.strip_prefix("sha256:") {
        let mut out = [0u8; 32];
        for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
            let s = std::str::from_utf8(chunk).ok()?;
            *out.get_mut(i)? = u8::from_str_radix(s, 16).ok()?;
        }
        Some(out)
    } else {
        Some(Sha256::digest(configured.as_bytes()).into())
    }
}

impl Auth {
    pub fn new(settings: &ApiSettings) -> Self {
        let mut entries = Vec::new();
        if !settings.admin_token.is_empty() {
            if let Some(d) = digest(&settings.admin_token) {
                entries.push((d, Caller::Admin));
            }
        }
        for (owner, token) in &settings.tokens {
            if let Some(d) = digest(token) {
                entries.push((d, Caller::Owner(owner.clone())));
            }
        }
        Auth { entries }
    }

    pub(crate) fn authenticate(&self, token: &str) -> Option<Caller> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare against every entry so timing does not reveal which matched.
        let mut found = None;
        for (d, caller) in &self.entries {
            if bool::from(d.ct_eq(&presented)) && found.is_none() {
                found = Some(caller.clone());
            }
        }
        found
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            // The scheme is case-insensitive (RFC 9110).
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or_else(ApiError::unauthorized)?;
        state
            .auth
            .authenticate(token)
            .ok_or_else(ApiError::unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn plain_and_hashed_tokens_authenticate_their_owner() {
        let hashed = format!(
            "sha256:{}",
            Sha256::digest(b"bob-token")
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let settings = ApiSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_token: "admin-token".into(),
            write_timeout: std::time::Duration::from_secs(1),
            max_subscriptions_per_owner: 10,
            attempts_per_subscription: 10,
            portal_frame_ancestors: Vec::new(),
            tokens: BTreeMap::from([
                ("alice".to_string(), "alice-token".to_string()),
                ("bob".to_string(), hashed),
            ]),
        };
        let auth = Auth::new(&settings);
        assert_eq!(auth.authenticate("admin-token"), Some(Caller::Admin));
        assert_eq!(
            auth.authenticate("alice-token"),
            Some(Caller::Owner("alice".into()))
        );
        assert_eq!(
            auth.authenticate("bob-token"),
            Some(Caller::Owner("bob".into()))
        );
        assert_eq!(auth.authenticate("nope"), None);
        assert_eq!(auth.authenticate(""), None);
    }
}
