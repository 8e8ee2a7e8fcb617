//! Identifiers.
//!
//! Subscription and event ids are time-ordered (UUIDv7) so that logs and
//! topics read in creation order. Delivery ids are derived, not random: the
//! same event matched to the same subscription always yields the same
//! `webhook-id`, across retries, replays and a matcher that re-reads its
//! input after a crash, so receivers can deduplicate.

use sha2::{Digest, Sha256};

fn prefixed_v7(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// A new subscription id, `sub_<32 hex>`.
pub fn new_subscription_id() -> String {
    prefixed_v7("sub")
}

/// A new write id, `w_<32 hex>`: names one write of a subscription state,
/// so its writer can tell whether that write won.
pub fn new_write_id() -> String {
    format!("w_{}", uuid::Uuid::new_v4().simple())
}

/// A new debug identifier, `dbg_<32 hex>`: names one refused request in
/// the answer and in the log line that records it.
pub fn new_debug_id() -> String {
    format!("dbg_{}", uuid::Uuid::new_v4().simple())
}

/// A new tenant id, `ten_<32 hex>`.
pub fn new_tenant_id() -> String {
    prefixed_v7("ten")
}

/// A new API key id, `key_<32 hex>` (shown in `created_by`, never secret).
pub fn new_api_key_id() -> String {
    prefixed_v7("key")
}

/// A new API key, `wb_` and 48 hex characters (192 random bits).
pub fn new_api_key() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("wb_{hex}")
}

/// Whether a client-chosen id (tenant ids given by the operator) is usable:
/// 1 to 64 of `a-z`, `A-Z`, `0-9`, `_`, `-`.
pub fn is_valid_client_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A new event id, `evt_<32 hex>`, for events posted without a client id.
pub fn new_event_id() -> String {
    prefixed_v7("evt")
}

/// A new operational event id, `op_<uuid v7>`.
pub fn new_operational_event_id() -> String {
    prefixed_v7("op")
}

/// A new replay id, `rpl_<uuid v7>`.
pub fn new_replay_id() -> String {
    prefixed_v7("rpl")
}

/// The id of a tenant's callbacks subscription: the one that signs (with
/// its secret) and retries (with its policy) the deliveries to per-event
/// `callback_url`s. Stable, so every service finds it without a lookup.
pub fn callbacks_subscription_id(tenant_id: &str) -> String {
    let digest = Sha256::digest(tenant_id.as_bytes());
    let hex: String = digest[..14].iter().map(|b| format!("{b:02x}")).collect();
    format!("{CALLBACKS_PREFIX}{hex}")
}

/// How every callbacks subscription id starts.
pub const CALLBACKS_PREFIX: &str = "sub_callbacks_";

/// The delivery id of one event to one subscription, `msg_<32 hex>`.
pub fn delivery_id(tenant_id: &str, event_id: &str, subscription_id: &str) -> String {
    let mut hasher = Sha256::new();
    // Length-prefix each part so that ("ab", "c") and ("a", "bc") differ.
    for part in [tenant_id, event_id, subscription_id] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let mut out = String::from("msg_");
    for byte in &digest[..16] {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_ids_are_stable_and_distinct() {
        let a = delivery_id("t", "e1", "s1");
        assert_eq!(a, delivery_id("t", "e1", "s1"));
        assert_eq!(a.len(), 4 + 32);
        assert_ne!(a, delivery_id("t", "e1", "s2"));
        assert_ne!(delivery_id("ab", "c", "s"), delivery_id("a", "bc", "s"));
    }

    #[test]
    fn new_ids_are_prefixed_and_unique() {
        let a = new_subscription_id();
        assert!(a.starts_with("sub_"));
        assert_ne!(a, new_subscription_id());
        assert!(new_event_id().starts_with("evt_"));
        let key = new_api_key();
        assert_eq!(key.len(), 51);
        assert_ne!(key, new_api_key());
        assert!(is_valid_client_id("acme-1_X"));
        assert!(!is_valid_client_id("a b"));
        assert!(!is_valid_client_id(""));
    }
}
