//! End to end: an Apache Kafka broker process, the three services as three
//! separate `waybill` processes, a subscription pointing at a local
//! receiver, and one event of each domain that must arrive exactly once,
//! signed, with the right body. Then SIGTERM stops every service cleanly.
//!
//! Kafka's jars are found as [`waybill_testkit::kafka::libs`] says
//! (`make test` fetches them first, `scripts/ensure-kafka.sh`).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use waybill_core::signing::SigningSecret;
use waybill_testkit::api::Api;
use waybill_testkit::cluster::{Cluster, KEY, OPERATOR, Options, Role};
use waybill_testkit::receiver::{Options as ReceiverOptions, Receiver};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_of_each_domain_arrives_once_through_three_processes_on_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), Options::new(env!("CARGO_BIN_EXE_waybill"))).await;
    let api = cluster.api();

    let receiver = Receiver::start().await.unwrap();
    let http = reqwest::Client::new();
    let (status, created) = Api::new(api.clone(), KEY)
        .post(
            "/v1/subscriptions",
            json!({"name": "e2e", "url": receiver.url("/hook"), "event_types": ["*"]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let secret = SigningSecret::parse(created["signing_secret"].as_str().expect("secret")).unwrap();
    let subscription_id = created["id"].as_str().unwrap().to_owned();

    let events = [
        ("freights.publication.accepted", "freight", "F-100"),
        ("freight_orders.order.created", "order", "O-100"),
        (
            "time_slot_management.announcement.updated",
            "announcement",
            "A-100",
        ),
        (
            "loads_monitoring.monitoring.monitoring_completed",
            "monitoring",
            "M-100",
        ),
    ];
    for (i, (name, kind, id)) in events.iter().enumerate() {
        let r = http
            .post(format!("{api}/v1/events"))
            .bearer_auth(KEY)
            .json(&json!({"id": format!("evt-e2e-{i}"), "event_name": name,
                          "entity": {"type": kind, "id": id}, "data": {"seq": i}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }

    let got = match receiver
        .wait_for(events.len(), Duration::from_secs(90))
        .await
    {
        Ok(got) => got,
        Err(e) => panic!("{e}\n{}", cluster.logs()),
    };
    // Nothing more arrives (exactly once in the happy path).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.received().len(), events.len(), "no duplicates");
    for (i, (name, kind, id)) in events.iter().enumerate() {
        let event_id = format!("evt-e2e-{i}");
        let r = got
            .iter()
            .find(|r| r.json()["id"] == event_id.as_str())
            .unwrap_or_else(|| panic!("{event_id} did not arrive"));
        assert!(r.signature_valid(&secret), "{event_id}: signature");
        let body = r.json();
        assert_eq!(body["event_name"], *name);
        assert_eq!(body["entity"], json!({"type": kind, "id": id}));
        assert_eq!(body["data"], json!({"seq": i}));
        assert_eq!(
            r.header("webhook-id").unwrap(),
            waybill_core::ids::delivery_id("ten_e2e", &event_id, &subscription_id)
        );
    }

    // A failed attempt is retried through a retry tier, the
    // history shows both attempts, a retry through the API reads the task
    // back from the log, and a replay finds the event by time.
    let tenant_api = Api::new(api.clone(), KEY);
    let flaky = Receiver::with(ReceiverOptions {
        script: vec![500],
        ..ReceiverOptions::default()
    })
    .await
    .unwrap();
    let (status, sub) = tenant_api
        .post(
            "/v1/subscriptions",
            json!({"url": flaky.url("/flaky"), "event_types": ["freight_orders.order.created"],
                   "retry_policy": {"delays": ["100ms"]}}),
        )
        .await;
    assert_eq!(status, 201, "{sub}");
    let since = time::OffsetDateTime::now_utc() - Duration::from_secs(1);
    let (status, _) = tenant_api
        .post(
            "/v1/events",
            json!({"id": "evt-e2e-retry", "event_name": "freight_orders.order.created",
                   "entity": {"type": "order", "id": "O-200"}, "data": {}}),
        )
        .await;
    assert_eq!(status, 202);
    let got = flaky.wait_for(2, Duration::from_secs(60)).await.unwrap();
    let delivery_id = got[0].header("webhook-id").unwrap().to_owned();
    assert_eq!(got[1].header("webhook-id"), Some(delivery_id.as_str()));
    assert!(got[1].at - got[0].at >= Duration::from_millis(100));
    let deadline = Instant::now() + Duration::from_secs(30);
    let delivery = loop {
        let (_, d) = tenant_api
            .get(&format!("/v1/deliveries/{delivery_id}"))
            .await;
        if d["status"] == "succeeded" || Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(delivery["status"], "succeeded", "{delivery}");
    let codes: Vec<&Value> = delivery["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["status_code"])
        .collect();
    assert_eq!(codes, [&json!(500), &json!(200)]);
    let (status, queued) = tenant_api
        .post(&format!("/v1/deliveries/{delivery_id}/retry"), json!({}))
        .await;
    assert_eq!(status, 202, "{queued}");
    flaky.wait_for(3, Duration::from_secs(60)).await.unwrap();
    let sub_id = sub["id"].as_str().unwrap();
    let since = since
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (status, replay) = tenant_api
        .post(
            &format!("/v1/subscriptions/{sub_id}/replay"),
            json!({"since": since}),
        )
        .await;
    assert_eq!(status, 202, "{replay}");
    let got = flaky.wait_for(4, Duration::from_secs(60)).await.unwrap();
    assert!(
        got.iter()
            .all(|r| r.header("webhook-id") == Some(delivery_id.as_str()))
    );

    // Tenants and subscriptions made through the API are rebuilt, equal,
    // from the topics by a restarted ingest process.
    let operator = Api::new(api.clone(), OPERATOR);
    let (status, tenant) = operator
        .post("/v1/tenants", json!({"name": "restart"}))
        .await;
    assert_eq!(status, 201, "{tenant}");
    let tenant_id = tenant["id"].as_str().unwrap().to_owned();
    let (status, key) = operator
        .post(&format!("/v1/tenants/{tenant_id}/api_keys"), json!({}))
        .await;
    assert_eq!(status, 201, "{key}");
    let acme = Api::new(api.clone(), key["key"].as_str().unwrap());
    let mut made = Vec::new();
    for (i, extra) in [
        json!({"auth": {"type": "basic", "username": "u", "password": "p"}}),
        json!({"filter": {"scopes": [{"predicates": [
            {"attribute": "dc_id", "comparator": "NOT_IN", "values": ["7"]}]}]},
            "retry_policy": {"initial_delay": "1s", "multiplier": 2, "max_delay": "1m", "max_attempts": 5}}),
        json!({"headers": {"X-A": "1"}, "rate_limit_per_second": 3, "method": "PUT"}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut body = json!({"name": format!("s{i}"), "url": receiver.url("/r"), "event_types": ["freights.*"]});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let (status, created) = acme.post("/v1/subscriptions", body).await;
        assert_eq!(status, 201, "{created}");
        made.push(created["id"].as_str().unwrap().to_owned());
    }
    let (status, _) = acme
        .patch(
            &format!("/v1/subscriptions/{}", made[0]),
            json!({"enabled": false, "headers": {"X-B": "2"}}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = acme
        .post(
            &format!("/v1/subscriptions/{}/secret/rotate", made[1]),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = acme.delete(&format!("/v1/subscriptions/{}", made[2])).await;
    assert_eq!(status, 204);
    let snapshot = |acme: Api, made: Vec<String>| async move {
        let (_, list) = acme.get("/v1/subscriptions").await;
        let mut secrets = Vec::new();
        for id in &made {
            let (status, mut answer) = acme.get(&format!("/v1/subscriptions/{id}/secret")).await;
            // An error names its own request's trace: not state.
            if let Some(error) = answer.get_mut("error").and_then(|e| e.as_object_mut()) {
                error.remove("trace_id");
            }
            secrets.push((status, answer));
        }
        (list, secrets)
    };
    let before = snapshot(acme.clone(), made.clone()).await;
    assert_eq!(before.0["total_count"], 2);

    cluster
        .terminate(Role::Ingest, Duration::from_secs(30))
        .unwrap();
    cluster.restart(Role::Ingest).await;
    let after = snapshot(acme.clone(), made.clone()).await;
    assert_eq!(
        after, before,
        "the rebuilt projection equals the state before"
    );

    // Graceful shutdown: every service exits 0 on SIGTERM within its grace.
    for role in [Role::Delivery, Role::Matcher, Role::Ingest] {
        cluster.terminate(role, Duration::from_secs(30)).unwrap();
    }
}

/// An upstream JVM producer (Apache Kafka's own Java client, default
/// partitioner) and the ingest API write events of the same entities: each
/// entity's records land on one partition whichever wrote them, and its
/// webhooks arrive in the order they were written. `create-topics` reports
/// an existing topic whose layout differs from the configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_java_producer_and_the_api_put_an_entity_on_one_partition() {
    use waybill_proto::Message as _;
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), Options::new(env!("CARGO_BIN_EXE_waybill"))).await;
    let api = Api::new(cluster.api(), KEY);
    let receiver = Receiver::start().await.unwrap();
    let (status, created) = api
        .post(
            "/v1/subscriptions",
            json!({"url": receiver.url("/order"), "event_types": ["freights.*"]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");

    // 24 entities, three events each: the first and the third from Java,
    // the second through the API (each step waits for the previous one).
    let entities: Vec<String> = (0..24).map(|i| format!("FR-{i:04}")).collect();
    let java_records = |step: u32| {
        entities
            .iter()
            .map(|entity| {
                let event = waybill_proto::v1::DomainEvent {
                    id: format!("evt-{entity}-{step}"),
                    event_name: "freights.publication.created".into(),
                    tenant_id: waybill_testkit::cluster::TENANT.into(),
                    occurred_at: Some(waybill_proto::convert::timestamp(
                        time::OffsetDateTime::now_utc(),
                    )),
                    entity: Some(waybill_proto::v1::EntityRef {
                        r#type: "freight".into(),
                        id: entity.clone(),
                    }),
                    payload: format!("{{\"step\": {step}}}").into_bytes(),
                    ..Default::default()
                };
                let hex: String = event
                    .encode_to_vec()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                format!("{entity} {hex}\n")
            })
            .collect::<String>()
    };
    let mut partitions: std::collections::HashMap<String, Vec<i64>> = Default::default();
    let java = |step: u32, partitions: &mut std::collections::HashMap<String, Vec<i64>>| {
        let file = dir.path().join(format!("java-records-{step}.txt"));
        std::fs::write(&file, java_records(step)).unwrap();
        let out = waybill_testkit::kafka::run_java(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/java/JavaProducer.java"),
            &[&cluster.brokers(), "freights", &file.display().to_string()],
        );
        assert!(
            out.status.success(),
            "JavaProducer: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let mut parts = line.split(' ');
            let (key, partition) = (parts.next().unwrap(), parts.next().unwrap());
            partitions
                .entry(key.to_owned())
                .or_default()
                .push(partition.parse().unwrap());
        }
    };
    java(1, &mut partitions);
    for entity in &entities {
        let (status, answer) = api
            .post(
                "/v1/events",
                json!({"id": format!("evt-{entity}-2"), "event_name": "freights.publication.created",
                       "entity": {"type": "freight", "id": entity}, "data": {"step": 2}}),
            )
            .await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["topic"], "freights");
        partitions
            .get_mut(entity)
            .expect("written by Java first")
            .push(answer["partition"].as_i64().unwrap());
    }
    java(3, &mut partitions);
    for (entity, seen) in &partitions {
        assert_eq!(seen.len(), 3, "{entity}: {seen:?}");
        assert!(
            seen.iter().all(|p| *p == seen[0]),
            "{entity} was written to partitions {seen:?} (Java, API, Java)"
        );
    }
    let used: HashSet<i64> = partitions.values().map(|p| p[0]).collect();
    assert!(used.len() > 1, "24 entities all on one partition: {used:?}");

    let got = match receiver
        .wait_for(3 * entities.len(), Duration::from_secs(60))
        .await
    {
        Ok(got) => got,
        Err(e) => panic!("{e}\n{}", cluster.logs()),
    };
    for entity in &entities {
        let steps: Vec<i64> = got
            .iter()
            .filter(|r| r.json()["entity"]["id"] == entity.as_str())
            .map(|r| r.json()["data"]["step"].as_i64().unwrap())
            .collect();
        assert_eq!(steps, [1, 2, 3], "{entity}: arrival order");
    }

    // create-topics against topics laid out otherwise than configured.
    let out = cluster
        .command("create-topics")
        .env("WAYBILL_KAFKA__PARTITIONS", "5")
        .env("WAYBILL_KAFKA__MIN_INSYNC_REPLICAS", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "topic freights exists with partitions 3, the configuration says 5 (left as it is"
        ),
        "{stderr}"
    );
    let out = cluster.command("create-topics").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("exists with"), "{stderr}");
}

/// The delivery group's offset is moved past undelivered tasks by hand (as
/// a faulty commit, or a broker serving a wrong offset, would): the
/// partition's next owner finds those tasks have no recorded outcome, goes
/// back to the first of them, counts it, and delivers every event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_too_high_committed_offset_loses_nothing() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
    use rdkafka::{Offset, TopicPartitionList};
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), Options::new(env!("CARGO_BIN_EXE_waybill"))).await;
    let api = Api::new(cluster.api(), KEY);
    let receiver = Receiver::start().await.unwrap();
    let (status, created) = api
        .post(
            "/v1/subscriptions",
            json!({"url": receiver.url("/skip"), "event_types": ["freights.*"]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let post = |i: usize| {
        let api = api.clone();
        async move {
            let (status, answer) = api
                .post(
                    "/v1/events",
                    json!({"id": format!("evt-skip-{i}"), "event_name": "freights.publication.created",
                           "entity": {"type": "freight", "id": format!("F-{i}")}, "data": {"i": i}}),
                )
                .await;
            assert_eq!(status, 202, "{answer}");
        }
    };
    for i in 0..5 {
        post(i).await;
    }
    receiver.wait_for(5, Duration::from_secs(60)).await.unwrap();
    // The delivery group is left empty, then 40 tasks wait on `deliveries`.
    cluster
        .terminate(Role::Delivery, Duration::from_secs(30))
        .unwrap();
    for i in 5..45 {
        post(i).await;
    }
    let reader: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", cluster.brokers())
        .set("group.id", "waybill-delivery")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let timeout = Duration::from_secs(10);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (partition, high) = loop {
        let busiest = (0..3)
            .map(|p| {
                let (low, high) = reader.fetch_watermarks("deliveries", p, timeout).unwrap();
                (high - low, p, high)
            })
            .max()
            .unwrap();
        if busiest.0 >= 45 {
            break (busiest.1, busiest.2);
        }
        assert!(Instant::now() < deadline, "the matcher wrote {busiest:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut committed = TopicPartitionList::new();
    committed
        .add_partition_offset("deliveries", partition, Offset::Offset(high - 10))
        .unwrap();
    reader.commit(&committed, CommitMode::Sync).unwrap();
    let back = reader
        .committed_offsets(committed.clone(), timeout)
        .unwrap();
    assert_eq!(
        back.find_partition("deliveries", partition)
            .unwrap()
            .offset(),
        Offset::Offset(high - 10),
        "the too-high offset is the group's"
    );
    drop(reader);

    cluster.restart(Role::Delivery).await;
    let got = match receiver.wait_for(45, Duration::from_secs(60)).await {
        Ok(got) => got,
        Err(e) => panic!("{e}\n{}", cluster.logs()),
    };
    let ids: HashSet<String> = got
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 45, "every event delivered");
    // Nothing delivered twice: the 5 delivered before had settled.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.received().len(), 45, "no duplicates");
    let metrics = reqwest::get(format!(
        "{}/metrics",
        cluster.health_url(Role::Delivery).unwrap()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(
        metrics.contains("waybill_takeover_rewinds_total{topic=\"deliveries\"} 1"),
        "{metrics}"
    );
    assert!(
        cluster
            .log_tail(Role::Delivery, 200)
            .contains("the group's offset is past records with no recorded outcome"),
        "{}",
        cluster.log_tail(Role::Delivery, 50)
    );
    assert!(
        metrics.contains(&format!(
            "waybill_kafka_committed_offset{{group=\"waybill-delivery\",topic=\"deliveries\",partition=\"{partition}\"}} {high}"
        )),
        "{metrics}"
    );
}

/// One event's trace, exported by the three services (separate processes
/// on Apache Kafka) to Jaeger, a trace backend nobody here wrote, and read
/// back through Jaeger's own query API: one trace, every service in it,
/// each stage by its semantic-convention name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_of_every_service_reaches_jaeger() {
    let jaeger = waybill_testkit::jaeger::Jaeger::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut options = Options::new(env!("CARGO_BIN_EXE_waybill"));
    options.env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), jaeger.otlp_endpoint()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "http/protobuf".into()),
        ("OTEL_EXPORTER_OTLP_COMPRESSION".into(), "gzip".into()),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
    ];
    let cluster = Cluster::start(dir.path(), options).await;
    let api = Api::new(cluster.api(), KEY);
    let receiver = Receiver::start().await.unwrap();
    let (status, created) = api
        .post(
            "/v1/subscriptions",
            json!({"url": receiver.url("/traced"), "event_types": ["freights.*"]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let (status, body) = api
        .post(
            "/v1/events",
            json!({"event_name": "freights.publication.created",
                   "entity": {"type": "freight", "id": "F-JAEGER"}, "data": {}}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let got = receiver
        .wait_for(1, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    let traceparent = got[0].header("traceparent").expect("a traceparent");
    let trace_id = traceparent.split('-').nth(1).unwrap().to_owned();

    let wanted = [
        ("waybill-ingest", "POST /v1/events"),
        ("waybill-ingest", "publish freights"),
        ("waybill-matcher", "process freights"),
        ("waybill-delivery", "process deliveries"),
        ("waybill-delivery", "POST"),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    let traces = loop {
        let traces = jaeger.traces(&trace_id).await;
        let complete = traces.iter().flatten().count() >= wanted.len()
            && wanted.iter().all(|(service, name)| {
                traces
                    .iter()
                    .flatten()
                    .any(|s| s.service == *service && s.name == *name)
            });
        if complete {
            break traces;
        }
        assert!(
            Instant::now() < deadline,
            "Jaeger has not the whole trace {trace_id}: {traces:#?}\nJaeger's log:\n{}",
            jaeger.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(traces.len(), 1, "one trace: {traces:#?}");
    let services: HashSet<&str> = traces[0].iter().map(|s| s.service.as_str()).collect();
    assert_eq!(
        services,
        HashSet::from(["waybill-ingest", "waybill-matcher", "waybill-delivery"])
    );
    assert!(traces[0].iter().all(|s| s.trace_id == trace_id));
    let process = traces[0]
        .iter()
        .find(|s| s.name == "process freights")
        .unwrap();
    assert!(
        process
            .tags
            .contains(&("messaging.system".to_owned(), "kafka".to_owned())),
        "{process:#?}"
    );
}
