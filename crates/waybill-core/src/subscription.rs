//! The subscription model and the validation of create requests.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::FieldError;
use crate::auth::{CallbackAuth, parse_auth};
use crate::catalog::Catalog;
use crate::fields::Fields;
use crate::filter::{Filter, parse_filter};
use crate::pattern::EventTypePattern;
use crate::retry::{RetryPolicy, parse_retry_policy};
use crate::signing::SigningSecret;
use crate::url_policy::UrlPolicy;

/// Most entries in `event_types`.
pub const MAX_EVENT_TYPES: usize = 100;
/// Most custom headers.
pub const MAX_HEADERS: usize = 50;
/// Most metadata entries.
pub const MAX_METADATA: usize = 50;
/// Longest subscription name.
pub const MAX_NAME_LEN: usize = 256;
/// Highest `rate_limit_per_second`.
pub const MAX_RATE_LIMIT: u32 = 10_000;
/// Highest `max_in_flight`.
pub const MAX_IN_FLIGHT: u32 = 64;
/// `max_in_flight` when not set.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 8;

pub use crate::headers::{
    ALWAYS_SECRET_HEADERS, HOP_BY_HOP_HEADERS, RESERVED_HEADERS, is_header_name, is_reserved,
};
use crate::headers::{check_headers, parse_secret_headers, unmask_headers};

/// HTTP method of the webhook request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// `POST` (default).
    #[default]
    Post,
    /// `PUT`.
    Put,
}

impl Method {
    /// Every method.
    pub const ALL: [Method; 2] = [Method::Post, Method::Put];

    /// `POST` or `PUT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Post => "POST",
            Method::Put => "PUT",
        }
    }
}

/// The order a subscription's deliveries keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Ordering {
    /// One delivery at a time per entity, in the order of its events; a
    /// failed one waits in its retry tier while the entity's later events
    /// go on.
    #[default]
    Entity,
    /// As `Entity`, and an entity's later events also wait while an
    /// earlier one is being retried, until it succeeded or is dead.
    Strict,
    /// No order: one entity's deliveries may run side by side.
    None,
}

impl Ordering {
    /// Every ordering.
    pub const ALL: [Ordering; 3] = [Ordering::Entity, Ordering::Strict, Ordering::None];

    /// `entity`, `strict` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            Ordering::Entity => "entity",
            Ordering::Strict => "strict",
            Ordering::None => "none",
        }
    }

    /// The ordering named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == name)
    }
}

/// Delivery state of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Status {
    /// Receiving deliveries.
    #[default]
    Active,
    /// Disabled by the user, by a `410 Gone`, or after failing too long.
    Disabled,
    /// Enabled, but recent deliveries failed.
    Failing,
}

impl Status {
    /// Every status.
    pub const ALL: [Status; 3] = [Status::Active, Status::Disabled, Status::Failing];

    /// `active`, `disabled` or `failing`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Disabled => "disabled",
            Status::Failing => "failing",
        }
    }
}

/// What the user sets on a subscription: the body of create and replace,
/// and what a partial update changes. `Debug` masks credentials and
/// secret header values.
#[derive(Clone, PartialEq)]
pub struct Spec {
    /// Free-form name.
    pub name: String,
    /// Callback URL.
    pub url: String,
    /// POST or PUT.
    pub method: Method,
    /// Selected event types.
    pub event_types: Vec<EventTypePattern>,
    /// Attribute filter; `None` = every event of the selected types.
    pub filter: Option<Filter>,
    /// Callback authentication.
    pub auth: CallbackAuth,
    /// Custom headers sent with every request.
    pub headers: BTreeMap<String, String>,
    /// Names (lower-case) of custom headers whose values are masked in
    /// answers, besides [`ALWAYS_SECRET_HEADERS`].
    pub secret_headers: std::collections::BTreeSet<String>,
    /// Switched on by the user.
    pub enabled: bool,
    /// Requests per second at most; `None` = unlimited.
    pub rate_limit_per_second: Option<u32>,
    /// Retry policy; `None` = the deployment default.
    pub retry_policy: Option<RetryPolicy>,
    /// The order its deliveries keep.
    pub ordering: Ordering,
    /// Deliveries in flight at once, at most (1 to [`MAX_IN_FLIGHT`]).
    pub max_in_flight: u32,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured, so that a new field cannot be left out.
        let Self {
            name,
            url,
            method,
            event_types,
            filter,
            auth,
            headers: _,
            secret_headers,
            enabled,
            rate_limit_per_second,
            retry_policy,
            ordering,
            max_in_flight,
            metadata,
        } = self;
        f.debug_struct("Spec")
            .field("name", name)
            .field("url", url)
            .field("method", method)
            .field("event_types", event_types)
            .field("filter", filter)
            .field("auth", auth)
            .field("headers", &self.masked_headers())
            .field("secret_headers", secret_headers)
            .field("enabled", enabled)
            .field("rate_limit_per_second", rate_limit_per_second)
            .field("retry_policy", retry_policy)
            .field("ordering", ordering)
            .field("max_in_flight", max_in_flight)
            .field("metadata", metadata)
            .finish()
    }
}

impl Spec {
    /// A spec with defaults for everything but the URL and event types.
    pub fn new(url: impl Into<String>, event_types: Vec<EventTypePattern>) -> Self {
        Self {
            name: String::new(),
            url: url.into(),
            method: Method::Post,
            event_types,
            filter: None,
            auth: CallbackAuth::None,
            headers: BTreeMap::new(),
            secret_headers: std::collections::BTreeSet::new(),
            enabled: true,
            rate_limit_per_second: None,
            retry_policy: None,
            ordering: Ordering::Entity,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            metadata: BTreeMap::new(),
        }
    }

    /// Whether the custom header `name`'s value is masked in answers.
    pub fn is_secret_header(&self, name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        ALWAYS_SECRET_HEADERS.contains(&lower.as_str()) || self.secret_headers.contains(&lower)
    }

    /// The custom headers as answers show them: secret values masked.
    pub fn masked_headers(&self) -> BTreeMap<String, String> {
        self.headers
            .iter()
            .map(|(name, value)| {
                let shown = if self.is_secret_header(name) {
                    crate::auth::MASK.to_owned()
                } else {
                    value.clone()
                };
                (name.clone(), shown)
            })
            .collect()
    }
}

/// Whether two URLs have the same origin (scheme, host, port); unparsable
/// URLs never do.
pub fn same_origin(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin() && a.origin().is_tuple(),
        _ => false,
    }
}

/// A signing secret being rotated out: it still signs (second signature)
/// until `expires_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct PreviousSecret {
    /// The old secret.
    pub secret: SigningSecret,
    /// End of the overlap window.
    pub expires_at: OffsetDateTime,
}

/// A webhook subscription: the full state, as folded from the
/// `subscriptions` topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    /// `sub_...`.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// What the user set.
    pub spec: Spec,
    /// Delivery state.
    pub status: Status,
    /// Why it was disabled, when it was.
    pub disabled_reason: Option<String>,
    /// Since when every attempt failed (status `failing`).
    pub failing_since: Option<OffsetDateTime>,
    /// Standard Webhooks signing secret.
    pub signing_secret: SigningSecret,
    /// The secret before the last rotation, during its overlap window.
    pub previous_secret: Option<PreviousSecret>,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Last change.
    pub updated_at: OffsetDateTime,
    /// API key id of the creator.
    pub created_by: String,
    /// API key id of the last writer.
    pub updated_by: String,
    /// `1` on create, one more with every change a user makes (health
    /// changes Waybill makes by itself do not count).
    pub revision: u64,
    /// The unique id of the write that produced this revision: a writer
    /// asks the projection whether its own record won (see
    /// [`crate::ledger`]).
    pub write_id: String,
    /// The revision of the last user change that cleared the health
    /// (`reset`, switching a disabled subscription back on): health
    /// recorded on an older revision no longer counts.
    pub health_reset_revision: u64,
    /// Paused by the user: still matched, nothing sent; its deliveries are
    /// kept and go out after `resume`.
    pub paused: bool,
    /// Where the deliveries kept since the last pause start on
    /// `deliveries.parked` (see [`crate::hold::pause_gate`]); kept after
    /// `resume`, until the next pause replaces it.
    pub kept_from: Option<crate::hold::Parked>,
}

/// The statuses an answer shows: the health, `disabled` when switched off
/// by the user, `paused` while paused.
pub const SHOWN_STATUSES: [&str; 4] = ["active", "disabled", "failing", "paused"];

impl Subscription {
    /// A new subscription with a fresh signing secret, created by `by` at `now`.
    pub fn new(id: String, tenant_id: String, spec: Spec, by: &str, now: OffsetDateTime) -> Self {
        Self {
            id,
            tenant_id,
            spec,
            status: Status::Active,
            disabled_reason: None,
            failing_since: None,
            signing_secret: SigningSecret::generate(),
            previous_secret: None,
            created_at: now,
            updated_at: now,
            created_by: by.to_owned(),
            updated_by: by.to_owned(),
            revision: 1,
            write_id: crate::ids::new_write_id(),
            health_reset_revision: 1,
            paused: false,
            kept_from: None,
        }
    }

    /// The status an answer shows, and why it is disabled if it is.
    pub fn shown_status(&self) -> (&'static str, Option<String>) {
        if !self.spec.enabled && self.status != Status::Disabled {
            ("disabled", Some("disabled by the user".to_owned()))
        } else if self.status == Status::Disabled {
            ("disabled", self.disabled_reason.clone())
        } else if self.paused {
            ("paused", None)
        } else {
            (self.status.as_str(), None)
        }
    }

    /// Whether deliveries may start for it now.
    pub fn is_deliverable(&self) -> bool {
        self.spec.enabled && self.status != Status::Disabled
    }

    /// Marks a user's change by `by` at `now`: the next revision, written
    /// by a new write.
    pub fn touch(&mut self, by: &str, now: OffsetDateTime) {
        self.updated_at = now;
        self.updated_by = by.to_owned();
        self.revision += 1;
        self.write_id = crate::ids::new_write_id();
    }

    /// Clears the failure state and switches it on (`reset`); call
    /// [`touch`](Self::touch) first, so that the health recorded before
    /// this revision stops counting.
    pub fn reset(&mut self) {
        self.spec.enabled = true;
        self.clear_health();
        self.health_reset_revision = self.revision;
    }

    fn clear_health(&mut self) {
        self.status = Status::Active;
        self.disabled_reason = None;
        self.failing_since = None;
    }

    /// Sets the health fields from the last health record, if it was
    /// recorded on this revision or later than the last reset; else the
    /// subscription is healthy (`active`).
    pub fn set_health(&mut self, health: Option<&Health>) {
        match health.filter(|h| h.revision >= self.health_reset_revision) {
            Some(h) => {
                self.status = h.status;
                self.failing_since = h.failing_since;
                self.disabled_reason = h.disabled_reason.clone();
            }
            None => self.clear_health(),
        }
    }

    /// The health record of this subscription after `change`, judged on
    /// this revision at `now`.
    pub fn health_record(&self, change: &HealthChange, now: OffsetDateTime) -> Health {
        let mut health = Health {
            status: self.status,
            failing_since: self.failing_since,
            disabled_reason: self.disabled_reason.clone(),
            revision: self.revision,
            recorded_at: now,
        };
        match change {
            HealthChange::Failing { since } => {
                health.status = Status::Failing;
                health.failing_since = Some(*since);
                health.disabled_reason = None;
            }
            HealthChange::Recovered => {
                health.status = Status::Active;
                health.failing_since = None;
                health.disabled_reason = None;
            }
            HealthChange::Disabled { reason } => {
                health.status = Status::Disabled;
                health.disabled_reason = Some(reason.clone());
            }
        }
        health
    }

    /// The health change one attempt outcome at `at` brings, if any: the
    /// first failure after a success makes it `failing`; a success makes a
    /// failing one `active` again; a failure after failing for
    /// `disable_after` disables it. A disabled subscription does not change.
    pub fn health_after(
        &self,
        succeeded: bool,
        at: OffsetDateTime,
        disable_after: std::time::Duration,
    ) -> Option<HealthChange> {
        health_change(
            self.status,
            self.failing_since,
            succeeded,
            at,
            disable_after,
        )
    }

    /// Applies a health change to this copy (what the fold does with the
    /// record [`health_record`](Self::health_record) makes).
    pub fn apply_health(&mut self, change: &HealthChange) {
        let health = self.health_record(change, OffsetDateTime::now_utc());
        self.set_health(Some(&health));
    }
}

/// [`Subscription::health_after`] from a subscription's health fields
/// alone (a projection that keeps them beside a sealed record answers it
/// without decoding).
pub fn health_change(
    status: Status,
    failing_since: Option<OffsetDateTime>,
    succeeded: bool,
    at: OffsetDateTime,
    disable_after: std::time::Duration,
) -> Option<HealthChange> {
    match (status, succeeded, failing_since) {
        (Status::Disabled, _, _) => None,
        (Status::Failing, true, _) => Some(HealthChange::Recovered),
        (Status::Active, false, _) | (Status::Failing, false, None) => {
            Some(HealthChange::Failing { since: at })
        }
        (Status::Failing, false, Some(since)) if at - since >= disable_after => {
            Some(HealthChange::Disabled {
                reason: format!(
                    "every delivery failed since {} ({} without a success)",
                    crate::event::format_rfc3339(since),
                    crate::duration::format(disable_after)
                ),
            })
        }
        _ => None,
    }
}

impl Subscription {
    /// Replaces the signing secret; the old one keeps signing until
    /// `now + overlap`.
    pub fn rotate_secret(&mut self, now: OffsetDateTime, overlap: std::time::Duration) {
        let old = std::mem::replace(&mut self.signing_secret, SigningSecret::generate());
        self.previous_secret = Some(PreviousSecret {
            secret: old,
            expires_at: now + overlap,
        });
    }

    /// The secrets that sign a request sent at `now`: the current one, then
    /// the previous one while its overlap window lasts.
    pub fn signing_secrets(&self, now: OffsetDateTime) -> Vec<&SigningSecret> {
        let mut secrets = vec![&self.signing_secret];
        if let Some(p) = &self.previous_secret
            && now < p.expires_at
        {
            secrets.push(&p.secret);
        }
        secrets
    }
}

/// A subscription's delivery health as the delivery service records it:
/// its own record, apart from what the user set, so that a health change
/// and a user's edit never overwrite each other.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// `active`, `failing` or `disabled` (by Waybill: a `410`, or failing
    /// for too long).
    pub status: Status,
    /// Since when every attempt failed.
    pub failing_since: Option<OffsetDateTime>,
    /// Why Waybill disabled it.
    pub disabled_reason: Option<String>,
    /// The subscription revision the delivery service judged on: health
    /// older than the last reset does not count.
    pub revision: u64,
    /// When it was recorded.
    pub recorded_at: OffsetDateTime,
}

/// A change of a subscription's delivery health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthChange {
    /// Its deliveries started failing.
    Failing {
        /// The first failed attempt after the last success.
        since: OffsetDateTime,
    },
    /// A delivery succeeded again.
    Recovered,
    /// It failed for too long: disabled.
    Disabled {
        /// Why, for `disabled_reason`.
        reason: String,
    },
}

/// What a request body means for the spec it is read into.
#[derive(Debug, Clone, Copy)]
pub enum Mode<'a> {
    /// `POST`: a new subscription; absent fields take their defaults.
    Create,
    /// `PUT`: a full replacement of this spec; absent fields take their
    /// defaults, masked credentials keep the stored ones.
    Replace(&'a Spec),
    /// `PATCH`: present fields replace, absent fields stay; `null` resets an
    /// optional field to its default (`"headers": {}` clears headers).
    Patch(&'a Spec),
}

/// Fields of a subscription body.
pub const SUBSCRIPTION_FIELDS: &[&str] = &[
    "name",
    "url",
    "method",
    "event_types",
    "filter",
    "auth",
    "headers",
    "secret_headers",
    "enabled",
    "rate_limit_per_second",
    "retry_policy",
    "ordering",
    "max_in_flight",
    "metadata",
];

/// Validates a subscription body, reporting every invalid field at once.
pub fn parse_spec(
    body: &[u8],
    mode: Mode<'_>,
    catalog: &Catalog,
    policy: &UrlPolicy,
) -> Result<Spec, Vec<FieldError>> {
    let mut f = Fields::parse(body).map_err(|e| vec![e])?;
    let (base, patch) = match mode {
        Mode::Create => (None, false),
        Mode::Replace(b) => (Some(b), false),
        Mode::Patch(b) => (Some(b), true),
    };
    // A field is (re)read unless this is a patch that leaves it out.
    let read = |f: &Fields, key: &str| !patch || f.has(key);
    let mut spec = match (patch, base) {
        (true, Some(b)) => b.clone(),
        _ => Spec::new(String::new(), Vec::new()),
    };
    // `url`, `event_types`, `method` and `enabled` take no `null` (on create
    // and replace, `url` and `event_types` are required anyway).
    let non_null: &[&str] = if patch {
        &["url", "event_types", "method", "enabled"]
    } else {
        &["method", "enabled"]
    };
    for key in non_null {
        let key = *key;
        if f.raw_is_null(key) {
            f.raw(key);
            let fix = if patch {
                "leave it out to keep the current value"
            } else {
                "leave it out for the default"
            };
            f.error(key, format!("cannot be null; {fix}"));
        }
    }

    if read(&f, "name") {
        spec.name = f.optional("name", "a string").unwrap_or_default();
        if spec.name.chars().count() > MAX_NAME_LEN {
            f.error("name", format!("must be at most {MAX_NAME_LEN} characters"));
        }
    }

    if read(&f, "url") {
        if let Some(url) = f.required::<String>("url", "an https URL string") {
            if let Err(message) = policy.check_url(&url) {
                f.error("url", message);
            }
            spec.url = url;
        }
    }

    if read(&f, "method") {
        spec.method = match f
            .optional::<String>("method", "\"POST\" or \"PUT\"")
            .as_deref()
        {
            None => Method::Post,
            Some(m) if m.eq_ignore_ascii_case("post") => Method::Post,
            Some(m) if m.eq_ignore_ascii_case("put") => Method::Put,
            Some(other) => {
                f.error(
                    "method",
                    format!("must be \"POST\" or \"PUT\", not {other:?}"),
                );
                Method::Post
            }
        };
    }

    if read(&f, "event_types") {
        let raw_types: Vec<String> = f
            .required("event_types", "an array of event names or patterns")
            .unwrap_or_default();
        spec.event_types = parse_event_types(&mut f, &raw_types, catalog);
    }

    if read(&f, "filter") {
        spec.filter = parse_filter(&mut f).filter(|filter| !filter.scopes.is_empty());
    }

    // A stored credential goes only where it went: a masked one is kept
    // while the URL's origin stays the same (see `auth::parse_auth`).
    let origin_changed = base.is_some_and(|b| !same_origin(&b.url, &spec.url));
    // Taken before the fields are consumed: their check below needs them.
    let (auth_given, headers_given) = (read(&f, "auth"), read(&f, "headers"));
    if auth_given {
        spec.auth =
            parse_auth(&mut f, policy, base.map(|b| &b.auth), origin_changed).unwrap_or_default();
    } else if origin_changed && spec.auth != CallbackAuth::None {
        f.error(
            "auth",
            format!(
                "must be sent again, with its credentials, when {} changes: the stored ones are not sent to a new origin",
                crate::auth::ORIGIN
            ),
        );
    }

    if read(&f, "enabled") {
        spec.enabled = f.optional("enabled", "a boolean").unwrap_or(true);
    }

    if read(&f, "secret_headers") {
        let names: Vec<String> = f
            .optional("secret_headers", "an array of header names")
            .unwrap_or_default();
        spec.secret_headers = parse_secret_headers(&mut f, &names);
    }
    if headers_given {
        let given: BTreeMap<String, String> = f
            .optional("headers", "an object of header names to string values")
            .unwrap_or_default();
        spec.headers = unmask_headers(&mut f, given, base, origin_changed);
    } else if origin_changed && spec.headers.keys().any(|n| spec.is_secret_header(n)) {
        f.error(
            "headers",
            format!(
                "must be sent again, with the values of its secret headers, when {} changes",
                crate::auth::ORIGIN
            ),
        );
    }
    // Checked whenever auth or headers change: they must not collide.
    if headers_given || auth_given {
        check_headers(&mut f, &spec.headers, &spec.auth);
    }

    if read(&f, "rate_limit_per_second") {
        spec.rate_limit_per_second =
            f.optional::<u32>("rate_limit_per_second", "a positive integer");
        if let Some(r) = spec.rate_limit_per_second
            && !(1..=MAX_RATE_LIMIT).contains(&r)
        {
            f.error(
                "rate_limit_per_second",
                format!("must be between 1 and {MAX_RATE_LIMIT} (leave it out for no limit)"),
            );
        }
    }

    if read(&f, "retry_policy") {
        spec.retry_policy = parse_retry_policy(&mut f);
    }

    if read(&f, "ordering") {
        let names = "\"entity\", \"strict\" or \"none\"";
        spec.ordering = match f.optional::<String>("ordering", names).as_deref() {
            None => Ordering::Entity,
            Some(name) => Ordering::parse(name).unwrap_or_else(|| {
                f.error("ordering", format!("must be {names}, not {name:?}"));
                Ordering::Entity
            }),
        };
    }

    if read(&f, "max_in_flight") {
        spec.max_in_flight = f
            .optional::<u32>("max_in_flight", "an integer from 1 to 64")
            .unwrap_or(DEFAULT_MAX_IN_FLIGHT);
        if !(1..=MAX_IN_FLIGHT).contains(&spec.max_in_flight) {
            f.error(
                "max_in_flight",
                format!(
                    "must be between 1 and {MAX_IN_FLIGHT} (leave it out for {DEFAULT_MAX_IN_FLIGHT})"
                ),
            );
        }
    }

    if read(&f, "metadata") {
        spec.metadata = f
            .optional("metadata", "an object of string values")
            .unwrap_or_default();
        if spec.metadata.len() > MAX_METADATA {
            f.error("metadata", format!("at most {MAX_METADATA} entries"));
        }
    }

    let errors = f.finish(SUBSCRIPTION_FIELDS);
    if errors.is_empty() {
        Ok(spec)
    } else {
        Err(errors)
    }
}

fn parse_event_types(f: &mut Fields, raw: &[String], catalog: &Catalog) -> Vec<EventTypePattern> {
    if f.errors.iter().any(|e| e.field == f.path("event_types")) {
        return Vec::new();
    }
    if raw.is_empty() {
        f.error(
            "event_types",
            "must list at least one event type (or [\"*\"])",
        );
    }
    if raw.len() > MAX_EVENT_TYPES {
        f.error("event_types", format!("at most {MAX_EVENT_TYPES} entries"));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (i, s) in raw.iter().enumerate() {
        let key = format!("event_types[{i}]");
        match EventTypePattern::parse(s) {
            Err(e) => f.error(&key, format!("`{s}` is not a valid pattern: {e}")),
            Ok(EventTypePattern::Exact(name)) if catalog.get(&name).is_none() => f.error(
                &key,
                format!("unknown event `{name}`; GET /v1/event_types lists the catalog"),
            ),
            Ok(EventTypePattern::Prefix(prefix)) if !catalog.has_prefix(&prefix) => f.error(
                &key,
                format!("`{s}` matches no event of the catalog; GET /v1/event_types lists it"),
            ),
            Ok(pattern) => {
                if !out.contains(&pattern) {
                    out.push(pattern);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str, policy: &UrlPolicy) -> Result<Spec, Vec<FieldError>> {
        parse_spec(body.as_bytes(), Mode::Create, &Catalog::builtin(), policy)
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn health_goes_failing_then_disabled_and_recovers() {
        use time::macros::datetime;
        let spec = parse(
            r#"{"url": "https://hooks.example.com/w", "event_types": ["*"]}"#,
            &UrlPolicy::strict(),
        )
        .unwrap();
        let t0 = datetime!(2026-01-01 0:00 UTC);
        let day = std::time::Duration::from_secs(86_400);
        let mut s = Subscription::new("sub_1".into(), "t".into(), spec, "k", t0);
        let period = 5 * day;
        assert_eq!(s.health_after(true, t0, period), None, "healthy stays");
        let failing = s.health_after(false, t0, period).unwrap();
        assert_eq!(failing, HealthChange::Failing { since: t0 });
        s.apply_health(&failing);
        assert_eq!(s.status, Status::Failing);
        assert_eq!(s.health_after(false, t0 + 4 * day, period), None);
        assert_eq!(
            s.health_after(true, t0 + 4 * day, period),
            Some(HealthChange::Recovered)
        );
        let Some(HealthChange::Disabled { reason }) = s.health_after(false, t0 + period, period)
        else {
            panic!("disabled after the period");
        };
        assert!(reason.contains("2026-01-01T00:00:00Z"), "{reason}");
        s.apply_health(&HealthChange::Disabled { reason });
        assert!(!s.is_deliverable());
        assert_eq!(s.health_after(true, t0 + 6 * day, period), None);
        s.reset();
        assert_eq!((s.status, s.failing_since), (Status::Active, None));
    }

    #[test]
    fn minimal_and_full() {
        let s = parse(
            r#"{"url": "https://hooks.example.com/w", "event_types": ["*"]}"#,
            &UrlPolicy::strict(),
        )
        .unwrap();
        assert_eq!(s.method, Method::Post);
        assert!(s.enabled);
        assert_eq!(s.event_types, [EventTypePattern::All]);
        assert_eq!(s.auth, CallbackAuth::None);
        assert_eq!(s.retry_policy, None);

        let s = parse(
            r#"{"name": "tms", "url": "http://127.0.0.1:9/w", "method": "PUT", "enabled": false,
                "event_types": ["freights.publication.*", "freight_orders.order.created",
                                "freights.publication.*"],
                "filter": {"scopes": [{"predicates": [
                    {"attribute": "company_id", "comparator": "IN", "values": ["c-1"]}]}]},
                "auth": {"type": "bearer", "token": "t"},
                "rate_limit_per_second": 50,
                "retry_policy": {"delays": ["5s", "5m"]},
                "headers": {"X-Custom-Header": "v"}, "metadata": {"team": "ops"}}"#,
            &UrlPolicy::permissive(),
        )
        .unwrap();
        assert_eq!(s.method, Method::Put);
        assert!(!s.enabled);
        assert_eq!(s.event_types.len(), 2, "duplicates are folded");
        assert_eq!(s.headers["X-Custom-Header"], "v");
        assert_eq!(s.rate_limit_per_second, Some(50));
        assert_eq!(s.filter.unwrap().scopes.len(), 1);
        assert_eq!(s.retry_policy.unwrap().max_attempts(), 3);
    }

    #[test]
    fn a_secret_header_listed_twice_is_refused() {
        let errors = parse(
            r#"{"url": "https://a.example", "event_types": ["*"],
                "secret_headers": ["X-Sig", "x-other", "x-sig"]}"#,
            &UrlPolicy::strict(),
        )
        .unwrap_err();
        assert_eq!(fields(&errors), ["secret_headers[2]"]);
        assert!(errors[0].message.contains("listed twice"), "{errors:?}");
    }

    #[test]
    fn null_is_the_default_of_optional_fields_but_not_of_method_or_enabled() {
        let s = parse(
            r#"{"url": "https://a.example", "event_types": ["*"], "auth": null, "filter": null,
                "ordering": null, "max_in_flight": null, "headers": null}"#,
            &UrlPolicy::strict(),
        )
        .unwrap();
        assert_eq!((s.auth, s.max_in_flight), (CallbackAuth::None, 8));
        let errors = parse(
            r#"{"url": "https://a.example", "event_types": ["*"], "method": null, "enabled": null}"#,
            &UrlPolicy::strict(),
        )
        .unwrap_err();
        assert_eq!(fields(&errors), ["method", "enabled"]);
        assert!(errors[0].message.contains("leave it out for the default"));
    }

    #[test]
    fn ordering_and_max_in_flight() {
        let s = parse(
            r#"{"url": "https://a.example", "event_types": ["*"]}"#,
            &UrlPolicy::strict(),
        )
        .unwrap();
        assert_eq!((s.ordering, s.max_in_flight), (Ordering::Entity, 8));
        let s = parse(
            r#"{"url": "https://a.example", "event_types": ["*"], "ordering": "strict", "max_in_flight": 64}"#,
            &UrlPolicy::strict(),
        )
        .unwrap();
        assert_eq!((s.ordering, s.max_in_flight), (Ordering::Strict, 64));
        let errors = parse(
            r#"{"url": "https://a.example", "event_types": ["*"], "ordering": "fifo", "max_in_flight": 0}"#,
            &UrlPolicy::strict(),
        )
        .unwrap_err();
        assert_eq!(fields(&errors), ["ordering", "max_in_flight"]);
        assert!(
            errors[0].message.contains("\"strict\""),
            "{}",
            errors[0].message
        );
        assert!(
            errors[1].message.contains("between 1 and 64"),
            "{}",
            errors[1].message
        );
        let errors = parse(
            r#"{"url": "https://a.example", "event_types": ["*"], "ordering": 1, "max_in_flight": 65}"#,
            &UrlPolicy::strict(),
        )
        .unwrap_err();
        assert_eq!(fields(&errors), ["ordering", "max_in_flight"]);
        // A patch keeps what it leaves out; null resets to the default.
        let base = s;
        let patch = |body: &str| {
            parse_spec(
                body.as_bytes(),
                Mode::Patch(&base),
                &Catalog::builtin(),
                &UrlPolicy::strict(),
            )
            .unwrap()
        };
        let p = patch(r#"{"name": "x"}"#);
        assert_eq!((p.ordering, p.max_in_flight), (Ordering::Strict, 64));
        let p = patch(r#"{"ordering": null, "max_in_flight": null}"#);
        assert_eq!((p.ordering, p.max_in_flight), (Ordering::Entity, 8));
        let p = patch(r#"{"ordering": "none"}"#);
        assert_eq!((p.ordering, p.max_in_flight), (Ordering::None, 64));
    }

    #[test]
    fn reports_every_invalid_field() {
        let errors = parse(
            r#"{"url": "http://hooks.example.com", "method": "GET",
                "event_types": ["freights.nope", "bad*", "shipments.*"],
                "headers": {"Content-Type": "x", "Webhook-Id": "y", "bad name": "z"},
                "auth": {"type": "basic"}, "rate_limit_per_second": 0, "extra": 1}"#,
            &UrlPolicy::strict(),
        )
        .unwrap_err();
        assert_eq!(
            fields(&errors),
            [
                "url",
                "method",
                "event_types[0]",
                "event_types[1]",
                "event_types[2]",
                "auth.username",
                "auth.password",
                "headers.Content-Type",
                "headers.Webhook-Id",
                "headers.bad name",
                "rate_limit_per_second",
                "extra"
            ]
        );
        assert!(errors[0].message.contains("https"));
        assert!(errors[7].message.contains("set by Waybill"));
    }

    #[test]
    fn authorization_header_is_the_users_unless_auth_sets_it() {
        let ok = parse(
            r#"{"url": "https://a.example", "event_types": ["*"], "headers": {"Authorization": "Token x"}}"#,
            &UrlPolicy::strict(),
        );
        assert!(ok.is_ok());
        let errors = parse(
            r#"{"url": "https://a.example", "event_types": ["*"], "headers": {"Authorization": "Token x", "X-Key": "1"},
                "auth": {"type": "api_key", "header_name": "x-key", "header_value": "2"}}"#,
            &UrlPolicy::strict(),
        )
        .unwrap_err();
        assert_eq!(fields(&errors), ["headers.Authorization", "headers.X-Key"]);
        assert!(errors[1].message.contains("set by `auth`"));
    }

    #[test]
    fn required_fields() {
        let errors = parse("{}", &UrlPolicy::strict()).unwrap_err();
        assert_eq!(fields(&errors), ["url", "event_types"]);
        let errors = parse(
            r#"{"url": "https://a.example", "event_types": []}"#,
            &UrlPolicy::strict(),
        )
        .unwrap_err();
        assert!(errors[0].message.contains("at least one"));
        let errors = parse(r#"{"url": 5, "event_types": "x"}"#, &UrlPolicy::strict()).unwrap_err();
        assert_eq!(errors.len(), 2);
    }

    /// A stored credential is never sent to a new place: a masked
    /// credential or secret header is refused once the URL's origin, the
    /// `token_url` or the `api_key` `header_name` changed, and a PATCH that
    /// moves the URL without sending `auth` again is refused.
    #[test]
    fn masked_credentials_do_not_follow_a_new_target() {
        let catalog = Catalog::builtin();
        let policy = UrlPolicy::strict();
        let stored = |auth: &str| {
            parse(
                &format!(
                    r#"{{"url": "https://a.example/hook", "event_types": ["*"], "auth": {auth},
                        "headers": {{"X-Sig": "s1", "X-Team": "ops"}},
                        "secret_headers": ["x-sig"]}}"#
                ),
                &policy,
            )
            .unwrap()
        };
        let patch = |base: &Spec, body: &str| {
            parse_spec(body.as_bytes(), Mode::Patch(base), &catalog, &policy)
        };
        let put = |base: &Spec, body: &str| {
            parse_spec(body.as_bytes(), Mode::Replace(base), &catalog, &policy)
        };
        let bearer = stored(r#"{"type": "bearer", "token": "t"}"#);
        let bearer_masked = r#"{"type": "bearer", "token": "***"}"#;
        for url in [
            "https://elsewhere.example/hook",
            "https://a.example:8443/hook",
            "http://a.example/hook",
        ] {
            // PATCH of the URL alone: auth and secret headers must come again.
            let e = patch(&bearer, &format!(r#"{{"url": "{url}"}}"#)).unwrap_err();
            let f = fields(&e);
            assert!(
                f.contains(&"auth") && f.contains(&"headers"),
                "{url}: {e:?}"
            );
            // With the masks sent back: each masked field is named.
            let e = patch(
                &bearer,
                &format!(
                    r#"{{"url": "{url}", "auth": {bearer_masked},
                        "headers": {{"X-Sig": "***", "X-Team": "ops"}}}}"#
                ),
            )
            .unwrap_err();
            let mut f = fields(&e);
            f.retain(|f| *f != "url"); // http is refused too
            assert_eq!(f, ["auth.token", "headers.X-Sig"], "{url}: {e:?}");
            assert!(
                e.iter()
                    .any(|e| e.field == "auth.token" && e.message.contains("origin")),
                "{e:?}"
            );
            let e = put(
                &bearer,
                &format!(r#"{{"url": "{url}", "event_types": ["*"], "auth": {bearer_masked}}}"#),
            )
            .unwrap_err();
            assert!(fields(&e).contains(&"auth.token"), "{url}: {e:?}");
        }
        // Sent again: accepted.
        let moved = patch(
            &bearer,
            r#"{"url": "https://elsewhere.example/hook", "auth": {"type": "bearer", "token": "t2"},
                "headers": {"X-Team": "ops"}}"#,
        )
        .unwrap();
        assert_eq!(moved.auth, CallbackAuth::Bearer { token: "t2".into() });
        // Same origin, other path: the masks keep the stored values.
        let kept = patch(
            &bearer,
            r#"{"url": "https://a.example/v2", "auth": {"type": "bearer", "token": "***"},
                "headers": {"X-Sig": "***", "X-Team": "ops"}}"#,
        )
        .unwrap();
        assert_eq!(kept.auth, bearer.auth);
        assert_eq!(kept.headers, bearer.headers);
        // A mask for a header that is not secret, or not stored, is refused.
        let e = patch(&bearer, r#"{"headers": {"X-Team": "***"}}"#).unwrap_err();
        assert_eq!(fields(&e), ["headers.X-Team"]);
        assert!(e[0].message.contains("masked form"));

        // api_key: a new header_name with the masked value.
        let api_key = stored(r#"{"type": "api_key", "header_name": "X-Key", "header_value": "k"}"#);
        let e = patch(
            &api_key,
            r#"{"auth": {"type": "api_key", "header_name": "X-Other", "header_value": "***"}}"#,
        )
        .unwrap_err();
        assert_eq!(fields(&e), ["auth.header_value"]);
        assert!(e[0].message.contains("`header_name`"), "{e:?}");
        let same = patch(
            &api_key,
            r#"{"auth": {"type": "api_key", "header_name": "x-key", "header_value": "***"}}"#,
        )
        .unwrap();
        assert_eq!(
            same.auth.secrets(),
            ["k"],
            "a name differing in case is the same header"
        );

        // oauth2: a new token_url with the masked client secret.
        let oauth2 = stored(
            r#"{"type": "oauth2", "token_url": "https://idp.example/token", "client_id": "c", "client_secret": "cs"}"#,
        );
        let e = patch(
            &oauth2,
            r#"{"auth": {"type": "oauth2", "token_url": "https://evil.example/token", "client_id": "c", "client_secret": "***"}}"#,
        )
        .unwrap_err();
        assert_eq!(fields(&e), ["auth.client_secret"]);
        assert!(e[0].message.contains("`token_url`"), "{e:?}");

        // Hop-by-hop headers are refused; secret values are masked in answers.
        let e = parse(
            r#"{"url": "https://a.example", "event_types": ["*"],
                "headers": {"Upgrade": "h2c", "TE": "trailers", "Expect": "100-continue",
                            "Keep-Alive": "1", "Proxy-Authorization": "Basic x"}}"#,
            &policy,
        )
        .unwrap_err();
        assert_eq!(e.len(), 5, "{e:?}");
        assert!(e.iter().all(|e| e.message.contains("hop-by-hop")), "{e:?}");
        let printed = format!("{bearer:?}");
        assert!(
            !printed.contains("s1") && !printed.contains("\"t\""),
            "{printed}"
        );
        let shown = bearer.masked_headers();
        assert_eq!(shown["X-Sig"], "***");
        assert_eq!(shown["X-Team"], "ops");

        // With `auth: none`, a custom Authorization is a credential too.
        let own = parse(
            r#"{"url": "https://a.example", "event_types": ["*"],
                "headers": {"Authorization": "Token z"}}"#,
            &policy,
        )
        .unwrap();
        assert_eq!(own.masked_headers()["Authorization"], "***");
        let e = patch(&own, r#"{"url": "https://b.example"}"#).unwrap_err();
        assert_eq!(fields(&e), ["headers"]);
        let e = patch(
            &own,
            r#"{"url": "https://b.example", "headers": {"Authorization": "***"}}"#,
        )
        .unwrap_err();
        assert_eq!(fields(&e), ["headers.Authorization"]);
        let kept = patch(&own, r#"{"headers": {"Authorization": "***"}}"#).unwrap();
        assert_eq!(kept.headers["Authorization"], "Token z");
    }

    #[test]
    fn patch_and_replace() {
        let catalog = Catalog::builtin();
        let policy = UrlPolicy::strict();
        let base = parse(
            r#"{"name": "n", "url": "https://a.example", "event_types": ["*"],
                "headers": {"X-A": "1"}, "auth": {"type": "bearer", "token": "t"},
                "rate_limit_per_second": 5}"#,
            &policy,
        )
        .unwrap();

        let patched = parse_spec(
            br#"{"url": "https://a.example/v2", "headers": {}}"#,
            Mode::Patch(&base),
            &catalog,
            &policy,
        )
        .unwrap();
        assert_eq!(patched.url, "https://a.example/v2");
        assert!(patched.headers.is_empty(), "{{}} clears headers");
        assert_eq!(patched.name, "n", "absent stays");
        assert_eq!(patched.auth, base.auth);
        assert_eq!(patched.rate_limit_per_second, Some(5));

        let patched = parse_spec(
            br#"{"rate_limit_per_second": null, "auth": {"type": "bearer", "token": "***"}}"#,
            Mode::Patch(&base),
            &catalog,
            &policy,
        )
        .unwrap();
        assert_eq!(patched.rate_limit_per_second, None, "null resets");
        assert_eq!(patched.auth, base.auth, "masked token kept");

        let errors = parse_spec(
            br#"{"url": null, "event_types": ["nope"]}"#,
            Mode::Patch(&base),
            &catalog,
            &policy,
        )
        .unwrap_err();
        assert_eq!(fields(&errors), ["url", "event_types[0]"]);

        // A patch of headers or auth is checked as a create is (once it
        // was not: the fields were consumed before their check).
        let many: serde_json::Map<String, serde_json::Value> = (0..=MAX_HEADERS)
            .map(|i| (format!("X-H{i}"), serde_json::json!("v")))
            .collect();
        let errors = parse_spec(
            serde_json::json!({"headers": many}).to_string().as_bytes(),
            Mode::Patch(&base),
            &catalog,
            &policy,
        )
        .unwrap_err();
        assert_eq!(fields(&errors), ["headers"]);
        let errors = parse_spec(
            br#"{"headers": {"Content-Type": "text/plain"}}"#,
            Mode::Patch(&base),
            &catalog,
            &policy,
        )
        .unwrap_err();
        assert_eq!(fields(&errors), ["headers.Content-Type"]);
        let errors = parse_spec(
            br#"{"auth": {"type": "api_key", "header_name": "X-A", "header_value": "k"}}"#,
            Mode::Patch(&base),
            &catalog,
            &policy,
        )
        .unwrap_err();
        assert_eq!(fields(&errors), ["headers.X-A"]);

        let replaced = parse_spec(
            br#"{"url": "https://c.example", "event_types": ["freights.*"]}"#,
            Mode::Replace(&base),
            &catalog,
            &policy,
        )
        .unwrap();
        assert_eq!(replaced.name, "");
        assert!(replaced.headers.is_empty());
        assert_eq!(replaced.auth, CallbackAuth::None);
        assert_eq!(replaced.rate_limit_per_second, None);
        let errors =
            parse_spec(br#"{"name": "x"}"#, Mode::Replace(&base), &catalog, &policy).unwrap_err();
        assert_eq!(fields(&errors), ["url", "event_types"]);
    }

    #[test]
    fn rotation_keeps_the_old_secret_for_the_overlap() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let mut s = Subscription::new(
            "sub_1".into(),
            "t".into(),
            Spec::new("https://a.example", vec![EventTypePattern::All]),
            "key_1",
            now,
        );
        let old = s.signing_secret.clone();
        s.rotate_secret(now, std::time::Duration::from_secs(60));
        assert_ne!(s.signing_secret, old);
        assert_eq!(s.signing_secrets(now).len(), 2);
        assert_eq!(s.signing_secrets(now)[1], &old);
        assert_eq!(
            s.signing_secrets(now + std::time::Duration::from_secs(60))
                .len(),
            1
        );
    }
}
