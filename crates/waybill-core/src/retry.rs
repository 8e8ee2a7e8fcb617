//! Retry policies of a subscription.
//!
//! Either explicit `delays` (the wait after each failed attempt, as the seed
//! platforms publish them) or exponential parameters. Omitted, the
//! deployment default applies: 5s, 5m, 30m, 2h, 5h, 10h, 10h — eight
//! attempts spread over more than 27 hours.

use std::time::Duration;

use serde_json::{Value, json};

use crate::duration;
use crate::fields::Fields;

/// Most attempts a policy may ask for.
pub const MAX_ATTEMPTS: u32 = 100;
/// Longest single delay.
pub const MAX_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long to wait after each failed attempt, and when to give up.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryPolicy {
    /// The wait after failed attempt 1, 2, ...; one attempt more than delays.
    Delays(Vec<Duration>),
    /// `initial_delay × multiplier^(n-1)`, capped at `max_delay`.
    Exponential {
        /// Wait after the first failure.
        initial_delay: Duration,
        /// Growth per attempt (≥ 1).
        multiplier: f64,
        /// Largest wait.
        max_delay: Duration,
        /// Attempts in all, the first included.
        max_attempts: u32,
    },
}

impl Default for RetryPolicy {
    fn default() -> Self {
        let h = 3600;
        RetryPolicy::Delays(
            [5, 300, 1800, 2 * h, 5 * h, 10 * h, 10 * h]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
        )
    }
}

impl RetryPolicy {
    /// Attempts in all, the first included.
    pub fn max_attempts(&self) -> u32 {
        match self {
            RetryPolicy::Delays(d) => d.len() as u32 + 1,
            RetryPolicy::Exponential { max_attempts, .. } => *max_attempts,
        }
    }

    /// The wait after failed attempt `attempt` (1-based), or `None` when
    /// that was the last one.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        if attempt == 0 || attempt >= self.max_attempts() {
            return None;
        }
        Some(match self {
            RetryPolicy::Delays(d) => d[attempt as usize - 1],
            RetryPolicy::Exponential {
                initial_delay,
                multiplier,
                max_delay,
                ..
            } => {
                let factor = multiplier.powi(attempt as i32 - 1);
                let secs = (initial_delay.as_secs_f64() * factor).min(max_delay.as_secs_f64());
                Duration::from_secs_f64(secs)
            }
        })
    }

    /// The API form.
    pub fn to_json(&self) -> Value {
        match self {
            RetryPolicy::Delays(d) => {
                json!({"delays": d.iter().map(|d| duration::format(*d)).collect::<Vec<_>>()})
            }
            RetryPolicy::Exponential {
                initial_delay,
                multiplier,
                max_delay,
                max_attempts,
            } => json!({
                "initial_delay": duration::format(*initial_delay),
                "multiplier": multiplier,
                "max_delay": duration::format(*max_delay),
                "max_attempts": max_attempts,
            }),
        }
    }
}

/// Reads the `retry_policy` object.
pub fn parse_retry_policy(f: &mut Fields) -> Option<RetryPolicy> {
    let mut o = f.object("retry_policy")?;
    let policy = if o.has("delays") {
        let raw: Vec<String> = o
            .required(
                "delays",
                "an array of durations such as \"5s\", \"5m\", \"2h\"",
            )
            .unwrap_or_default();
        let mut delays = Vec::with_capacity(raw.len());
        for (i, s) in raw.iter().enumerate() {
            if let Some(d) = delay(&mut o, &format!("delays[{i}]"), s) {
                delays.push(d);
            }
        }
        if raw.len() >= MAX_ATTEMPTS as usize {
            o.error("delays", format!("at most {} delays", MAX_ATTEMPTS - 1));
        }
        for other in ["initial_delay", "multiplier", "max_delay", "max_attempts"] {
            if o.has(other) {
                o.raw(other);
                o.error(
                    other,
                    "cannot be combined with `delays`; give either delays or exponential parameters",
                );
            }
        }
        RetryPolicy::Delays(delays)
    } else {
        let initial: Option<String> = o.required("initial_delay", "a duration such as \"5s\"");
        let initial_delay = initial.and_then(|s| delay(&mut o, "initial_delay", &s));
        let multiplier: f64 = o.optional("multiplier", "a number").unwrap_or(2.0);
        if !(1.0..=10.0).contains(&multiplier) {
            o.error("multiplier", "must be between 1 and 10");
        }
        let max: Option<String> = o.required("max_delay", "a duration such as \"2h\"");
        let max_delay = max.and_then(|s| delay(&mut o, "max_delay", &s));
        let max_attempts: Option<u32> = o.required("max_attempts", "a positive integer");
        if let Some(n) = max_attempts
            && !(1..=MAX_ATTEMPTS).contains(&n)
        {
            o.error(
                "max_attempts",
                format!("must be between 1 and {MAX_ATTEMPTS}"),
            );
        }
        if let (Some(i), Some(m)) = (initial_delay, max_delay)
            && m < i
        {
            o.error("max_delay", "must not be shorter than initial_delay");
        }
        RetryPolicy::Exponential {
            initial_delay: initial_delay.unwrap_or_default(),
            multiplier,
            max_delay: max_delay.unwrap_or_default(),
            max_attempts: max_attempts.unwrap_or(1),
        }
    };
    o.reject_unknown(&[
        "delays",
        "initial_delay",
        "multiplier",
        "max_delay",
        "max_attempts",
    ]);
    let failed = !o.errors.is_empty();
    f.absorb(o);
    (!failed).then_some(policy)
}

fn delay(o: &mut Fields, key: &str, s: &str) -> Option<Duration> {
    match duration::parse(s) {
        Ok(d) if d > MAX_DELAY => {
            o.error(key, "must be at most 7 days");
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            o.error(key, e);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Option<RetryPolicy>, Vec<String>> {
        let mut f = Fields::parse(body.as_bytes()).unwrap();
        let p = parse_retry_policy(&mut f);
        let errors = f.finish(&["retry_policy"]);
        if errors.is_empty() {
            Ok(p)
        } else {
            Err(errors.into_iter().map(|e| e.to_string()).collect())
        }
    }

    #[test]
    fn default_spans_more_than_a_day() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_attempts(), 8);
        let total: Duration = (1..8).filter_map(|a| p.delay_after(a)).sum();
        assert!(total > Duration::from_secs(24 * 3600), "{total:?}");
        assert_eq!(p.delay_after(1), Some(Duration::from_secs(5)));
        assert_eq!(p.delay_after(8), None);
        assert_eq!(p.delay_after(0), None);
    }

    #[test]
    fn explicit_and_exponential() {
        let p = parse(r#"{"retry_policy": {"delays": ["5s", "500ms"]}}"#)
            .unwrap()
            .unwrap();
        assert_eq!(p.max_attempts(), 3);
        assert_eq!(p.delay_after(2), Some(Duration::from_millis(500)));
        assert_eq!(p.to_json()["delays"][1], "500ms");

        let p = parse(
            r#"{"retry_policy": {"initial_delay": "1s", "multiplier": 3, "max_delay": "5s", "max_attempts": 5}}"#,
        )
        .unwrap()
        .unwrap();
        let delays: Vec<_> = (1..6).map(|a| p.delay_after(a)).collect();
        assert_eq!(
            delays,
            [
                Some(Duration::from_secs(1)),
                Some(Duration::from_secs(3)),
                Some(Duration::from_secs(5)),
                Some(Duration::from_secs(5)),
                None
            ]
        );
    }

    #[test]
    fn errors() {
        let e = parse(r#"{"retry_policy": {"delays": ["5s", "soon", "30d"], "max_attempts": 3}}"#)
            .unwrap_err();
        assert!(e[0].starts_with("retry_policy.delays[1]: `soon` is not a duration"));
        assert!(e[1].starts_with("retry_policy.delays[2]: must be at most 7 days"));
        assert!(e[2].starts_with("retry_policy.max_attempts: cannot be combined"));
        let e = parse(
            r#"{"retry_policy": {"initial_delay": "1m", "max_delay": "1s", "multiplier": 0}}"#,
        )
        .unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
    }
}
