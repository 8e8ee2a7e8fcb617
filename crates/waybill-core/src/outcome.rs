//! What to do after a delivery attempt, and where a retry waits.
//!
//! Pure decisions of the delivery engine: [`classify`] turns an attempt's
//! outcome into success, a retry after some delay, disabling the
//! subscription, or a dead letter; [`delay`] computes the wait from the
//! subscription's policy and the receiver's `Retry-After`; [`tier_for`] and
//! [`due_at`] place a waiting task in the fixed-delay retry tier topics.

use std::time::{Duration, SystemTime};

use crate::retry::RetryPolicy;

/// Why an attempt failed or was not sent: the `error_class` of an attempt.
/// The API document lists [`ErrorClass::ALL`], so a class cannot be
/// recorded without being documented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The receiver answered, not 2xx.
    Status,
    /// No answer within the timeout.
    Timeout,
    /// The connection failed (refused, DNS, TLS handshake).
    Connect,
    /// The request failed otherwise.
    Request,
    /// No OAuth2 token could be fetched.
    Oauth2,
    /// The URL, or what its host resolves to, is refused by the URL policy.
    UrlPolicy,
    /// Not sent: the subscription was deleted.
    SubscriptionDeleted,
    /// Not sent: the subscription is disabled.
    SubscriptionDisabled,
    /// Not sent: an event for the callbacks subscription without a
    /// `callback_url`.
    NoCallbackUrl,
    /// Not sent: kept while its subscription was paused for longer than
    /// `delivery.pause_retention` (dead; a retry sends it).
    PauseRetention,
}

impl ErrorClass {
    /// Every class, in the order the API document lists them.
    pub const ALL: [ErrorClass; 10] = [
        ErrorClass::Status,
        ErrorClass::Timeout,
        ErrorClass::Connect,
        ErrorClass::Request,
        ErrorClass::Oauth2,
        ErrorClass::UrlPolicy,
        ErrorClass::SubscriptionDeleted,
        ErrorClass::SubscriptionDisabled,
        ErrorClass::NoCallbackUrl,
        ErrorClass::PauseRetention,
    ];

    /// The API's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Status => "status",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Connect => "connect",
            ErrorClass::Request => "request",
            ErrorClass::Oauth2 => "oauth2",
            ErrorClass::UrlPolicy => "url_policy",
            ErrorClass::SubscriptionDeleted => "subscription_deleted",
            ErrorClass::SubscriptionDisabled => "subscription_disabled",
            ErrorClass::NoCallbackUrl => "no_callback_url",
            ErrorClass::PauseRetention => "pause_retention",
        }
    }
}

/// Longest `Retry-After` honoured; a receiver asking for more gets this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(6 * 3600);

/// Share of a delay added as jitter (at most), so that retries of many
/// deliveries failed together do not arrive together.
pub const JITTER: f64 = 0.1;

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered with this status.
    Response {
        /// HTTP status code.
        status: u16,
        /// Its `Retry-After`, read on 429 and 503 only.
        retry_after: Option<Duration>,
    },
    /// No answer: timeout, connection error, token endpoint failure, or the
    /// URL refused by the policy.
    NoResponse,
}

impl Outcome {
    /// A response with `status`, reading `retry_after` only where HTTP
    /// gives it meaning (429 and 503).
    pub fn response(status: u16, retry_after: Option<Duration>) -> Self {
        Outcome::Response {
            status,
            retry_after: retry_after.filter(|_| matches!(status, 429 | 503)),
        }
    }

    /// Whether this is a success (any 2xx).
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Response { status, .. } if (200..300).contains(status))
    }
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Delivered.
    Success,
    /// Try again after this delay.
    Retry(Duration),
    /// `410 Gone`: disable the subscription; the delivery ends.
    Disable,
    /// The policy is exhausted: dead-letter the delivery.
    Dead,
}

/// The decision after attempt number `attempt` (1-based) ended with
/// `outcome`. `jitter` in `[0, 1)` picks the share of [`JITTER`] added to
/// the delay (the caller draws it at random; tests pass fixed values).
pub fn classify(outcome: &Outcome, attempt: u32, policy: &RetryPolicy, jitter: f64) -> Decision {
    let retry_after = match *outcome {
        Outcome::Response { status, .. } if (200..300).contains(&status) => {
            return Decision::Success;
        }
        Outcome::Response { status: 410, .. } => return Decision::Disable,
        Outcome::Response { retry_after, .. } => retry_after,
        Outcome::NoResponse => None,
    };
    match delay(policy, attempt, retry_after, jitter) {
        Some(d) => Decision::Retry(d),
        None => Decision::Dead,
    }
}

/// Where a delivery goes: its subscription's endpoint, or the per-event
/// `callback_url` of a callbacks subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The subscription's own URL: its outcomes are the subscription's
    /// health.
    Endpoint,
    /// An event's own URL: one callback's outcome says nothing of the
    /// others, nor of the subscription.
    Callback,
}

/// What an attempt tells of its subscription's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthSignal {
    /// Nothing (a callback).
    Unchanged,
    /// The endpoint took it.
    Succeeded,
    /// The endpoint failed it.
    Failed,
    /// The endpoint is gone (`410`): the subscription is disabled.
    Gone,
}

/// The settled outcome of one attempt: what happens to the delivery, and
/// to its subscription's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    /// What happens to the delivery.
    pub decision: Decision,
    /// What the subscription's health learns.
    pub health: HealthSignal,
}

impl Settlement {
    /// The `outcome` label of the delivery metrics and spans.
    pub fn label(&self) -> &'static str {
        match self.decision {
            Decision::Success => "succeeded",
            Decision::Retry(_) => "retried",
            Decision::Dead => "dead",
            Decision::Disable => "disabled",
        }
    }
}

/// Settles attempt number `attempt` of a delivery to `target`: the
/// decision of [`classify`], except that a callback answering `410` is
/// dead (it says nothing of the subscription's other callbacks), and the
/// health signal of the subscription.
pub fn settle(
    outcome: &Outcome,
    attempt: u32,
    policy: &RetryPolicy,
    target: Target,
    jitter: f64,
) -> Settlement {
    let decision = match (classify(outcome, attempt, policy, jitter), target) {
        (Decision::Disable, Target::Callback) => Decision::Dead,
        (decision, _) => decision,
    };
    let health = match (target, decision) {
        (Target::Callback, _) => HealthSignal::Unchanged,
        (Target::Endpoint, Decision::Success) => HealthSignal::Succeeded,
        (Target::Endpoint, Decision::Retry(_) | Decision::Dead) => HealthSignal::Failed,
        (Target::Endpoint, Decision::Disable) => HealthSignal::Gone,
    };
    Settlement { decision, health }
}

/// A delivery ready to be sent: its subscription as of the task (with a
/// callback's URL in place of its own) and where it goes.
#[derive(Debug, Clone)]
pub struct Ready {
    /// The subscription to send with (auth, signing, headers, URL).
    pub subscription: crate::subscription::Subscription,
    /// Its endpoint or an event's callback URL.
    pub target: Target,
}

/// Whether a delivery is sent, given its subscription as of the task
/// (`None`: deleted) and, for a delivery of a callbacks subscription
/// (`target` [`Target::Callback`]), the event's `callback_url`; `Err`
/// names why it is not (the attempt record's `error_class`).
pub fn prepare(
    subscription: Option<crate::subscription::Subscription>,
    target: Target,
    callback_url: Option<&str>,
) -> Result<Ready, ErrorClass> {
    let mut subscription = subscription.ok_or(ErrorClass::SubscriptionDeleted)?;
    if target == Target::Callback {
        let url = callback_url.ok_or(ErrorClass::NoCallbackUrl)?;
        url.clone_into(&mut subscription.spec.url);
    }
    if !subscription.is_deliverable() {
        return Err(ErrorClass::SubscriptionDisabled);
    }
    Ok(Ready {
        subscription,
        target,
    })
}

/// The wait before the attempt after `attempt`, or `None` when `attempt` was
/// the last. The policy's delay grows by up to [`JITTER`]; a `Retry-After`
/// (capped at [`MAX_RETRY_AFTER`]) longer than that wins.
pub fn delay(
    policy: &RetryPolicy,
    attempt: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Option<Duration> {
    let base = policy.delay_after(attempt)?;
    let jittered = base.mul_f64(1.0 + JITTER * jitter.clamp(0.0, 1.0));
    Some(match retry_after {
        Some(asked) => jittered.max(asked.min(MAX_RETRY_AFTER)),
        None => jittered,
    })
}

/// Reads a `Retry-After` header: delay seconds or an HTTP date (relative to
/// `now`). A date in the past means "now".
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// The retry tier a task waiting `remaining` goes to: the longest tier not
/// longer than the wait (a longer wait hops tiers), or the shortest tier when
/// the wait is shorter than every tier (the task is then due before the tier
/// delay). `tiers` are sorted, shortest first, and not empty.
pub fn tier_for(remaining: Duration, tiers: &[Duration]) -> usize {
    tiers
        .iter()
        .rposition(|tier| *tier <= remaining)
        .unwrap_or(0)
}

/// When a task written to a tier at `written` is due: its `not_before` if
/// that comes at most a tenth of the tier after the tier's delay (so the
/// jitter added to a delay does not cost a second hop), else the tier delay
/// after it was written (then the task hops to the tier of its remaining
/// wait). Within one tier partition these times grow with the offset, up to
/// a tenth of the tier (a later record waits at most that much behind an
/// earlier one), except for waits shorter than the shortest tier, which are
/// due at most that tier's delay early.
///
/// `written` is a Kafka timestamp, truncated to the millisecond, so it may
/// read up to 1 ms before the task was decided: that much more is allowed.
pub fn due_at(written: SystemTime, tier: Duration, not_before: SystemTime) -> SystemTime {
    let end = written + tier;
    if not_before <= end + tier / 10 + Duration::from_millis(1) {
        not_before
    } else {
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delays(ds: &[u64]) -> RetryPolicy {
        RetryPolicy::Delays(ds.iter().map(|s| Duration::from_secs(*s)).collect())
    }

    #[test]
    fn classify_by_status() {
        let p = delays(&[5, 60]);
        let r = |status| Outcome::response(status, None);
        assert_eq!(classify(&r(200), 1, &p, 0.0), Decision::Success);
        assert_eq!(classify(&r(204), 3, &p, 0.0), Decision::Success);
        assert_eq!(classify(&r(410), 1, &p, 0.0), Decision::Disable);
        for status in [301, 400, 401, 404, 429, 500, 503] {
            assert_eq!(
                classify(&r(status), 1, &p, 0.0),
                Decision::Retry(Duration::from_secs(5)),
                "{status}"
            );
        }
        assert_eq!(
            classify(&Outcome::NoResponse, 2, &p, 0.0),
            Decision::Retry(Duration::from_secs(60))
        );
        // Three attempts in all: the third failure is final.
        assert_eq!(classify(&r(500), 3, &p, 0.0), Decision::Dead);
        assert_eq!(classify(&Outcome::NoResponse, 3, &p, 0.0), Decision::Dead);
        assert_eq!(classify(&r(200), 3, &p, 0.0), Decision::Success);
    }

    fn subscription(enabled: bool) -> crate::subscription::Subscription {
        let mut spec = crate::subscription::Spec::new("https://example.com/hook", Vec::new());
        spec.enabled = enabled;
        crate::subscription::Subscription::new(
            "sub_1".into(),
            "t".into(),
            spec,
            "key_1",
            time::OffsetDateTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn a_delivery_is_sent_only_to_a_live_subscription_and_a_callback_only_to_its_url() {
        assert_eq!(
            prepare(None, Target::Endpoint, None).unwrap_err(),
            ErrorClass::SubscriptionDeleted
        );
        assert_eq!(
            prepare(Some(subscription(false)), Target::Endpoint, None).unwrap_err(),
            ErrorClass::SubscriptionDisabled
        );
        let ready = prepare(
            Some(subscription(true)),
            Target::Endpoint,
            Some("https://x.example"),
        )
        .unwrap();
        assert_eq!(ready.subscription.spec.url, "https://example.com/hook");
        assert_eq!(ready.target, Target::Endpoint);
        assert_eq!(
            prepare(Some(subscription(true)), Target::Callback, None).unwrap_err(),
            ErrorClass::NoCallbackUrl
        );
        let ready = prepare(
            Some(subscription(true)),
            Target::Callback,
            Some("https://x.example/cb"),
        )
        .unwrap();
        assert_eq!(ready.subscription.spec.url, "https://x.example/cb");
        assert_eq!(ready.target, Target::Callback);
    }

    #[test]
    fn a_callback_answering_410_is_dead_not_a_disabled_subscription() {
        let p = delays(&[5]);
        let gone = Outcome::response(410, None);
        let s = settle(&gone, 1, &p, Target::Callback, 0.0);
        assert_eq!(s.decision, Decision::Dead);
        assert_eq!(s.health, HealthSignal::Unchanged);
        assert_eq!(s.label(), "dead");
        let s = settle(&gone, 1, &p, Target::Endpoint, 0.0);
        assert_eq!(s.decision, Decision::Disable);
        assert_eq!(s.health, HealthSignal::Gone);
        assert_eq!(s.label(), "disabled");
    }

    #[test]
    fn an_endpoints_outcomes_are_its_health_a_callbacks_are_not() {
        let p = delays(&[5]);
        let ok = Outcome::response(204, None);
        let err = Outcome::response(500, None);
        let at = |o, n, t| settle(o, n, &p, t, 0.0);
        assert_eq!(at(&ok, 1, Target::Endpoint).health, HealthSignal::Succeeded);
        let retried = at(&err, 1, Target::Endpoint);
        assert_eq!(retried.decision, Decision::Retry(Duration::from_secs(5)));
        assert_eq!(retried.health, HealthSignal::Failed);
        assert_eq!(retried.label(), "retried");
        let dead = at(&Outcome::NoResponse, 2, Target::Endpoint);
        assert_eq!(
            (dead.decision, dead.health),
            (Decision::Dead, HealthSignal::Failed)
        );
        for o in [&ok, &err, &Outcome::NoResponse] {
            assert_eq!(at(o, 1, Target::Callback).health, HealthSignal::Unchanged);
        }
        // A callback is retried by the policy like any delivery.
        assert_eq!(
            at(&err, 1, Target::Callback).decision,
            Decision::Retry(Duration::from_secs(5))
        );
    }

    #[test]
    fn jitter_adds_at_most_a_tenth() {
        let p = delays(&[100]);
        assert_eq!(delay(&p, 1, None, 0.0), Some(Duration::from_secs(100)));
        assert_eq!(delay(&p, 1, None, 0.5), Some(Duration::from_secs(105)));
        assert_eq!(delay(&p, 1, None, 7.0), Some(Duration::from_secs(110)));
        assert_eq!(delay(&p, 2, None, 0.5), None);
    }

    #[test]
    fn retry_after_wins_when_longer_and_is_capped() {
        let p = delays(&[5, 5]);
        let asked = |status, secs| Outcome::response(status, Some(Duration::from_secs(secs)));
        assert_eq!(
            classify(&asked(429, 120), 1, &p, 0.0),
            Decision::Retry(Duration::from_secs(120))
        );
        assert_eq!(
            classify(&asked(503, 1), 1, &p, 0.0),
            Decision::Retry(Duration::from_secs(5))
        );
        assert_eq!(
            classify(&asked(503, 10 * 24 * 3600), 1, &p, 0.0),
            Decision::Retry(MAX_RETRY_AFTER)
        );
        // Retry-After means nothing on other statuses.
        assert_eq!(
            classify(&asked(500, 120), 1, &p, 0.0),
            Decision::Retry(Duration::from_secs(5))
        );
        // It never extends the policy beyond its last attempt.
        assert_eq!(classify(&asked(429, 120), 3, &p, 0.0), Decision::Dead);
    }

    #[test]
    fn retry_after_header_forms() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn tiers_fit_the_wait_and_long_waits_hop() {
        let tiers: Vec<Duration> = [1, 5, 60, 300, 1800, 7200]
            .into_iter()
            .map(Duration::from_secs)
            .collect();
        let s = Duration::from_secs;
        assert_eq!(tier_for(Duration::from_millis(300), &tiers), 0);
        assert_eq!(tier_for(s(1), &tiers), 0);
        assert_eq!(tier_for(s(59), &tiers), 1);
        assert_eq!(tier_for(s(60), &tiers), 2);
        assert_eq!(tier_for(s(10 * 3600), &tiers), 5);

        let t0 = SystemTime::UNIX_EPOCH + s(1_000_000);
        // A 10 h wait rests 2 h in the longest tier, then hops.
        assert_eq!(due_at(t0, s(7200), t0 + s(36_000)), t0 + s(7200));
        // A wait that fits a tier is due exactly at not_before...
        assert_eq!(due_at(t0, s(60), t0 + s(60)), t0 + s(60));
        // ...also with up to 10 % jitter on top, in one hop...
        assert_eq!(due_at(t0, s(60), t0 + s(66)), t0 + s(66));
        // ...and the rest of a longer one is waited in a shorter tier.
        assert_eq!(due_at(t0, s(60), t0 + s(67)), t0 + s(60));
        // The written time is truncated to the millisecond: a task decided
        // 0.9 ms after it, with the full jitter, is still due on time.
        let ms = Duration::from_millis;
        let due = t0 + Duration::from_micros(900) + ms(55);
        assert_eq!(due_at(t0, ms(50), due), due);
        assert_eq!(
            due_at(t0, s(1), t0 + Duration::from_millis(300)),
            t0 + Duration::from_millis(300)
        );
    }
}
