//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256(key, "<id>.<ts>.<body>")>`.

use std::fmt;

use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// A signing secret, `whsec_` + base64 of 32 random bytes. Never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Secret(format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ))
    }

    pub fn from_string(s: String) -> Self {
        Secret(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The HMAC key: the decoded bytes after `whsec_`.
    pub fn key_bytes(&self) -> Option<Vec<u8>> {
        let encoded = self.0.strip_prefix("whsec_").unwrap_or(&self.0);
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
    }
}

/// The `user-agent` of every webhook request.
pub(crate) const USER_AGENT: &str = concat!("rewardhooks/", env!("CARGO_PKG_VERSION"));

/// An HMAC key set up once: its inner and outer pads are hashed when it is
/// made, and each signature starts from a copy instead of hashing them
/// again (two SHA-256 blocks per attempt saved). Never printed.
#[derive(Clone)]
pub struct SigningKey(HmacSha256);

impl SigningKey {
    pub fn new(key: &[u8]) -> Self {
        // HMAC accepts keys of any length.
        SigningKey(HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length"))
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// One `v1,` signature per key, space-separated (current secret first).
pub fn signature_header(keys: &[&[u8]], id: &str, timestamp: i64, body: &[u8]) -> String {
    let keys: Vec<SigningKey> = keys.iter().map(|k| SigningKey::new(k)).collect();
    let keys: Vec<&SigningKey> = keys.iter().collect();
    sign(&keys, id, timestamp, body)
}

/// The same with keys set up beforehand (a live subscription's).
pub fn sign(keys: &[&SigningKey], id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let mut out = String::with_capacity(keys.len() * 48);
    for key in keys {
        let mut mac = key.0.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(ts.as_bytes());
        mac.update(b".");
        mac.update(body);
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str("v1,");
        base64::engine::general_purpose::STANDARD
            .encode_string(mac.finalize().into_bytes(), &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of the Standard Webhooks specification.
    #[test]
    fn matches_the_standard_webhooks_test_vector() {
        let secret = Secret::from_string("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into());
        let sig = signature_header(
            &[secret.key_bytes().unwrap().as_slice()],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn verifies_with_the_independent_standardwebhooks_crate() {
        let secret = Secret::generate();
        let body = br#"{"id":"evt_1","type":"tier.changed"}"#;
        let ts = chrono::Utc::now().timestamp();
        let old = Secret::generate();
        let sig = signature_header(
            &[
                secret.key_bytes().unwrap().as_slice(),
                old.key_bytes().unwrap().as_slice(),
            ],
            "evt_1",
            ts,
            body,
        );
        assert_eq!(sig.split(' ').count(), 2);
        let mut headers = http::HeaderMap::new();
        headers.insert("webhook-id", "evt_1".parse().unwrap());
        headers.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        headers.insert("webhook-signature", sig.parse().unwrap());
        for s in [&secret, &old] {
            standardwebhooks::Webhook::new(s.expose())
                .unwrap()
                .verify(body, &headers)
                .unwrap();
        }
        let wrong = Secret::generate();
        assert!(standardwebhooks::Webhook::new(wrong.expose())
            .unwrap()
            .verify(body, &headers)
            .is_err());
    }
}
