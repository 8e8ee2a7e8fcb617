//! The matcher's projection of `subscriptions`: the [`MatchIndex`], folded
//! record by record (a change re-indexes one subscription, a tombstone
//! removes it), keeping only what matching needs.

use waybill_core::index::MatchIndex;
use waybill_core::subscription::{Health, Status, Subscription};
use waybill_runtime::projection::Sink;

/// Every subscription, indexed for matching (the sink of a
/// [`Log`](waybill_runtime::projection::Log), which decides which records
/// count).
#[derive(Default)]
pub struct Indexed {
    index: MatchIndex,
}

impl Indexed {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
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

impl Sink for Indexed {
    fn upsert(&mut self, id: std::sync::Arc<str>, subscription: Subscription, _record: &[u8]) {
        self.index.upsert_as(id, &subscription);
    }

    fn set_health(&mut self, id: &str, health: Option<&Health>) {
        self.index
            .set_suspended(id, health.is_some_and(|h| h.status == Status::Disabled));
    }

    fn remove(&mut self, id: &str) {
        self.index.remove(id);
    }
}

/// The matcher's projection: the index, behind the ledger.
pub type Projection = waybill_runtime::projection::Log<Indexed>;

/// An empty projection; `keys` open the records (which are validated as
/// every service does).
pub fn new(keys: waybill_core::sealing::Keyring) -> Projection {
    Projection::new(keys, Indexed::new())
}
