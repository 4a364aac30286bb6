//! Subscription secrets at rest: AES-256-GCM with key ids, so the key can be
//! rotated while records written under an older key still decrypt.

/// Encrypts subscription secrets at rest (AES-256-GCM). A stored secret reads
/// `enc:v1:<key id>:<base64 nonce+ciphertext>`; the key id (first 8 hex
/// digits of the key's SHA-256) says which key decrypts it, so keys can be
/// rotated: the new key encrypts, old keys in `security.previous_secrets_keys`
/// still decrypt.
#[derive(Clone)]
pub struct SecretCipher {
    current: (String, aes_gcm::Aes256Gcm),
    previous: Vec<(String, aes_gcm::Aes256Gcm)>,
}

impl std::fmt::Debug for SecretCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretCipher(key id {})", self.current.0)
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CipherError {
    #[error("secrets key is not base64 of 32 bytes")]
    BadKey,
    #[error("secret was encrypted with key {0}, which is not configured")]
    UnknownKey(String),
    #[error("secret ciphertext is malformed or was tampered with")]
    Corrupt,
}

const ENC_PREFIX: &str = "enc:v1:";

fn cipher_for(key_b64: &str) -> Result<(String, aes_gcm::Aes256Gcm), CipherError> {
    use aes_gcm::KeyInit;
    use base64::Engine;
    use sha2::Digest;
    let key = base64::engine::general_purpose::STANDARD
        .decode(key_b64.trim())
        .map_err(|_| CipherError::BadKey)?;
    if key.len() != 32 {
        return Err(CipherError::BadKey);
    }
    let id: String = sha2::Sha256::digest(&key)
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(&key).map_err(|_| CipherError::BadKey)?;
    Ok((id, cipher))
}

impl SecretCipher {
    pub fn new(current: &str, previous: &[String]) -> Result<Self, CipherError> {
        Ok(SecretCipher {
            current: cipher_for(current)?,
            previous: previous
                .iter()
                .map(|k| cipher_for(k))
                .collect::<Result<_, _>>()?,
        })
    }

    /// A fresh random key, base64, for dev mode.
    pub(crate) fn generate_key() -> String {
        use base64::Engine;
        use rand::RngCore;
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        base64::engine::general_purpose::STANDARD.encode(key)
    }

    pub(crate) fn encrypt(&self, plaintext: &str) -> String {
        use aes_gcm::aead::Aead;
        use base64::Engine;
        use rand::RngCore;
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let (id, cipher) = &self.current;
        // Encryption with a valid key and a 12-byte nonce does not fail.
        let sealed = cipher
            .encrypt(aes_gcm::Nonce::from_slice(&nonce), plaintext.as_bytes())
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!(
            "{ENC_PREFIX}{id}:{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        )
    }

    /// Decrypts a stored secret; a plaintext one (written before a key was
    /// configured) passes through.
    pub(crate) fn decrypt(&self, stored: &str) -> Result<String, CipherError> {
        use aes_gcm::aead::Aead;
        use base64::Engine;
        let Some(rest) = stored.strip_prefix(ENC_PREFIX) else {
            return Ok(stored.to_string());
        };
        let (id, data) = rest.split_once(':').ok_or(CipherError::Corrupt)?;
        let cipher = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|(kid, _)| kid == id)
            .map(|(_, c)| c)
            .ok_or_else(|| CipherError::UnknownKey(id.to_string()))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|_| CipherError::Corrupt)?;
        if bytes.len() < 12 {
            return Err(CipherError::Corrupt);
        }
        let (nonce, sealed) = bytes.split_at(12);
        let plain = cipher
            .decrypt(aes_gcm::Nonce::from_slice(nonce), sealed)
            .map_err(|_| CipherError::Corrupt)?;
        String::from_utf8(plain).map_err(|_| CipherError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_round_trip_and_old_keys_still_decrypt_after_rotation() {
        let old_key = SecretCipher::generate_key();
        let old = SecretCipher::new(&old_key, &[]).unwrap();
        let stored = old.encrypt("whsec_abc");
        assert!(stored.starts_with("enc:v1:"));
        assert!(!stored.contains("whsec_abc"));
        assert_ne!(old.encrypt("whsec_abc"), stored, "fresh nonce every time");
        assert_eq!(old.decrypt(&stored).unwrap(), "whsec_abc");
        let rotated = SecretCipher::new(&SecretCipher::generate_key(), &[old_key]).unwrap();
        assert_eq!(rotated.decrypt(&stored).unwrap(), "whsec_abc");
        let stranger = SecretCipher::new(&SecretCipher::generate_key(), &[]).unwrap();
        assert!(matches!(
            stranger.decrypt(&stored),
            Err(CipherError::UnknownKey(_))
        ));
        let mut tampered = stored.clone();
        tampered.pop();
        tampered.push(if stored.ends_with('A') { 'B' } else { 'A' });
        assert!(old.decrypt(&tampered).is_err());
        assert_eq!(old.decrypt("whsec_plain").unwrap(), "whsec_plain");
        assert_eq!(
            SecretCipher::new("c2hvcnQ=", &[]).unwrap_err(),
            CipherError::BadKey
        );
    }
}
