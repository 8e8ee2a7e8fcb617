//! Portal sessions: short-lived tokens that let one tenant's users manage
//! its webhooks in the portal page.
//!
//! A token is the session (tenant, read-only or not, expiry) sealed with
//! the deployment's keyring (ChaCha20-Poly1305, bound to "portal
//! session"): any ingest replica opens it, nothing is stored, nobody can
//! forge or alter one, and it is revoked by its expiry alone, so lifetimes
//! are short (1 h by default) and bounded ([`MAX_LIFETIME`]). Which calls a
//! token may make is [`scope`].

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use time::OffsetDateTime;

use crate::sealing::{Keyring, Sealed};

/// Every session token starts with this.
pub const TOKEN_PREFIX: &str = "wbps_";

/// A session's lifetime unless asked otherwise.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// The longest a session may last.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// What the sealed bytes are bound to.
const ASSOCIATED: &[u8] = b"waybill portal session v1";

/// One portal session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Session {
    /// `ps_...`, named in logs and as the author of its changes.
    pub id: String,
    /// The tenant whose objects it sees.
    pub tenant_id: String,
    /// Changes nothing.
    pub read_only: bool,
    /// Unix seconds after which it is refused.
    pub expires_at: i64,
}

impl Session {
    /// A new session of `tenant_id` lasting `lifetime` from `now`.
    pub fn new(tenant_id: &str, read_only: bool, lifetime: Duration, now: OffsetDateTime) -> Self {
        Self {
            id: format!("ps_{}", crate::ids::new_write_id()),
            tenant_id: tenant_id.to_owned(),
            read_only,
            expires_at: now.unix_timestamp() + lifetime.as_secs() as i64,
        }
    }

    /// When it expires.
    pub fn expires(&self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(self.expires_at).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    /// Its token.
    pub fn token(&self, keys: &Keyring) -> String {
        let payload = serde_json::to_vec(self).expect("a session serializes");
        let sealed = keys.seal(&payload, ASSOCIATED);
        let mut bytes = Vec::with_capacity(1 + sealed.key_id.len() + 12 + sealed.ciphertext.len());
        bytes.push(u8::try_from(sealed.key_id.len()).unwrap_or(u8::MAX));
        bytes.extend_from_slice(sealed.key_id.as_bytes());
        bytes.extend_from_slice(&sealed.nonce);
        bytes.extend_from_slice(&sealed.ciphertext);
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }
}

/// Why a token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not a token of this deployment (or altered, or sealed with a key it
    /// no longer has).
    Invalid,
    /// Past its expiry.
    Expired,
}

/// The session of `token`, if it is valid at `now`.
pub fn open(keys: &Keyring, token: &str, now: OffsetDateTime) -> Result<Session, Refused> {
    let encoded = token.strip_prefix(TOKEN_PREFIX).ok_or(Refused::Invalid)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| Refused::Invalid)?;
    let (&id_len, rest) = bytes.split_first().ok_or(Refused::Invalid)?;
    let id_len = usize::from(id_len);
    if rest.len() < id_len + 12 {
        return Err(Refused::Invalid);
    }
    let (key_id, rest) = rest.split_at(id_len);
    let (nonce, ciphertext) = rest.split_at(12);
    let sealed = Sealed {
        key_id: String::from_utf8(key_id.to_vec()).map_err(|_| Refused::Invalid)?,
        nonce: nonce.to_vec(),
        ciphertext: ciphertext.to_vec(),
    };
    let payload = keys
        .open(&sealed, ASSOCIATED)
        .map_err(|_| Refused::Invalid)?;
    let session: Session = serde_json::from_slice(&payload).map_err(|_| Refused::Invalid)?;
    if now.unix_timestamp() >= session.expires_at {
        return Err(Refused::Expired);
    }
    Ok(session)
}

/// What a session may do with one API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Allowed.
    Allowed,
    /// A change, and the session is read-only (`403 forbidden`).
    ReadOnly,
    /// Not a call of the portal (`403 forbidden`): publishing events,
    /// opening sessions, the operator's routes.
    NotPortal,
}

/// The calls the portal page makes: a tenant's subscriptions, the event
/// catalog, its deliveries and replays (route templates as the router
/// names them).
const PORTAL_ROUTES: [&str; 15] = [
    "/v1/subscriptions",
    "/v1/subscriptions/{id}",
    "/v1/subscriptions/{id}/test",
    "/v1/subscriptions/{id}/secret",
    "/v1/subscriptions/{id}/secret/rotate",
    "/v1/subscriptions/{id}/reset",
    "/v1/subscriptions/{id}/pause",
    "/v1/subscriptions/{id}/resume",
    "/v1/subscriptions/{id}/deliveries",
    "/v1/subscriptions/{id}/replay",
    "/v1/event_types",
    "/v1/deliveries",
    "/v1/deliveries/{id}",
    "/v1/deliveries/{id}/retry",
    "/v1/replays/{id}",
];

/// Whether a session (read-only or not) may call `method route`.
pub fn scope(read_only: bool, method: &str, route: &str) -> Scope {
    let reads = method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD");
    let portal = PORTAL_ROUTES.contains(&route)
        // The catalog is read, never written, through the portal.
        && (route != "/v1/event_types" || reads);
    match () {
        _ if !portal => Scope::NotPortal,
        // Revealing the secret is a read that gives a credential away: a
        // read-only session does not.
        _ if read_only && route == "/v1/subscriptions/{id}/secret" => Scope::ReadOnly,
        _ if read_only && !reads => Scope::ReadOnly,
        _ => Scope::Allowed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn keys(current: &str) -> Keyring {
        let mut all = BTreeMap::new();
        all.insert(
            "k1".to_owned(),
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned(),
        );
        all.insert("k2".to_owned(), Keyring::generate_key());
        Keyring::new(current, &all).unwrap()
    }

    #[test]
    fn a_token_opens_until_it_expires_and_not_after() {
        let now = OffsetDateTime::now_utc();
        let keys = keys("k1");
        let s = Session::new("ten_a", true, DEFAULT_LIFETIME, now);
        let token = s.token(&keys);
        assert!(token.starts_with(TOKEN_PREFIX));
        assert_eq!(open(&keys, &token, now), Ok(s.clone()));
        let later = now + time::Duration::seconds(3600);
        assert_eq!(open(&keys, &token, later), Err(Refused::Expired));
    }

    #[test]
    fn an_altered_or_foreign_token_is_invalid() {
        let now = OffsetDateTime::now_utc();
        let keys = keys("k1");
        let token = Session::new("ten_a", false, DEFAULT_LIFETIME, now).token(&keys);
        let mut altered = token.clone().into_bytes();
        let last = altered.len() - 3;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert_eq!(open(&keys, &altered, now), Err(Refused::Invalid));
        assert_eq!(open(&keys, "wbps_", now), Err(Refused::Invalid));
        assert_eq!(open(&keys, "wb_x", now), Err(Refused::Invalid));
        // Another deployment's keys (same id, another key).
        let mut other = BTreeMap::new();
        other.insert("k1".to_owned(), Keyring::generate_key());
        let other = Keyring::new("k1", &other).unwrap();
        assert_eq!(open(&other, &token, now), Err(Refused::Invalid));
        // A rotated keyring still opens it while it has the old key.
        assert!(open(&keys_rotated(), &token, now).is_ok());
    }

    fn keys_rotated() -> Keyring {
        let mut all = BTreeMap::new();
        all.insert(
            "k1".to_owned(),
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned(),
        );
        all.insert("k2".to_owned(), Keyring::generate_key());
        Keyring::new("k2", &all).unwrap()
    }

    #[test]
    fn a_session_makes_only_the_portals_calls() {
        assert_eq!(scope(false, "POST", "/v1/subscriptions"), Scope::Allowed);
        assert_eq!(
            scope(false, "DELETE", "/v1/subscriptions/{id}"),
            Scope::Allowed
        );
        assert_eq!(scope(false, "GET", "/v1/event_types"), Scope::Allowed);
        assert_eq!(scope(false, "POST", "/v1/event_types"), Scope::NotPortal);
        assert_eq!(scope(false, "POST", "/v1/events"), Scope::NotPortal);
        assert_eq!(
            scope(false, "POST", "/v1/portal/sessions"),
            Scope::NotPortal
        );
        assert_eq!(scope(false, "GET", "/v1/tenants"), Scope::NotPortal);
        assert_eq!(scope(true, "GET", "/v1/deliveries"), Scope::Allowed);
        assert_eq!(
            scope(true, "POST", "/v1/deliveries/{id}/retry"),
            Scope::ReadOnly
        );
        assert_eq!(
            scope(true, "PATCH", "/v1/subscriptions/{id}"),
            Scope::ReadOnly
        );
        assert_eq!(
            scope(true, "GET", "/v1/subscriptions/{id}/secret"),
            Scope::ReadOnly
        );
    }
}
