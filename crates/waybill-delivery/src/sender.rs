//! One HTTP attempt of one delivery: auth (OAuth2 token with one refresh on
//! `401`), the signed request, the response status, `Retry-After` and the
//! first bytes of the body.
//!
//! The HTTP client resolves host names through [`PolicyResolver`], which
//! refuses a name if any of its addresses is not allowed by the URL policy
//! and hands the connector exactly the addresses it checked, so a name
//! cannot be re-resolved to a private address between check and connect.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use time::OffsetDateTime;
use waybill_core::auth::CallbackAuth;
use waybill_core::event::Event;
use waybill_core::outcome::{ErrorClass, Outcome, parse_retry_after};
use waybill_core::subscription::Subscription;
use waybill_core::trace::TraceParent;
use waybill_core::url_policy::UrlPolicy;

use crate::config::DeliveryConfig;
use crate::oauth2::Tokens;
use crate::request;

/// Bytes of the response body kept in the attempt record.
pub const RESPONSE_EXCERPT_BYTES: usize = 4096;

/// What one attempt produced.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// For the retry decision.
    pub outcome: Outcome,
    /// HTTP status, 0 without a response.
    pub status: u16,
    /// `""` on success; else `status`, `timeout`, `connect`, `request`,
    /// `oauth2` or `url_policy`.
    pub error_class: &'static str,
    /// What went wrong, without secrets or URLs.
    pub error: String,
    /// The first bytes of the response body.
    pub excerpt: String,
    /// When it started.
    pub started: OffsetDateTime,
    /// How long it took.
    pub duration: Duration,
}

/// Sends webhook requests; shared by every partition task.
pub struct Sender {
    client: reqwest::Client,
    url_policy: UrlPolicy,
    tokens: Tokens,
}

impl Sender {
    /// A sender with a pooled client (keep-alive, timeouts, no redirects)
    /// whose name resolution obeys `url_policy`.
    pub fn new(config: &DeliveryConfig, url_policy: UrlPolicy) -> reqwest::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(32)
            .tcp_nodelay(true)
            .dns_resolver(Arc::new(PolicyResolver {
                policy: url_policy.clone(),
            }))
            .build()?;
        Ok(Self {
            client,
            url_policy,
            tokens: Tokens::default(),
        })
    }

    /// Delivers `event` to `subscription` once; `trace` (the attempt's span
    /// context) is sent as `traceparent`.
    pub async fn attempt(
        &self,
        subscription: &Subscription,
        delivery_id: &str,
        event: &Event,
        trace: &TraceParent,
    ) -> Attempt {
        let started = OffsetDateTime::now_utc();
        let clock = Instant::now();
        let mut attempt = self
            .authenticated(subscription, delivery_id, event, trace)
            .await;
        attempt.started = started;
        attempt.duration = clock.elapsed();
        attempt
    }

    /// The attempt with its auth: an OAuth2 token is fetched (or taken from
    /// the cache) and refreshed once if the endpoint answers 401.
    async fn authenticated(
        &self,
        subscription: &Subscription,
        delivery_id: &str,
        event: &Event,
        trace: &TraceParent,
    ) -> Attempt {
        let CallbackAuth::OAuth2(settings) = &subscription.spec.auth else {
            return self
                .send(subscription, delivery_id, event, trace, None)
                .await;
        };
        // Tokens are cached per subscription and settings: changed
        // settings get a new token, other changes (a rotation) do not.
        let key = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            settings.hash(&mut h);
            format!("{}#{:x}", subscription.id, h.finish())
        };
        let mut refreshed = false;
        loop {
            let token = match self
                .tokens
                .get(&self.client, &self.url_policy, &key, settings)
                .await
            {
                Ok(token) => token,
                Err(e) => return Attempt::failed(ErrorClass::Oauth2, e.to_string()),
            };
            let result = self
                .send(subscription, delivery_id, event, trace, Some(&token))
                .await;
            if result.status != 401 || refreshed {
                return result;
            }
            // The endpoint no longer accepts the cached token: fetch a new one once.
            self.tokens.invalidate(&key).await;
            refreshed = true;
        }
    }

    async fn send(
        &self,
        subscription: &Subscription,
        delivery_id: &str,
        event: &Event,
        trace: &TraceParent,
        oauth2_token: Option<&str>,
    ) -> Attempt {
        let url = match self.url_policy.check_url(&subscription.spec.url) {
            Ok(url) => url,
            Err(message) => {
                return Attempt::failed(ErrorClass::UrlPolicy, format!("url {message}"));
            }
        };
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let req = request::build(subscription, event, delivery_id, now, trace, oauth2_token);
        let method = if req.method == "PUT" {
            reqwest::Method::PUT
        } else {
            reqwest::Method::POST
        };
        let mut builder = self.client.request(method, url);
        for (name, value) in &req.headers {
            builder = builder.header(name, value);
        }
        let mut response = match builder.body(req.body).send().await {
            Ok(r) => r,
            Err(e) => {
                let class = if e.is_timeout() {
                    ErrorClass::Timeout
                } else if e.is_connect() {
                    ErrorClass::Connect
                } else {
                    ErrorClass::Request
                };
                // reqwest errors name the URL, which may carry a token in its
                // query: keep only the cause.
                return Attempt::failed(class, describe(&e.without_url()));
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let mut excerpt = Vec::new();
        while excerpt.len() < RESPONSE_EXCERPT_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => excerpt.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        excerpt.truncate(RESPONSE_EXCERPT_BYTES);
        let outcome = Outcome::response(status, retry_after);
        let success = outcome.is_success();
        Attempt {
            outcome,
            status,
            error_class: if success {
                ""
            } else {
                ErrorClass::Status.as_str()
            },
            error: if success {
                String::new()
            } else {
                format!("HTTP {status}")
            },
            excerpt: String::from_utf8_lossy(&excerpt).into_owned(),
            started: OffsetDateTime::now_utc(),
            duration: Duration::ZERO,
        }
    }
}

impl Attempt {
    fn failed(class: ErrorClass, error: String) -> Self {
        Self {
            outcome: Outcome::NoResponse,
            status: 0,
            error_class: class.as_str(),
            error,
            excerpt: String::new(),
            started: OffsetDateTime::now_utc(),
            duration: Duration::ZERO,
        }
    }

    /// Whether the receiver answered 2xx.
    pub fn succeeded(&self) -> bool {
        self.outcome.is_success()
    }
}

/// Name resolution that refuses names pointing where the URL policy forbids.
struct PolicyResolver {
    policy: UrlPolicy,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for addr in &addrs {
                if let Err(message) = policy.check_ip(addr.ip()) {
                    return Err(
                        format!("host `{host}` resolves to an address that {message}").into(),
                    );
                }
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// An error and its causes on one line.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
