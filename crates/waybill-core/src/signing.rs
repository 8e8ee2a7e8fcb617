//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>).
//!
//! `webhook-signature: v1,<base64(HMAC-SHA256(secret, "<id>.<timestamp>.<body>"))>`,
//! with secrets written `whsec_<base64 bytes>`. Several space-separated
//! signatures may be sent (secret rotation); a receiver accepts any.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// A signing secret. Its `Debug` output never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Vec<u8>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(***)")
    }
}

/// Why a secret string is not a Standard Webhooks secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a signing secret is `whsec_` followed by base64 of 24 to 64 bytes")]
pub struct BadSecret;

impl SigningSecret {
    /// A new random 32-byte secret.
    pub fn generate() -> Self {
        let mut key = vec![0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self(key)
    }

    /// Parses `whsec_<base64>`.
    pub fn parse(s: &str) -> Result<Self, BadSecret> {
        let encoded = s.strip_prefix(PREFIX).ok_or(BadSecret)?;
        let key = STANDARD.decode(encoded).map_err(|_| BadSecret)?;
        Self::from_bytes(key)
    }

    /// A secret from raw key bytes (24 to 64 bytes).
    pub fn from_bytes(key: Vec<u8>) -> Result<Self, BadSecret> {
        if (24..=64).contains(&key.len()) {
            Ok(Self(key))
        } else {
            Err(BadSecret)
        }
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The `whsec_...` form shown to the subscriber (once, or on request).
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// The `v1,<base64>` signature of one message.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    /// Whether any signature in a `webhook-signature` header value was made by
    /// this secret (constant-time comparison).
    pub fn verify(&self, header: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> bool {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(format!("{msg_id}.{timestamp}.").as_bytes());
        mac.update(body);
        header.split_whitespace().any(|candidate| {
            let Some(encoded) = candidate.strip_prefix("v1,") else {
                return false;
            };
            let Ok(sig) = STANDARD.decode(encoded) else {
                return false;
            };
            mac.clone().verify_slice(&sig).is_ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(secret.verify(&sig, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body));
    }

    #[test]
    fn verify_accepts_any_of_several_and_rejects_tampering() {
        let old = SigningSecret::generate();
        let new = SigningSecret::generate();
        let header = format!("{} {}", new.sign("id", 1, b"x"), old.sign("id", 1, b"x"));
        assert!(old.verify(&header, "id", 1, b"x"));
        assert!(new.verify(&header, "id", 1, b"x"));
        assert!(!new.verify(&header, "id", 2, b"x"));
        assert!(!new.verify(&header, "id", 1, b"y"));
        assert!(!SigningSecret::generate().verify(&header, "id", 1, b"x"));
    }

    #[test]
    fn round_trips_and_hides_itself() {
        let s = SigningSecret::generate();
        assert_eq!(SigningSecret::parse(&s.expose()).unwrap(), s);
        assert_eq!(format!("{s:?}"), "SigningSecret(***)");
        assert_eq!(SigningSecret::parse("whsec_AAAA"), Err(BadSecret));
        assert_eq!(SigningSecret::parse("nope"), Err(BadSecret));
    }
}
