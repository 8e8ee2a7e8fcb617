//! W3C trace context (`traceparent` and `tracestate`), carried in Kafka
//! record headers from ingest (or an upstream producer) through matcher and
//! delivery, and sent on the webhook request, so one trace id follows an
//! event end to end, with the vendors' `tracestate` entries passed on.

use std::fmt;
use std::sync::Arc;

use rand::RngCore;

/// A parsed `traceparent` (version 00), with the `tracestate` that came
/// with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    /// 16-byte trace id, never all zero.
    pub trace_id: [u8; 16],
    /// 8-byte id of the parent span, never all zero.
    pub span_id: [u8; 8],
    /// Trace flags (bit 0 = sampled).
    pub flags: u8,
    /// The `tracestate` header value, if a valid one came with it.
    pub state: Option<Arc<str>>,
}

/// Most `tracestate` list members W3C lets a vendor pass on.
const MAX_STATE_MEMBERS: usize = 32;
/// Longest `tracestate` passed on (W3C: at least 512 must be propagated).
const MAX_STATE_LEN: usize = 512;

impl TraceParent {
    /// A new root context (sampled).
    pub fn new_root() -> Self {
        let mut rng = rand::rng();
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        while trace_id == [0; 16] {
            rng.fill_bytes(&mut trace_id);
        }
        while span_id == [0; 8] {
            rng.fill_bytes(&mut span_id);
        }
        Self {
            trace_id,
            span_id,
            flags: 1,
            state: None,
        }
    }

    /// The same trace with a new span id: the context a stage passes on.
    pub fn child(&self) -> Self {
        let mut span_id = [0u8; 8];
        while span_id == [0; 8] {
            rand::rng().fill_bytes(&mut span_id);
        }
        Self {
            span_id,
            ..self.clone()
        }
    }

    /// Parses a `traceparent` header value; `None` if it is not valid.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        let mut flag = [0u8; 1];
        decode_hex(trace, &mut trace_id)?;
        decode_hex(span, &mut span_id)?;
        decode_hex(flags, &mut flag)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            flags: flag[0],
            state: None,
        })
    }

    /// The same context with a `tracestate` header value; one that is not a
    /// valid W3C list (or too long) is dropped, as the specification asks.
    pub fn with_state(self, state: Option<&str>) -> Self {
        Self {
            state: state
                .map(str::trim)
                .filter(|s| valid_state(s))
                .map(Arc::from),
            ..self
        }
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.span_id),
            self.flags
        )
    }
}

/// A W3C `tracestate`: 1 to 32 comma-separated `key=value` members, keys
/// of lowercase letters, digits and `_-*/@`, values of printable ASCII
/// without `,` and `=` (and not ending in a space).
fn valid_state(s: &str) -> bool {
    if s.is_empty() || s.len() > MAX_STATE_LEN {
        return false;
    }
    let members: Vec<&str> = s
        .split(',')
        .map(|m| m.trim_matches([' ', '\t']))
        .filter(|m| !m.is_empty())
        .collect();
    !members.is_empty()
        && members.len() <= MAX_STATE_MEMBERS
        && members.iter().all(|member| {
            let Some((key, value)) = member.split_once('=') else {
                return false;
            };
            let key_ok = !key.is_empty()
                && key.len() <= 256
                && key.bytes().all(
                    |b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/' | b'@'),
                );
            let value_ok = !value.is_empty()
                && value.len() <= 256
                && !value.ends_with(' ')
                && value
                    .bytes()
                    .all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=');
            key_ok && value_ok
        })
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn decode_hex(s: &str, out: &mut [u8]) -> Option<()> {
    if s.len() != out.len() * 2 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format_round_trip() {
        let s = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp = TraceParent::parse(s).unwrap();
        assert_eq!(tp.to_string(), s);
        assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let child = tp.child();
        assert_eq!(child.trace_id, tp.trace_id);
        assert_ne!(child.span_id, tp.span_id);
    }

    #[test]
    fn tracestate_is_kept_when_valid() {
        let tp = TraceParent::new_root();
        for valid in [
            "congo=t61rcWkgMzE",
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
            "a@b/c*d-e_f=x y",
        ] {
            assert_eq!(
                tp.clone().with_state(Some(valid)).state.as_deref(),
                Some(valid)
            );
        }
        assert_eq!(
            tp.clone().with_state(Some(" k=v ")).state.as_deref(),
            Some("k=v")
        );
        let long = vec!["k=v"; 33].join(",");
        for invalid in [
            "",
            "novalue",
            "Upper=x",
            "k=a,b",
            "k=v=w",
            "k=tab\there",
            long.as_str(),
        ] {
            assert_eq!(
                tp.clone().with_state(Some(invalid)).state,
                None,
                "{invalid}"
            );
        }
        let child = tp.with_state(Some("k=v")).child();
        assert_eq!(
            child.state.as_deref(),
            Some("k=v"),
            "a child keeps the state"
        );
    }

    #[test]
    fn rejects_invalid() {
        for s in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert_eq!(TraceParent::parse(s), None, "{s}");
        }
        assert!(TraceParent::parse(&TraceParent::new_root().to_string()).is_some());
    }
}
