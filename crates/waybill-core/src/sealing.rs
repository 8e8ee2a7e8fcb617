//! Encryption of secrets that travel on Kafka topics.
//!
//! Subscription records carry signing secrets (and, later, callback
//! credentials). A record on a topic must never show them in clear, so they
//! are sealed with ChaCha20-Poly1305 under an operator key. The key id is
//! stored with the ciphertext so keys can be rotated: new records use the
//! current key, old records stay readable while their key is configured.
//! The associated data binds a ciphertext to its record (e.g. the
//! subscription id), so a secret cannot be moved from one record to another.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;

/// A sealed secret as stored on a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Id of the key that sealed it.
    pub key_id: String,
    /// 12-byte nonce.
    pub nonce: Vec<u8>,
    /// Ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

/// Sealing and opening failures. They never include the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The record was sealed with a key this deployment does not have.
    #[error("sealed with unknown key id `{0}`; configure that key to read it")]
    UnknownKey(String),
    /// Wrong key, wrong record, or tampered ciphertext.
    #[error("cannot open sealed secret (wrong key or tampered record)")]
    Corrupt,
    /// A configured key is not base64 of 32 bytes.
    #[error("encryption key `{0}` must be base64 of exactly 32 bytes")]
    BadKey(String),
}

/// The operator's keys: one current key that seals, all of them open.
#[derive(Clone)]
pub struct Keyring {
    current: String,
    keys: BTreeMap<String, ChaCha20Poly1305>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// A keyring from `key id → base64 key`, sealing with `current`.
    pub fn new(current: &str, keys: &BTreeMap<String, impl AsRef<str>>) -> Result<Self, SealError> {
        let mut ciphers = BTreeMap::new();
        for (id, encoded) in keys {
            let bytes = STANDARD
                .decode(encoded.as_ref().trim())
                .map_err(|_| SealError::BadKey(id.clone()))?;
            if bytes.len() != 32 {
                return Err(SealError::BadKey(id.clone()));
            }
            let cipher = ChaCha20Poly1305::new(Key::from_slice(&bytes));
            ciphers.insert(id.clone(), cipher);
        }
        if !ciphers.contains_key(current) {
            return Err(SealError::UnknownKey(current.to_owned()));
        }
        Ok(Self {
            current: current.to_owned(),
            keys: ciphers,
        })
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> &str {
        &self.current
    }

    /// A new random base64 key, for `waybill dev` and key generation.
    pub fn generate_key() -> String {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        STANDARD.encode(key)
    }

    /// Seals `secret`, bound to `associated` (e.g. the record id).
    pub fn seal(&self, secret: &[u8], associated: &[u8]) -> Sealed {
        let cipher = &self.keys[&self.current];
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: associated,
                },
            )
            .expect("ChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        Sealed {
            key_id: self.current.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    /// Opens a sealed secret bound to `associated`.
    pub fn open(&self, sealed: &Sealed, associated: &[u8]) -> Result<Vec<u8>, SealError> {
        let cipher = self
            .keys
            .get(&sealed.key_id)
            .ok_or_else(|| SealError::UnknownKey(sealed.key_id.clone()))?;
        if sealed.nonce.len() != 12 {
            return Err(SealError::Corrupt);
        }
        cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: associated,
                },
            )
            .map_err(|_| SealError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(current: &str, ids: &[(&str, &str)]) -> Keyring {
        let keys = ids
            .iter()
            .map(|(id, k)| ((*id).to_owned(), (*k).to_owned()))
            .collect();
        Keyring::new(current, &keys).unwrap()
    }

    #[test]
    fn seal_open_round_trip_without_clear_text() {
        let k = Keyring::generate_key();
        let r = ring("k1", &[("k1", &k)]);
        let sealed = r.seal(b"whsec_topsecret", b"sub_1");
        assert!(!sealed.ciphertext.windows(6).any(|w| w == b"whsec_"));
        assert_eq!(r.open(&sealed, b"sub_1").unwrap(), b"whsec_topsecret");
        assert_eq!(r.open(&sealed, b"sub_2"), Err(SealError::Corrupt));
    }

    #[test]
    fn rotation_keeps_old_records_readable() {
        let (k1, k2) = (Keyring::generate_key(), Keyring::generate_key());
        let old = ring("k1", &[("k1", &k1)]).seal(b"s", b"a");
        let rotated = ring("k2", &[("k1", &k1), ("k2", &k2)]);
        assert_eq!(rotated.open(&old, b"a").unwrap(), b"s");
        assert_eq!(rotated.seal(b"s", b"a").key_id, "k2");
        let only_new = ring("k2", &[("k2", &k2)]);
        assert_eq!(
            only_new.open(&old, b"a"),
            Err(SealError::UnknownKey("k1".into()))
        );
    }

    #[test]
    fn bad_keys_are_refused() {
        let keys = [("k".to_owned(), "c2hvcnQ=".to_owned())]
            .into_iter()
            .collect();
        assert_eq!(
            Keyring::new("k", &keys).unwrap_err(),
            SealError::BadKey("k".into())
        );
        let keys = [("k".to_owned(), Keyring::generate_key())]
            .into_iter()
            .collect();
        assert_eq!(
            Keyring::new("other", &keys).unwrap_err(),
            SealError::UnknownKey("other".into())
        );
    }
}
