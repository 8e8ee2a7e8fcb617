//! The event catalog: every event name Waybill accepts, its domain and the
//! domain topic its records go to.
//!
//! The built-in catalog holds the events of the four logistics domains
//! (freights and freights_processing → `freights`, freight_orders → `orders`,
//! `time_slot_management`, `loads_monitoring`).

use std::collections::BTreeMap;

/// The four domain topics (before any deployment prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DomainTopic {
    /// `freights`: freights and freights_processing events.
    Freights,
    /// `orders`: freight_orders events.
    Orders,
    /// `time_slot_management`: dock scheduling events.
    TimeSlotManagement,
    /// `loads_monitoring`: telematics events.
    LoadsMonitoring,
}

impl DomainTopic {
    /// Every domain topic.
    pub const ALL: [DomainTopic; 4] = [
        DomainTopic::Freights,
        DomainTopic::Orders,
        DomainTopic::TimeSlotManagement,
        DomainTopic::LoadsMonitoring,
    ];

    /// The topic's base name.
    pub fn name(self) -> &'static str {
        match self {
            DomainTopic::Freights => "freights",
            DomainTopic::Orders => "orders",
            DomainTopic::TimeSlotManagement => "time_slot_management",
            DomainTopic::LoadsMonitoring => "loads_monitoring",
        }
    }

    /// The topic a domain's events go to, if the domain is known.
    pub fn for_domain(domain: &str) -> Option<DomainTopic> {
        match domain {
            "freights" | "freights_processing" => Some(DomainTopic::Freights),
            "freight_orders" => Some(DomainTopic::Orders),
            "time_slot_management" => Some(DomainTopic::TimeSlotManagement),
            "loads_monitoring" => Some(DomainTopic::LoadsMonitoring),
            _ => None,
        }
    }
}

/// The reserved event of test notifications (`POST
/// /v1/subscriptions/{id}/test`). It is never accepted from producers and
/// goes to the one subscription it was sent to.
pub const TEST_EVENT: &str = "waybill.test";

/// One entry of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventType {
    /// Full name, e.g. `freights.publication.accepted`.
    pub name: String,
    /// The first segment of the name, e.g. `freights_processing`.
    pub domain: String,
    /// Where records of this event go.
    pub topic: DomainTopic,
}

/// Built-in event names, grouped by domain.
const BUILTIN: &[&str] = &[
    // freights
    "freights.freight.create",
    "freights.freight.update",
    "freights.freight.order_from_contract_was_created",
    "freights.publication.created",
    "freights.publication.accepted",
    "freights.publication.finished",
    "freights.publication.canceled",
    "freights.publication.carrier_assign",
    "freights.publication.rejected_by_all_carriers",
    "freights.proposal_request.rejected",
    "freights.proposal_request.negotiated",
    "freights.proposal_request.accepted",
    "freights.recommended_carriers.found",
    // freights_processing
    "freights_processing.publication.finished",
    "freights_processing.publication.negotiation_time_finished",
    "freights_processing.proposal_request.offer_timeout",
    // freight_orders
    "freight_orders.order.created",
    "freight_orders.order.vehicle_and_driver_have_changed",
    "freight_orders.order.attachment_removed",
    "freight_orders.order.attachment_added",
    "freight_orders.order.attachment_visibility_changed",
    "freight_orders.order.shipment_external_id_was_changed",
    "freight_orders.order.order_was_accepted_by_contract",
    "freight_orders.order.proposal_submitted",
    "freight_orders.order.proposal_was_accepted",
    "freight_orders.order.order_was_cancelled",
    // time_slot_management
    "time_slot_management.announcement.created",
    "time_slot_management.announcement.deleted",
    "time_slot_management.announcement.updated",
    "time_slot_management.time_window.created",
    "time_slot_management.time_window.deleted",
    "time_slot_management.time_window.updated",
    "time_slot_management.time_window.matching_result_with_freight_order_operations",
    // loads_monitoring
    "loads_monitoring.monitoring.monitoring_created",
    "loads_monitoring.monitoring.monitoring_aborted",
    "loads_monitoring.monitoring.monitoring_completed",
    "loads_monitoring.monitoring.device_added",
    "loads_monitoring.monitoring.device_removed",
    "loads_monitoring.monitoring.monitoring_state_updated",
];

/// The set of known event types.
#[derive(Debug, Clone)]
pub struct Catalog {
    by_name: BTreeMap<String, EventType>,
}

impl Catalog {
    /// The built-in catalog of the four logistics domains.
    pub fn builtin() -> Self {
        let by_name = BUILTIN
            .iter()
            .map(|name| {
                let domain = name.split('.').next().unwrap_or_default();
                let topic = DomainTopic::for_domain(domain)
                    .unwrap_or_else(|| panic!("built-in event {name} has an unknown domain"));
                (
                    (*name).to_owned(),
                    EventType {
                        name: (*name).to_owned(),
                        domain: domain.to_owned(),
                        topic,
                    },
                )
            })
            .collect();
        Self { by_name }
    }

    /// The event type of that exact name.
    pub fn get(&self, name: &str) -> Option<&EventType> {
        self.by_name.get(name)
    }

    /// Every event type, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &EventType> {
        self.by_name.values()
    }

    /// Whether any event type has a name starting with `prefix`.
    pub fn has_prefix(&self, prefix: &str) -> bool {
        self.by_name
            .range(prefix.to_owned()..)
            .next()
            .is_some_and(|(name, _)| name.starts_with(prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_maps_every_domain_to_its_topic() {
        let catalog = Catalog::builtin();
        let topic = |n: &str| catalog.get(n).map(|e| e.topic);
        assert_eq!(
            topic("freights.publication.accepted"),
            Some(DomainTopic::Freights)
        );
        assert_eq!(
            topic("freights_processing.publication.finished"),
            Some(DomainTopic::Freights)
        );
        assert_eq!(
            topic("freight_orders.order.created"),
            Some(DomainTopic::Orders)
        );
        assert_eq!(
            topic("time_slot_management.time_window.updated"),
            Some(DomainTopic::TimeSlotManagement)
        );
        assert_eq!(
            topic("loads_monitoring.monitoring.device_added"),
            Some(DomainTopic::LoadsMonitoring)
        );
        assert_eq!(topic("freights.nope"), None);
        assert_eq!(catalog.iter().count(), BUILTIN.len());
    }

    #[test]
    fn prefix_lookup() {
        let catalog = Catalog::builtin();
        assert!(catalog.has_prefix("freights."));
        assert!(catalog.has_prefix("freight_orders.order."));
        assert!(!catalog.has_prefix("shipments."));
    }
}
