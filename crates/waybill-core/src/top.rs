//! The heaviest keys of a stream in bounded memory, to label a metric by
//! the top N tenants without a series per tenant id.
//!
//! A space-saving sketch: `4 × N` counters. A key not counted yet takes
//! the slot of the smallest count (inheriting it, plus one), so a key that
//! keeps coming rises to its place while rare keys churn through the
//! bottom slots. A key is *shown* (gets its own label) while fewer than N
//! counted keys are ahead of it; the rest are "other". Counts are halved
//! every `64 × slots` observations, so the list follows today's traffic,
//! not last month's.

/// How one observation was counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    /// Whether the key is among the top N now (label it by itself).
    pub shown: bool,
    /// A key that lost its slot to this one: drop its series.
    pub evicted: Option<String>,
}

/// The top-N tracker.
#[derive(Debug, Clone)]
pub struct TopN {
    shown: usize,
    slots: Vec<(String, u64)>,
    seen: u64,
}

impl TopN {
    /// Tracks the top `shown` keys (at least one).
    pub fn new(shown: usize) -> Self {
        let shown = shown.max(1);
        Self {
            shown,
            slots: Vec::with_capacity(shown * 4),
            seen: 0,
        }
    }

    /// How many keys are shown at most.
    pub fn shown(&self) -> usize {
        self.shown
    }

    /// Counts one for `key`.
    pub fn count(&mut self, key: &str) -> Counted {
        self.seen += 1;
        if self.seen % (64 * (self.shown as u64) * 4) == 0 {
            for (_, n) in &mut self.slots {
                *n /= 2;
            }
        }
        let mut evicted = None;
        let at = match self.slots.iter().position(|(k, _)| k == key) {
            Some(at) => {
                self.slots[at].1 += 1;
                at
            }
            None if self.slots.len() < self.shown * 4 => {
                self.slots.push((key.to_owned(), 1));
                self.slots.len() - 1
            }
            None => {
                let (at, _) = self
                    .slots
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, (_, n))| *n)
                    .expect("slots are full, so not empty");
                let (old, n) = std::mem::replace(&mut self.slots[at], (key.to_owned(), 0));
                self.slots[at].1 = n + 1;
                evicted = Some(old);
                at
            }
        };
        let mine = self.slots[at].1;
        let ahead = self.slots.iter().filter(|(_, n)| *n > mine).count();
        Counted {
            shown: ahead < self.shown,
            evicted,
        }
    }

    /// The keys shown now, heaviest first.
    pub fn top(&self) -> Vec<&str> {
        let mut sorted: Vec<&(String, u64)> = self.slots.iter().collect();
        sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        sorted
            .into_iter()
            .take(self.shown)
            .map(|(k, _)| k.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_keys_are_shown_and_rare_ones_are_other() {
        let mut top = TopN::new(2);
        // Two heavy tenants among a crowd of one-off ones.
        for i in 0..400 {
            top.count("ten_big");
            if i % 2 == 0 {
                top.count("ten_mid");
            }
            top.count(&format!("ten_rare_{i}"));
        }
        assert_eq!(top.top(), ["ten_big", "ten_mid"]);
        assert!(top.count("ten_big").shown);
        assert!(top.count("ten_mid").shown);
        assert!(!top.count("ten_new_one").shown);
    }

    #[test]
    fn memory_is_bounded_and_evictions_are_reported() {
        let mut top = TopN::new(3);
        let mut evicted = 0;
        for i in 0..1_000 {
            if top.count(&format!("ten_{i}")).evicted.is_some() {
                evicted += 1;
            }
        }
        assert_eq!(top.slots.len(), 12);
        assert_eq!(evicted, 1_000 - 12);
    }

    #[test]
    fn the_list_follows_current_traffic() {
        let mut top = TopN::new(1);
        for _ in 0..2_000 {
            top.count("ten_yesterday");
        }
        // Halving lets a tenant that is heavy now overtake.
        for _ in 0..3_000 {
            top.count("ten_today");
        }
        assert_eq!(top.top(), ["ten_today"]);
    }
}
