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
use waybill_runtime::dns::{Dns, Unusable};

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
        Self::with_dns(config, url_policy, Dns::system())
    }

    /// The same, resolving names through `dns`. No proxy is used unless
    /// `delivery.proxy` names one: the environment's `HTTP(S)_PROXY` and
    /// `ALL_PROXY` are ignored, since a proxy resolves names the policy
    /// would never see.
    pub fn with_dns(
        config: &DeliveryConfig,
        url_policy: UrlPolicy,
        dns: Dns,
    ) -> reqwest::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(32)
            .tcp_nodelay(true)
            .dns_resolver(Arc::new(PolicyResolver {
                policy: url_policy.clone(),
                dns,
            }));
        builder = match &config.proxy {
            Some(proxy) => builder.proxy(reqwest::Proxy::all(&proxy.0)?),
            None => builder.no_proxy(),
        };
        let client = builder.build()?;
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
                if let Some(refused) = policy_refusal(&e) {
                    return Attempt::failed(ErrorClass::UrlPolicy, refused.0.clone());
                }
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
    dns: Dns,
}

/// A resolved host the policy refused; its text is the tenant's (no address).
#[derive(Debug)]
pub(crate) struct PolicyRefused(pub(crate) String);

impl std::fmt::Display for PolicyRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyRefused {}

/// The policy refusal somewhere in a request error's causes.
pub(crate) fn policy_refusal<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a PolicyRefused> {
    let mut source: Option<&'a (dyn std::error::Error + 'static)> = Some(e);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<PolicyRefused>() {
            return Some(refused);
        }
        source = cause.source();
    }
    None
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let dns = self.dns.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            match dns.resolve_allowed(&policy, &host).await {
                Ok(ips) => {
                    let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
                    Ok(addrs)
                }
                Err(Unusable::Refused(refusal)) => Err(Box::new(PolicyRefused(refusal.public))
                    as Box<dyn std::error::Error + Send + Sync>),
                Err(Unusable::Unresolved(why)) => {
                    Err(format!("host `{host}` does not resolve ({why})").into())
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::net::IpAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use waybill_core::auth::OAuth2;
    use waybill_core::event::EntityRef;
    use waybill_core::pattern::EventTypePattern;
    use waybill_core::subscription::Spec;

    fn subscription(url: &str, auth: CallbackAuth) -> Subscription {
        let mut spec = Spec::new(url, vec![EventTypePattern::All]);
        spec.auth = auth;
        Subscription::new(
            "sub_1".into(),
            "t".into(),
            spec,
            "key",
            OffsetDateTime::now_utc(),
        )
    }

    fn event() -> Event {
        Event {
            id: "e1".into(),
            tenant_id: "t".into(),
            name: "freights.freight.create".into(),
            occurred_at: OffsetDateTime::UNIX_EPOCH,
            entity: EntityRef {
                kind: "freight".into(),
                id: "f1".into(),
            },
            attributes: BTreeMap::new(),
            callback_url: None,
            payload: b"{}".to_vec(),
        }
    }

    /// The production address rules with http and any port, so the tests
    /// can use plain listeners.
    fn public_only() -> UrlPolicy {
        UrlPolicy {
            allow_http: true,
            allow_any_port: true,
            ..UrlPolicy::strict()
        }
    }

    /// A raw HTTP/1.1 server answering every request with `answer`; counts
    /// requests.
    async fn serve(answer: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    if socket.read(&mut buf).await.unwrap_or(0) > 0 {
                        seen.fetch_add(1, Ordering::SeqCst);
                        let _ = socket.write_all(answer).await;
                    }
                });
            }
        });
        (addr, count)
    }

    /// At send time, through the HTTP client's resolver: a name whose A or
    /// AAAA answer is in any refused range is never connected to, the
    /// attempt fails with class `url_policy`, and its error names no address.
    #[tokio::test]
    async fn resolved_names_in_refused_ranges_are_never_called() {
        let answers: Vec<IpAddr> = [
            "127.0.0.1",
            "10.0.0.5",
            "169.254.169.254",
            "192.0.0.1",
            "100.64.0.1",
            "::1",
            "::127.0.0.1",
            "::ffff:10.0.0.5",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::a00:5",
            "64:ff9b:1::1",
            "2002:7f00:1::",
            "2001:0:a00:5::ffff:ffff",
            "fec0::1",
            "fd00::1",
            "fe80::1",
        ]
        .iter()
        .map(|ip| ip.parse().unwrap())
        .collect();
        let table = answers
            .iter()
            .enumerate()
            .map(|(i, ip)| (format!("h{i}.test"), vec!["8.8.8.8".parse().unwrap(), *ip]));
        let sender =
            Sender::with_dns(&DeliveryConfig::default(), public_only(), Dns::fixed(table)).unwrap();
        for (i, ip) in answers.iter().enumerate() {
            let s = subscription(&format!("http://h{i}.test:9/hook"), CallbackAuth::None);
            let a = sender
                .attempt(&s, "msg_1", &event(), &TraceParent::new_root())
                .await;
            assert_eq!(a.error_class, "url_policy", "{ip}: {a:?}");
            assert!(a.error.contains(&format!("h{i}.test")), "{ip}: {}", a.error);
            assert!(!a.error.contains(&ip.to_string()), "{ip}: {}", a.error);
        }
    }

    /// The resolver's answers are the addresses connected to: a fixed
    /// answer for a made-up name reaches the listener it names.
    #[tokio::test]
    async fn allowed_answers_are_the_addresses_connected_to() {
        let (addr, count) = serve(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n").await;
        let sender = Sender::with_dns(
            &DeliveryConfig::default(),
            UrlPolicy::permissive(),
            Dns::fixed([("receiver.test".to_owned(), vec![addr.ip()])]),
        )
        .unwrap();
        let s = subscription(
            &format!("http://receiver.test:{}/hook", addr.port()),
            CallbackAuth::None,
        );
        let a = sender
            .attempt(&s, "msg_1", &event(), &TraceParent::new_root())
            .await;
        assert_eq!(a.status, 204, "{a:?}");
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    /// A token endpoint streaming an endless answer fails the attempt with
    /// class `oauth2` once 64 KiB were read; so does one announcing more.
    #[tokio::test]
    async fn oauth2_token_answers_are_capped() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endless = listener.local_addr().unwrap();
        let sent = Arc::new(AtomicUsize::new(0));
        let counter = sent.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let _ = socket.read(&mut buf).await;
                    let head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                    if socket.write_all(head).await.is_err() {
                        return;
                    }
                    let chunk = format!("{:x}\r\n{}\r\n", 8192, " ".repeat(8192));
                    while socket.write_all(chunk.as_bytes()).await.is_ok() {
                        counter.fetch_add(8192, Ordering::SeqCst);
                        if counter.load(Ordering::SeqCst) > 64 * 1024 * 1024 {
                            return;
                        }
                    }
                });
            }
        });
        let (announced, _) = serve(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000000000\r\n\r\n{",
        )
        .await;
        let (receiver, calls) = serve(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        let sender = Sender::new(&DeliveryConfig::default(), UrlPolicy::permissive()).unwrap();
        for token_endpoint in [endless, announced] {
            let s = subscription(
                &format!("http://{receiver}/hook"),
                CallbackAuth::OAuth2(OAuth2 {
                    token_url: format!("http://{token_endpoint}/token"),
                    client_id: "c".into(),
                    client_secret: "s".into(),
                    scope: None,
                    extra_params: BTreeMap::new(),
                }),
            );
            let a = sender
                .attempt(&s, "msg_1", &event(), &TraceParent::new_root())
                .await;
            assert_eq!(a.error_class, "oauth2", "{a:?}");
            assert!(a.error.contains("64 KiB"), "{}", a.error);
        }
        assert!(
            // What the socket buffers absorbed, not what was read.
            sent.load(Ordering::SeqCst) < 16 * 1024 * 1024,
            "stopped reading early: {} bytes sent",
            sent.load(Ordering::SeqCst)
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "no webhook without a token"
        );
    }

    /// `HTTP_PROXY` and friends are ignored; `delivery.proxy` is used.
    /// The environment is set on a child run of this test binary, since
    /// the variables are the process's.
    #[tokio::test]
    async fn proxies_only_from_the_configuration() {
        if std::env::var_os("WAYBILL_TEST_PROXY_CHILD").is_some() {
            return;
        }
        let (proxy, proxied) = serve(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n").await;
        let (receiver, direct) = serve(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args([
                "--exact",
                "sender::tests::proxy_child",
                "--ignored",
                "--nocapture",
            ])
            .env("WAYBILL_TEST_PROXY_CHILD", "1")
            .env("WAYBILL_TEST_RECEIVER", format!("http://{receiver}/hook"))
            .env("HTTP_PROXY", format!("http://{proxy}"))
            .env("http_proxy", format!("http://{proxy}"))
            .env("HTTPS_PROXY", format!("http://{proxy}"))
            .env("ALL_PROXY", format!("http://{proxy}"))
            .env_remove("NO_PROXY")
            .env_remove("no_proxy");
        let out = tokio::task::spawn_blocking(move || child.output())
            .await
            .unwrap()
            .unwrap();
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{printed}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(printed.contains("1 passed"), "{printed}");
        assert!(printed.contains("status 200"), "{printed}");
        assert_eq!(direct.load(Ordering::SeqCst), 1);
        assert_eq!(
            proxied.load(Ordering::SeqCst),
            0,
            "the environment's proxy is ignored"
        );

        let config = DeliveryConfig {
            proxy: Some(crate::config::ProxyUrl(format!("http://{proxy}"))),
            ..DeliveryConfig::default()
        };
        let sender = Sender::new(&config, UrlPolicy::permissive()).unwrap();
        let s = subscription(&format!("http://{receiver}/hook"), CallbackAuth::None);
        let a = sender
            .attempt(&s, "msg_1", &event(), &TraceParent::new_root())
            .await;
        assert_eq!(a.status, 202, "{a:?}");
        assert_eq!(
            proxied.load(Ordering::SeqCst),
            1,
            "the configured proxy is used"
        );
    }

    #[tokio::test]
    #[ignore = "run by proxies_only_from_the_configuration"]
    #[allow(clippy::print_stdout)] // the parent test reads it
    async fn proxy_child() {
        let Ok(url) = std::env::var("WAYBILL_TEST_RECEIVER") else {
            return;
        };
        let sender = Sender::new(&DeliveryConfig::default(), UrlPolicy::permissive()).unwrap();
        let a = sender
            .attempt(
                &subscription(&url, CallbackAuth::None),
                "msg_1",
                &event(),
                &TraceParent::new_root(),
            )
            .await;
        println!("status {}", a.status);
    }
}
