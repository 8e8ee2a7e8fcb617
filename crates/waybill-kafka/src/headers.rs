//! Record headers.

use rdkafka::message::{Header, Headers, OwnedHeaders};
use waybill_core::trace::TraceParent;

/// W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
/// W3C trace state (passed through untouched).
pub const TRACESTATE: &str = "tracestate";
/// MIME type of the value.
pub const CONTENT_TYPE: &str = "content-type";
/// Protobuf package of the value (`waybill.v1`).
pub const SCHEMA: &str = "waybill-schema";
/// Dead letters: why the record was refused.
pub const DLQ_REASON: &str = "waybill-dlq-reason";
/// Dead letters: where the record came from.
pub const DLQ_SOURCE_TOPIC: &str = "waybill-dlq-source-topic";
/// Dead letters: source partition.
pub const DLQ_SOURCE_PARTITION: &str = "waybill-dlq-source-partition";
/// Dead letters: source offset.
pub const DLQ_SOURCE_OFFSET: &str = "waybill-dlq-source-offset";

/// Content type of protobuf values.
pub const PROTOBUF: &str = "application/x-protobuf";

/// The headers of a record Waybill writes: content type, schema, trace.
pub fn standard(schema: &str, trace: Option<&TraceParent>) -> OwnedHeaders {
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: CONTENT_TYPE,
            value: Some(PROTOBUF),
        })
        .insert(Header {
            key: SCHEMA,
            value: Some(schema),
        });
    let Some(trace) = trace else {
        return headers;
    };
    let headers = headers.insert(Header {
        key: TRACEPARENT,
        value: Some(&trace.to_string()),
    });
    match &trace.state {
        Some(state) => headers.insert(Header {
            key: TRACESTATE,
            value: Some(state.as_ref()),
        }),
        None => headers,
    }
}

/// The value of the last header of that name, as UTF-8.
pub fn get<'a, H: Headers>(headers: &'a H, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .filter(|h| h.key.eq_ignore_ascii_case(name))
        .filter_map(|h| h.value.and_then(|v| std::str::from_utf8(v).ok()))
        .last()
}

/// The trace context of a record (with its `tracestate`), if it carries a
/// valid one.
pub fn trace_parent<H: Headers>(headers: Option<&H>) -> Option<TraceParent> {
    let headers = headers?;
    let parent = TraceParent::parse(get(headers, TRACEPARENT)?)?;
    Some(parent.with_state(get(headers, TRACESTATE)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_headers_round_trip() {
        let tp = TraceParent::new_root();
        let h = standard("waybill.v1", Some(&tp));
        assert_eq!(get(&h, "Content-Type"), Some(PROTOBUF));
        assert_eq!(get(&h, SCHEMA), Some("waybill.v1"));
        assert_eq!(trace_parent(Some(&h)), Some(tp.clone()));
        assert_eq!(get(&h, TRACESTATE), None);
        assert_eq!(trace_parent(Some(&standard("x", None))), None);
        let with_state = tp.with_state(Some("vendor=abc"));
        let h = standard("waybill.v1", Some(&with_state));
        assert_eq!(get(&h, TRACESTATE), Some("vendor=abc"));
        assert_eq!(trace_parent(Some(&h)), Some(with_state));
    }
}
