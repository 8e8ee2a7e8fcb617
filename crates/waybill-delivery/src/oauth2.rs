//! OAuth2 client-credentials tokens for callback auth.
//!
//! A token is fetched from the subscription's `token_url` (form-encoded
//! `grant_type=client_credentials`, client id and secret, scope, extra
//! parameters), cached in `moka` until shortly before it expires, and shared
//! by every partition task of the process; concurrent deliveries of one
//! subscription wait for a single token request. A `401` from the endpoint
//! drops the cached token so the next attempt fetches a fresh one. A failed
//! token request fails the attempt, which is then retried like any other
//! failed delivery. Neither the secret nor the token is ever logged: errors
//! carry the token endpoint's status only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use serde::Deserialize;
use waybill_core::auth::OAuth2;
use waybill_core::url_policy::UrlPolicy;

/// A token is renewed this long before it expires.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// Lifetime assumed when the token endpoint gives none.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// Cached tokens at most (least used dropped first).
const MAX_TOKENS: u64 = 10_000;
/// Largest token answer read: a token endpoint is the tenant's, and a
/// delivery process serves every tenant.
pub const MAX_TOKEN_ANSWER_BYTES: usize = 64 * 1024;

/// Why no token could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// The token URL is refused by the deployment's URL policy.
    #[error("token_url {0}")]
    Policy(String),
    /// The token endpoint could not be reached.
    #[error("token endpoint unreachable: {0}")]
    Unreachable(String),
    /// The token endpoint refused or answered something unusable.
    #[error("token endpoint answered HTTP {0}")]
    Refused(u16),
    /// The answer had no `access_token`.
    #[error("token endpoint answer has no access_token")]
    Malformed,
    /// The answer was longer than [`MAX_TOKEN_ANSWER_BYTES`].
    #[error("token endpoint answer exceeds {} KiB", MAX_TOKEN_ANSWER_BYTES / 1024)]
    TooLarge,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// A token and how long it may be used.
#[derive(Clone)]
struct Token {
    value: String,
    usable_for: Duration,
}

/// Each token expires from the cache when it stops being usable.
struct UntilUnusable;

impl Expiry<String, Token> for UntilUnusable {
    fn expire_after_create(&self, _: &String, token: &Token, _: Instant) -> Option<Duration> {
        Some(token.usable_for)
    }
}

/// Tokens by subscription (and settings), shared across tasks.
pub struct Tokens {
    cache: Cache<String, Token>,
}

impl Default for Tokens {
    fn default() -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(MAX_TOKENS)
                .expire_after(UntilUnusable)
                .build(),
        }
    }
}

impl Tokens {
    /// A valid token for `settings` of subscription `key`, fetched if the
    /// cache has none (once, however many tasks ask at the same time).
    pub async fn get(
        &self,
        client: &reqwest::Client,
        policy: &UrlPolicy,
        key: &str,
        settings: &OAuth2,
    ) -> Result<String, TokenError> {
        self.cache
            .try_get_with_by_ref(key, fetch(client, policy, settings))
            .await
            .map(|token| token.value)
            .map_err(|e: Arc<TokenError>| (*e).clone())
    }

    /// Drops the cached token of `key` (the endpoint answered `401`).
    pub async fn invalidate(&self, key: &str) {
        self.cache.invalidate(key).await;
    }
}

/// Requests a token from the token endpoint.
async fn fetch(
    client: &reqwest::Client,
    policy: &UrlPolicy,
    settings: &OAuth2,
) -> Result<Token, TokenError> {
    let url = policy
        .check_url(&settings.token_url)
        .map_err(TokenError::Policy)?;
    let mut form: Vec<(&str, &str)> = vec![
        ("grant_type", "client_credentials"),
        ("client_id", &settings.client_id),
        ("client_secret", &settings.client_secret),
    ];
    if let Some(scope) = &settings.scope {
        form.push(("scope", scope));
    }
    form.extend(
        settings
            .extra_params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    let mut response = client
        .post(url)
        .header("accept", "application/json")
        .form(&form)
        .send()
        .await
        .map_err(|e| match crate::sender::policy_refusal(&e) {
            Some(refused) => TokenError::Policy(refused.0.clone()),
            None => TokenError::Unreachable(e.without_url().to_string()),
        })?;
    let status = response.status();
    if !status.is_success() {
        return Err(TokenError::Refused(status.as_u16()));
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_TOKEN_ANSWER_BYTES as u64)
    {
        return Err(TokenError::TooLarge);
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| TokenError::Unreachable(e.without_url().to_string()))?
    {
        if bytes.len() + chunk.len() > MAX_TOKEN_ANSWER_BYTES {
            return Err(TokenError::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    let body: TokenResponse = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    if body.access_token.is_empty() {
        return Err(TokenError::Malformed);
    }
    let lifetime = body
        .expires_in
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_LIFETIME);
    Ok(Token {
        value: body.access_token,
        usable_for: lifetime.saturating_sub(EXPIRY_MARGIN),
    })
}
