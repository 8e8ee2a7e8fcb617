//! The matcher's projection of `subscriptions`: the [`MatchIndex`], folded
//! record by record (a change re-indexes one subscription, a tombstone
//! removes it), keeping only what matching needs.

use waybill_core::index::MatchIndex;
use waybill_core::sealing::Keyring;
use waybill_kafka::table::Fold;
use waybill_runtime::projection::{Record, decode_record};

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
        match decode_record(key, value, &self.keys)? {
            Record::Delete(id) => self.index.remove(id),
            Record::Upsert(subscription) => self.index.upsert(&subscription),
        }
        Ok(())
    }
}
