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
    /// `operational_events`: Waybill's own `waybill.*` events about a
    /// tenant's subscriptions and deliveries (written by the delivery
    /// service only).
    Operational,
}

impl DomainTopic {
    /// Every topic the matcher reads: the domain topics and Waybill's own.
    pub const CONSUMED: [DomainTopic; 5] = [
        DomainTopic::Freights,
        DomainTopic::Orders,
        DomainTopic::TimeSlotManagement,
        DomainTopic::LoadsMonitoring,
        DomainTopic::Operational,
    ];

    /// Every domain topic (producers' and operators' event types).
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
            DomainTopic::Operational => "operational_events",
        }
    }

    /// The domain topic of that base name.
    pub fn from_name(name: &str) -> Option<DomainTopic> {
        DomainTopic::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The topic a domain's events go to, if the domain is known.
    pub fn for_domain(domain: &str) -> Option<DomainTopic> {
        match domain {
            "freights" | "freights_processing" => Some(DomainTopic::Freights),
            "freight_orders" => Some(DomainTopic::Orders),
            "time_slot_management" => Some(DomainTopic::TimeSlotManagement),
            "loads_monitoring" => Some(DomainTopic::LoadsMonitoring),
            OPERATIONAL_DOMAIN => Some(DomainTopic::Operational),
            _ => None,
        }
    }
}

/// The domain of Waybill's operational events.
pub const OPERATIONAL_DOMAIN: &str = "waybill";

/// The first failed attempt after a success (or after creation).
pub const SUBSCRIPTION_FAILING: &str = "waybill.subscription.failing";
/// The first success after `failing`.
pub const SUBSCRIPTION_RECOVERED: &str = "waybill.subscription.recovered";
/// A `410`, or failing for `delivery.disable_after`.
pub const SUBSCRIPTION_DISABLED: &str = "waybill.subscription.disabled";
/// A delivery exhausted its policy.
pub const DELIVERY_DEAD: &str = "waybill.delivery.dead";

/// Whether `name` is one of Waybill's operational events: selected only
/// by their names or `waybill.*` (never by `*`), produced by Waybill only.
pub fn is_operational(name: &str) -> bool {
    name.strip_prefix(OPERATIONAL_DOMAIN)
        .is_some_and(|rest| rest.starts_with('.'))
        && name != TEST_EVENT
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
    /// What happened, in one sentence.
    pub description: String,
}

/// An event type an operator adds to the catalog (configuration), for
/// naming schemes other than the built-in one (`Shipment.Created`,
/// `ROUTE_CREATED`).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
pub struct ExtraEventType {
    /// Full name: segments of letters, digits, `_` or `-`, separated by `.`.
    pub name: String,
    /// The domain topic its records go to: `freights`, `orders`,
    /// `time_slot_management` or `loads_monitoring`.
    pub topic: String,
    /// What happened.
    #[serde(default)]
    pub description: String,
    /// Its domain; default the first segment of the name.
    #[serde(default)]
    pub domain: Option<String>,
}

/// Built-in event names and descriptions, grouped by domain.
const BUILTIN: &[(&str, &str)] = &[
    // waybill: about a tenant's own subscriptions and deliveries
    (
        SUBSCRIPTION_FAILING,
        "A subscription's delivery failed after a success (or after its creation): data has subscription_id, delivery_id, status_code, error_class, error.",
    ),
    (
        SUBSCRIPTION_RECOVERED,
        "A failing subscription's delivery succeeded again: data has subscription_id, failing_since.",
    ),
    (
        SUBSCRIPTION_DISABLED,
        "A subscription was disabled by Waybill (its endpoint answered 410, or it failed for delivery.disable_after): data has subscription_id, reason.",
    ),
    (
        DELIVERY_DEAD,
        "A delivery exhausted its retry policy: data has subscription_id, delivery_id, event_id, event_name, attempts, last_error.",
    ),
    // freights
    ("freights.freight.create", "A freight was created."),
    (
        "freights.freight.update",
        "A freight's details were changed.",
    ),
    (
        "freights.freight.order_from_contract_was_created",
        "A freight order was created from a contract for this freight.",
    ),
    (
        "freights.publication.created",
        "A freight was published on the exchange.",
    ),
    (
        "freights.publication.accepted",
        "A carrier's offer for a published freight was accepted.",
    ),
    (
        "freights.publication.finished",
        "A freight's publication ended.",
    ),
    (
        "freights.publication.canceled",
        "A freight's publication was cancelled.",
    ),
    (
        "freights.publication.carrier_assign",
        "A carrier was assigned to a published freight.",
    ),
    (
        "freights.publication.rejected_by_all_carriers",
        "Every carrier asked rejected a published freight.",
    ),
    (
        "freights.proposal_request.rejected",
        "A proposal request for a freight was rejected.",
    ),
    (
        "freights.proposal_request.negotiated",
        "A proposal request for a freight was negotiated (counter-offer).",
    ),
    (
        "freights.proposal_request.accepted",
        "A proposal request for a freight was accepted.",
    ),
    (
        "freights.recommended_carriers.found",
        "Recommended carriers were found for a freight.",
    ),
    // freights_processing
    (
        "freights_processing.publication.finished",
        "The processing of a freight's publication finished.",
    ),
    (
        "freights_processing.publication.negotiation_time_finished",
        "The negotiation time of a freight's publication ran out.",
    ),
    (
        "freights_processing.proposal_request.offer_timeout",
        "A carrier's offer on a proposal request timed out.",
    ),
    // freight_orders
    (
        "freight_orders.order.created",
        "A freight order was created.",
    ),
    (
        "freight_orders.order.vehicle_and_driver_have_changed",
        "The vehicle and driver of a freight order changed.",
    ),
    (
        "freight_orders.order.attachment_removed",
        "An attachment was removed from a freight order.",
    ),
    (
        "freight_orders.order.attachment_added",
        "An attachment was added to a freight order.",
    ),
    (
        "freight_orders.order.attachment_visibility_changed",
        "An attachment of a freight order changed visibility.",
    ),
    (
        "freight_orders.order.shipment_external_id_was_changed",
        "The external shipment id of a freight order changed.",
    ),
    (
        "freight_orders.order.order_was_accepted_by_contract",
        "A freight order was accepted under a contract.",
    ),
    (
        "freight_orders.order.proposal_submitted",
        "A proposal was submitted for a freight order.",
    ),
    (
        "freight_orders.order.proposal_was_accepted",
        "A proposal for a freight order was accepted.",
    ),
    (
        "freight_orders.order.order_was_cancelled",
        "A freight order was cancelled.",
    ),
    // time_slot_management
    (
        "time_slot_management.announcement.created",
        "A dock appointment (announcement) was booked.",
    ),
    (
        "time_slot_management.announcement.deleted",
        "A dock appointment (announcement) was deleted.",
    ),
    (
        "time_slot_management.announcement.updated",
        "A dock appointment (announcement) was changed.",
    ),
    (
        "time_slot_management.time_window.created",
        "A loading or unloading time window was created.",
    ),
    (
        "time_slot_management.time_window.deleted",
        "A loading or unloading time window was deleted.",
    ),
    (
        "time_slot_management.time_window.updated",
        "A loading or unloading time window was changed.",
    ),
    (
        "time_slot_management.time_window.matching_result_with_freight_order_operations",
        "A time window was matched with the operations of a freight order.",
    ),
    // loads_monitoring
    (
        "loads_monitoring.monitoring.monitoring_created",
        "Monitoring of a load was started.",
    ),
    (
        "loads_monitoring.monitoring.monitoring_aborted",
        "Monitoring of a load was aborted.",
    ),
    (
        "loads_monitoring.monitoring.monitoring_completed",
        "Monitoring of a load was completed.",
    ),
    (
        "loads_monitoring.monitoring.device_added",
        "A tracking device was added to a load's monitoring.",
    ),
    (
        "loads_monitoring.monitoring.device_removed",
        "A tracking device was removed from a load's monitoring.",
    ),
    (
        "loads_monitoring.monitoring.monitoring_state_updated",
        "The state of a load's monitoring changed.",
    ),
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
            .map(|(name, description)| {
                let domain = name.split('.').next().unwrap_or_default();
                let topic = DomainTopic::for_domain(domain)
                    .unwrap_or_else(|| panic!("built-in event {name} has an unknown domain"));
                (
                    (*name).to_owned(),
                    EventType {
                        name: (*name).to_owned(),
                        domain: domain.to_owned(),
                        topic,
                        description: (*description).to_owned(),
                    },
                )
            })
            .collect();
        Self { by_name }
    }

    /// This catalog plus `extra`; every problem of every entry is reported
    /// (`catalog.event_types[i].field: what to fix`).
    pub fn with_extra(mut self, extra: &[ExtraEventType]) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        for (i, e) in extra.iter().enumerate() {
            let at = format!("catalog.event_types[{i}]");
            let name_ok = !e.name.contains('*')
                && matches!(
                    crate::pattern::EventTypePattern::parse(&e.name),
                    Ok(crate::pattern::EventTypePattern::Exact(_))
                );
            if !name_ok {
                problems.push(format!(
                    "{at}.name: `{}` must be segments of letters, digits, `_` or `-` separated by `.`",
                    e.name
                ));
            } else if e.name == TEST_EVENT || e.name.starts_with("waybill.") {
                problems.push(format!("{at}.name: `waybill.` event names are reserved"));
            } else if self.by_name.contains_key(&e.name) {
                problems.push(format!("{at}.name: `{}` is already in the catalog", e.name));
            }
            let topic = DomainTopic::from_name(&e.topic);
            if topic.is_none() {
                problems.push(format!(
                    "{at}.topic: `{}` is not a domain topic; use freights, orders, time_slot_management or loads_monitoring",
                    e.topic
                ));
            }
            if let (true, Some(topic)) = (problems.is_empty(), topic) {
                let domain = e
                    .domain
                    .clone()
                    .filter(|d| !d.is_empty())
                    .unwrap_or_else(|| e.name.split('.').next().unwrap_or_default().to_owned());
                self.by_name.insert(
                    e.name.clone(),
                    EventType {
                        name: e.name.clone(),
                        domain,
                        topic,
                        description: e.description.clone(),
                    },
                );
            }
        }
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(problems)
        }
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
    fn every_builtin_event_has_a_description() {
        for e in Catalog::builtin().iter() {
            assert!(e.description.ends_with('.'), "{}", e.name);
        }
    }

    #[test]
    fn operators_add_event_types_of_other_naming_schemes() {
        let extra = |name: &str, topic: &str| ExtraEventType {
            name: name.into(),
            topic: topic.into(),
            description: "d".into(),
            domain: None,
        };
        let catalog = Catalog::builtin()
            .with_extra(&[
                extra("Shipment.Created", "freights"),
                ExtraEventType {
                    domain: Some("routes".into()),
                    ..extra("ROUTE_CREATED", "orders")
                },
            ])
            .unwrap();
        let shipment = catalog.get("Shipment.Created").unwrap();
        assert_eq!(
            (shipment.domain.as_str(), shipment.topic),
            ("Shipment", DomainTopic::Freights)
        );
        let route = catalog.get("ROUTE_CREATED").unwrap();
        assert_eq!(
            (route.domain.as_str(), route.topic),
            ("routes", DomainTopic::Orders)
        );
        assert!(catalog.has_prefix("Shipment."));

        let problems = Catalog::builtin()
            .with_extra(&[
                extra("bad name", "freights"),
                extra("waybill.test", "freights"),
                extra("freights.freight.create", "freights"),
                extra("x.*", "orders"),
                extra("Ok.Name", "shipments"),
            ])
            .unwrap_err();
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems[0].starts_with("catalog.event_types[0].name:"));
        assert!(problems[1].contains("reserved"));
        assert!(problems[2].contains("already in the catalog"));
        assert!(problems[4].starts_with("catalog.event_types[4].topic:"));
    }

    #[test]
    fn prefix_lookup() {
        let catalog = Catalog::builtin();
        assert!(catalog.has_prefix("freights."));
        assert!(catalog.has_prefix("freight_orders.order."));
        assert!(!catalog.has_prefix("shipments."));
    }
}
