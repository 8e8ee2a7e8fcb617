//! The bound on a process's webhook requests in flight
//! (`delivery.max_in_flight_total`), shared by every partition task.
//!
//! Slots are handed out first come, first served (a fair semaphore), so a
//! busy subscription cannot starve the others of the process: each waits
//! its turn behind the requests that asked before it. Waiting happens in
//! the delivery's own task, after its rate limit, and ends when the
//! partition is revoked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The process's request slots.
pub struct RequestSlots {
    slots: Arc<Semaphore>,
    in_flight: Gauge,
}

/// One request's slot, given back when dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    in_flight: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.in_flight.dec();
    }
}

impl RequestSlots {
    /// `total` slots; `in_flight` counts those taken.
    pub fn new(total: usize, in_flight: Gauge) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(total.max(1))),
            in_flight,
        }
    }

    /// Waits for a slot; with it, how long it waited (`None`: no wait).
    pub async fn acquire(&self) -> (Slot, Option<Duration>) {
        let (permit, waited) = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => (permit, None),
            Err(_) => {
                let started = Instant::now();
                let permit = self
                    .slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the request slots are never closed");
                (permit, Some(started.elapsed()))
            }
        };
        self.in_flight.inc();
        (
            Slot {
                _permit: permit,
                in_flight: self.in_flight.clone(),
            },
            waited,
        )
    }

    /// Slots free now.
    pub fn free(&self) -> usize {
        self.slots.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_waits_for_a_slot_and_slots_go_in_turn() {
        let gauge = Gauge::default();
        let slots = Arc::new(RequestSlots::new(2, gauge.clone()));
        let (a, waited) = slots.acquire().await;
        assert!(waited.is_none());
        let (b, _) = slots.acquire().await;
        assert_eq!((gauge.get(), slots.free()), (2, 0));

        // Two more wait, served in the order they asked.
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let waiter = |n: u32| {
            let (slots, order) = (slots.clone(), order.clone());
            tokio::spawn(async move {
                let (slot, waited) = slots.acquire().await;
                order.lock().unwrap().push(n);
                tokio::time::sleep(Duration::from_millis(20)).await;
                drop(slot);
                waited
            })
        };
        let third = waiter(3);
        tokio::task::yield_now().await;
        let fourth = waiter(4);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(order.lock().unwrap().is_empty(), "no slot free yet");
        drop(a);
        let waited = third.await.unwrap();
        assert!(waited.is_some_and(|w| w >= Duration::from_millis(30)));
        drop(b);
        assert!(fourth.await.unwrap().is_some());
        assert_eq!(*order.lock().unwrap(), vec![3, 4]);
        assert_eq!((gauge.get(), slots.free()), (0, 2));
    }
}
