//! The matcher's projection of `subscriptions`: the [`MatchIndex`], folded
//! record by record (a change re-indexes one subscription, a tombstone
//! removes it), keeping only what matching needs.

use waybill_core::index::MatchIndex;
use waybill_core::sealing::Keyring;
use waybill_kafka::table::Fold;
use waybill_proto::Message as _;
use waybill_proto::convert::subscription_from_proto;
use waybill_proto::v1;

/// Every subscription, indexed for matching.
pub struct Indexed {
    keys: Keyring,
    index: MatchIndex,
}

impl Indexed {
    /// An empty projection; `keys` open the records (which are validated
    /// as every service does).
    pub fn new(keys: Keyring) -> Self {
        Self {
            keys,
            index: MatchIndex::new(),
        }
    }

    /// The index.
    pub fn index(&self) -> &MatchIndex {
        &self.index
    }
}

impl waybill_runtime::projection::Counted for Indexed {
    fn count(&self) -> usize {
        self.index.len()
    }
}

impl Fold for Indexed {
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        let id = std::str::from_utf8(key).map_err(|_| "key is not UTF-8".to_owned())?;
        let Some(value) = value else {
            self.index.remove(id);
            return Ok(());
        };
        let record = v1::Subscription::decode(value).map_err(|e| e.to_string())?;
        let subscription =
            subscription_from_proto(record, &self.keys).map_err(|e| e.to_string())?;
        if subscription.id != id {
            return Err(format!(
                "record id `{}` differs from its key",
                subscription.id
            ));
        }
        self.index.upsert(&subscription);
        Ok(())
    }
}
