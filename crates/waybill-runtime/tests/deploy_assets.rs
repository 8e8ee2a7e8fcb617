//! The Grafana dashboard and the Prometheus alert rules in `deploy/` only
//! use metrics the services export, and every exported metric is in
//! `docs/metrics.md`: renaming a metric without updating them fails here.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use waybill_kafka::lag::PartitionLag;
use waybill_kafka::stats::{BrokerStats, ClientStats, PartitionStats};
use waybill_runtime::metrics::{
    Families, GroupLabels, GroupPartitionLabels, HealthLabels, Metrics, RequestLabels,
};

fn repo_file(path: &str) -> String {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// Base names (as in `# TYPE` lines) of every metric the services export
/// (a labelled family shows once it has a series).
fn exported() -> BTreeSet<String> {
    let metrics = Metrics::new();
    let f = metrics.get();
    f.http_requests
        .get_or_create(&RequestLabels {
            route: "POST /v1/events".into(),
            status: 202,
        })
        .inc();
    f.http_request("POST /v1/events", 202, Duration::from_millis(3));
    Families::topic_counter(&f.events_published, "freights");
    f.delivery("succeeded", 200, Duration::from_millis(5));
    f.tenant_delivery("ten_1", "succeeded");
    f.delivered_end_to_end("freights.publication.created", Duration::from_millis(40));
    // What /metrics reads at each render.
    waybill_kafka::stats::keep(ClientStats {
        client: "waybill-delivery#producer-1".into(),
        kind: "producer".into(),
        queued_messages: 1,
        queued_bytes: 10,
        brokers: vec![BrokerStats {
            broker: "kafka-0:9092/0".into(),
            rtt_seconds: Some(0.002),
            in_flight: 0,
        }],
        partitions: vec![PartitionStats {
            topic: "deliveries".into(),
            partition: 0,
            lag: 3,
        }],
    });
    Families::topic_counter(&f.retries_scheduled, "deliveries.retry.5s");
    f.health_changes
        .get_or_create(&HealthLabels { status: "failing" })
        .inc();
    Families::topic_counter(&f.poison_records, "freights");
    Families::topic_counter(&f.state_records_skipped, "subscriptions");
    Families::topic_counter(&f.takeover_rewinds, "deliveries");
    f.commit_failures
        .get_or_create(&GroupLabels {
            group: "waybill-delivery".into(),
        })
        .inc();
    f.committed_offset
        .get_or_create(&GroupPartitionLabels {
            group: "waybill-delivery".into(),
            topic: "deliveries".into(),
            partition: 0,
        })
        .set(1);
    f.record_backlog(
        &[PartitionLag {
            topic: "deliveries".into(),
            partition: 0,
            lag: 1,
            oldest_ms: None,
        }],
        Some(0),
        &[],
    );
    metrics
        .render()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Every `waybill_*` identifier in `text`.
fn referenced(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("waybill_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

fn known(name: &str, exported: &BTreeSet<String>) -> bool {
    exported.contains(name)
        || ["_total", "_bucket", "_count", "_sum"]
            .iter()
            .any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|b| exported.contains(b))
            })
}

#[test]
fn dashboards_and_alerts_use_exported_metrics() {
    let exported = exported();
    assert!(exported.len() > 15, "{exported:?}");
    let dashboard: serde_json::Value =
        serde_json::from_str(&repo_file("deploy/grafana/waybill-dashboard.json"))
            .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(exprs.len() > 20, "the dashboard has its panels");
    let rules = repo_file("deploy/prometheus/waybill-alerts.yaml");
    for expected in [
        "WaybillConsumerLagGrowing",
        "WaybillDeadLettersGrowing",
        "WaybillDeliverySuccessRatioLow",
        "WaybillRetryBacklogOverdue",
    ] {
        assert!(rules.contains(&format!("alert: {expected}")), "{expected}");
    }
    let rule_exprs: String = rules
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    for (source, text) in [("dashboard", exprs.join("\n")), ("alerts", rule_exprs)] {
        let names = referenced(&text);
        assert!(!names.is_empty());
        for name in names {
            assert!(
                known(&name, &exported),
                "{source} uses `{name}`, which no service exports"
            );
        }
    }
}

#[test]
fn every_exported_metric_is_documented() {
    let docs = repo_file("docs/metrics.md");
    for name in exported() {
        let documented = [name.clone(), format!("{name}_total")]
            .iter()
            .any(|n| docs.contains(&format!("`{n}`")));
        assert!(documented, "`{name}` is missing from docs/metrics.md");
    }
}
