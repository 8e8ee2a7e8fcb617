//! OAuth2 client-credentials tokens for callback auth.
//!
//! A token is fetched from the subscription's `token_url` (form-encoded
//! `grant_type=client_credentials`, client id and secret, scope, extra
//! parameters), cached until shortly before it expires, and shared by every
//! partition task of the process. A `401` from the endpoint drops the cached
//! token so the next attempt fetches a fresh one. Neither the secret nor the
//! token is ever logged: errors carry the token endpoint's status only.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use waybill_core::auth::OAuth2;
use waybill_core::url_policy::UrlPolicy;

/// A token is renewed this long before it expires.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// Lifetime assumed when the token endpoint gives none.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// Cached tokens at most (oldest dropped first).
const MAX_TOKENS: usize = 10_000;

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
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
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Tokens by subscription (and settings revision), shared across tasks.
#[derive(Default)]
pub struct Tokens {
    cache: Mutex<HashMap<String, (String, Instant)>>,
}

impl Tokens {
    /// A valid token for `settings` of subscription `key`, fetched if the
    /// cache has none.
    pub async fn get(
        &self,
        client: &reqwest::Client,
        policy: &UrlPolicy,
        key: &str,
        settings: &OAuth2,
    ) -> Result<String, TokenError> {
        if let Some((token, until)) = self.cache.lock().expect("token cache").get(key)
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
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
        let response = client
            .post(url)
            .header("accept", "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| TokenError::Unreachable(e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(TokenError::Refused(status.as_u16()));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| TokenError::Unreachable(e.without_url().to_string()))?;
        let body: TokenResponse =
            serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
        if body.access_token.is_empty() {
            return Err(TokenError::Malformed);
        }
        let lifetime = body
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_LIFETIME);
        let until = Instant::now() + lifetime.saturating_sub(EXPIRY_MARGIN);
        let mut cache = self.cache.lock().expect("token cache");
        if cache.len() >= MAX_TOKENS {
            let now = Instant::now();
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= MAX_TOKENS {
                cache.clear();
            }
        }
        cache.insert(key.to_owned(), (body.access_token.clone(), until));
        Ok(body.access_token)
    }

    /// Drops the cached token of `key` (the endpoint answered `401`).
    pub fn invalidate(&self, key: &str) {
        self.cache.lock().expect("token cache").remove(key);
    }
}
