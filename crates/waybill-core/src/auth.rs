//! How Waybill authenticates to a subscriber's endpoint.
//!
//! The five kinds the seed platforms offer between them: none, HTTP basic,
//! an API-key header (name and value), a bearer token, and OAuth2 client
//! credentials. Credentials are held in clear only in memory; on topics they
//! are sealed (see `sealing`) and in API answers they are masked.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::fields::Fields;
use crate::url_policy::UrlPolicy;

/// What a masked credential reads as in API answers. Sending it back
/// unchanged (GET, edit, PUT) keeps the stored credential.
pub const MASK: &str = "***";

/// The `type` values, in the order the API documents them.
pub const AUTH_TYPES: &[&str] = &["none", "basic", "api_key", "bearer", "oauth2"];

/// Longest credential or header value accepted.
const MAX_CREDENTIAL_LEN: usize = 4096;

/// Callback authentication of a subscription. `Debug` shows the masked
/// form: a logged subscription never carries its credentials.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum CallbackAuth {
    /// No authentication header.
    #[default]
    None,
    /// `Authorization: Basic base64(username:password)`.
    Basic {
        /// User name.
        username: String,
        /// Password (secret).
        password: String,
    },
    /// A header carrying a key, e.g. `X-Api-Key: ...`.
    ApiKey {
        /// Header name.
        header_name: String,
        /// Header value (secret).
        header_value: String,
    },
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token (secret).
        token: String,
    },
    /// OAuth2 client credentials: a token fetched from `token_url`.
    OAuth2(OAuth2),
}

/// OAuth2 client-credentials settings (`Debug` masks the client secret).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct OAuth2 {
    /// Token endpoint.
    pub token_url: String,
    /// Client id.
    pub client_id: String,
    /// Client secret (secret).
    pub client_secret: String,
    /// Requested scope, if any.
    pub scope: Option<String>,
    /// Extra form parameters of the token request (e.g. `audience`).
    pub extra_params: BTreeMap<String, String>,
}

impl std::fmt::Debug for CallbackAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CallbackAuth({})", self.masked())
    }
}

impl std::fmt::Debug for OAuth2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            token_url,
            client_id,
            client_secret: _,
            scope,
            extra_params,
        } = self;
        f.debug_struct("OAuth2")
            .field("token_url", token_url)
            .field("client_id", client_id)
            .field("client_secret", &MASK)
            .field("scope", scope)
            .field("extra_params", extra_params)
            .finish()
    }
}

impl CallbackAuth {
    /// The `type` of this auth.
    pub fn kind(&self) -> &'static str {
        match self {
            CallbackAuth::None => "none",
            CallbackAuth::Basic { .. } => "basic",
            CallbackAuth::ApiKey { .. } => "api_key",
            CallbackAuth::Bearer { .. } => "bearer",
            CallbackAuth::OAuth2(_) => "oauth2",
        }
    }

    /// The header this auth sets, lower-cased, if any.
    pub fn header_name(&self) -> Option<String> {
        match self {
            CallbackAuth::None => None,
            CallbackAuth::ApiKey { header_name, .. } => Some(header_name.to_ascii_lowercase()),
            _ => Some("authorization".to_owned()),
        }
    }

    /// The API form, with every credential replaced by [`MASK`].
    pub fn masked(&self) -> Value {
        match self {
            CallbackAuth::None => json!({"type": "none"}),
            CallbackAuth::Basic { username, .. } => {
                json!({"type": "basic", "username": username, "password": MASK})
            }
            CallbackAuth::ApiKey { header_name, .. } => {
                json!({"type": "api_key", "header_name": header_name, "header_value": MASK})
            }
            CallbackAuth::Bearer { .. } => json!({"type": "bearer", "token": MASK}),
            CallbackAuth::OAuth2(o) => json!({
                "type": "oauth2",
                "token_url": o.token_url,
                "client_id": o.client_id,
                "client_secret": MASK,
                "scope": o.scope,
                "extra_params": o.extra_params,
            }),
        }
    }

    /// Every credential it holds, for tests that look for leaks.
    pub fn secrets(&self) -> Vec<&str> {
        match self {
            CallbackAuth::None => vec![],
            CallbackAuth::Basic { password, .. } => vec![password],
            CallbackAuth::ApiKey { header_value, .. } => vec![header_value],
            CallbackAuth::Bearer { token } => vec![token],
            CallbackAuth::OAuth2(o) => vec![&o.client_secret],
        }
    }
}

/// What a credential sent as [`MASK`] may keep.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Keep<'a> {
    /// The stored credential.
    Stored(&'a str),
    /// Nothing is stored for this field.
    Nothing,
    /// Something is stored, but it would go somewhere new: this names what
    /// changed.
    Rebound(&'static str),
}

/// What a [`MASK`] of a stored credential keeps: the credential, unless
/// the URL's origin or (`rebound`) another binding changed.
pub(crate) fn keep<'a>(
    stored: &'a str,
    origin_changed: bool,
    rebound: Option<&'static str>,
) -> Keep<'a> {
    match rebound {
        _ if origin_changed => Keep::Rebound(ORIGIN),
        Some(changed) => Keep::Rebound(changed),
        None => Keep::Stored(stored),
    }
}

/// What changed when the URL's origin did, for messages.
pub(crate) const ORIGIN: &str = "the URL's origin (scheme, host and port)";

/// Reads the `auth` object. `previous` is the stored auth when the request
/// updates a subscription: a credential sent back as [`MASK`] keeps its
/// stored value if the type did not change, and only while where it is
/// sent stays the same: the URL's origin (`origin_changed` says whether it
/// changed), the `token_url`, the `api_key` `header_name`.
pub fn parse_auth(
    f: &mut Fields,
    policy: &UrlPolicy,
    previous: Option<&CallbackAuth>,
    origin_changed: bool,
) -> Option<CallbackAuth> {
    let mut a = f.object("auth")?;
    let kind: Option<String> = a.required("type", "one of none, basic, api_key, bearer, oauth2");
    let same = |k: &str| previous.filter(|p| p.kind() == k);
    let keep = |stored, rebound| keep(stored, origin_changed, rebound);
    let auth = match kind.as_deref() {
        None => {
            forget_other_fields(&mut a);
            None
        }
        Some("none") => {
            a.reject_unknown(&["type"]);
            Some(CallbackAuth::None)
        }
        Some("basic") => {
            let username = text(&mut a, "username", 1024);
            let kept = match same("basic") {
                Some(CallbackAuth::Basic { password, .. }) => keep(password, None),
                _ => Keep::Nothing,
            };
            let password = secret(&mut a, "password", kept);
            if username.as_deref().is_some_and(|u| u.contains(':')) {
                a.error(
                    "username",
                    "must not contain `:` (HTTP basic separates on it)",
                );
            }
            a.reject_unknown(&["type", "username", "password"]);
            username
                .zip(password)
                .map(|(username, password)| CallbackAuth::Basic { username, password })
        }
        Some("api_key") => {
            let header_name = text(&mut a, "header_name", 256);
            if let Some(name) = &header_name {
                let lower = name.to_ascii_lowercase();
                if !crate::subscription::is_header_name(name) {
                    a.error("header_name", "is not a valid HTTP header name");
                } else if lower != "authorization" && crate::subscription::is_reserved(&lower) {
                    a.error(
                        "header_name",
                        format!("`{name}` is set by Waybill itself; choose another header"),
                    );
                }
            }
            let kept = match same("api_key") {
                Some(CallbackAuth::ApiKey {
                    header_value,
                    header_name: stored_name,
                }) => keep(
                    header_value,
                    header_name
                        .as_deref()
                        .filter(|name| !name.eq_ignore_ascii_case(stored_name))
                        .map(|_| "`header_name`"),
                ),
                _ => Keep::Nothing,
            };
            let header_value = secret(&mut a, "header_value", kept);
            a.reject_unknown(&["type", "header_name", "header_value"]);
            header_name
                .zip(header_value)
                .map(|(header_name, header_value)| CallbackAuth::ApiKey {
                    header_name,
                    header_value,
                })
        }
        Some("bearer") => {
            let kept = match same("bearer") {
                Some(CallbackAuth::Bearer { token }) => keep(token, None),
                _ => Keep::Nothing,
            };
            let token = secret(&mut a, "token", kept);
            a.reject_unknown(&["type", "token"]);
            token.map(|token| CallbackAuth::Bearer { token })
        }
        Some("oauth2") => {
            let token_url = text(&mut a, "token_url", crate::url_policy::MAX_URL_LEN);
            if let Some(url) = &token_url
                && let Err(message) = policy.check_url(url)
            {
                a.error("token_url", message);
            }
            let client_id = text(&mut a, "client_id", 1024);
            let kept = match same("oauth2") {
                Some(CallbackAuth::OAuth2(o)) => keep(
                    &o.client_secret,
                    token_url
                        .as_deref()
                        .filter(|url| *url != o.token_url)
                        .map(|_| "`token_url`"),
                ),
                _ => Keep::Nothing,
            };
            let client_secret = secret(&mut a, "client_secret", kept);
            let scope: Option<String> = a.optional("scope", "a string");
            let extra_params: BTreeMap<String, String> = a
                .optional("extra_params", "an object of string values")
                .unwrap_or_default();
            for reserved in ["grant_type", "client_id", "client_secret", "scope"] {
                if extra_params.contains_key(reserved) {
                    a.error(
                        &format!("extra_params.{reserved}"),
                        "is set by Waybill from the other oauth2 fields",
                    );
                }
            }
            if extra_params.len() > 20 {
                a.error("extra_params", "at most 20 entries");
            }
            a.reject_unknown(&[
                "type",
                "token_url",
                "client_id",
                "client_secret",
                "scope",
                "extra_params",
            ]);
            match (token_url, client_id, client_secret) {
                (Some(token_url), Some(client_id), Some(client_secret)) => {
                    Some(CallbackAuth::OAuth2(OAuth2 {
                        token_url,
                        client_id,
                        client_secret,
                        scope: scope.filter(|s| !s.is_empty()),
                        extra_params,
                    }))
                }
                _ => None,
            }
        }
        Some(other) => {
            a.error(
                "type",
                format!(
                    "`{other}` is not an auth type; use one of {}",
                    AUTH_TYPES.join(", ")
                ),
            );
            forget_other_fields(&mut a);
            None
        }
    };
    let failed = !a.errors.is_empty();
    f.absorb(a);
    if failed { None } else { auth }
}

/// Without a valid `type` the other fields cannot be judged: drop them
/// rather than report each as unknown.
fn forget_other_fields(a: &mut Fields) {
    let before = a.errors.len();
    a.reject_unknown(&[]);
    a.errors.truncate(before);
}

/// A required non-empty string of bounded length.
fn text(a: &mut Fields, key: &str, max: usize) -> Option<String> {
    let value: String = a.required(key, "a non-empty string")?;
    if value.is_empty() {
        a.error(key, "must not be empty");
        return None;
    }
    if value.len() > max {
        a.error(key, format!("must be at most {max} bytes"));
        return None;
    }
    Some(value)
}

/// A required credential; [`MASK`] means "keep" when there is one to keep.
fn secret(a: &mut Fields, key: &str, kept: Keep<'_>) -> Option<String> {
    let value = text(a, key, MAX_CREDENTIAL_LEN)?;
    if value == MASK {
        return unmask(a, key, kept, "credential");
    }
    if value.bytes().any(|b| b < 0x20 || b == 0x7f) {
        a.error(key, "must not contain control characters");
        return None;
    }
    Some(value)
}

/// The stored value a [`MASK`] stands for, or an error on `key`.
pub(crate) fn unmask(a: &mut Fields, key: &str, kept: Keep<'_>, what: &str) -> Option<String> {
    match kept {
        Keep::Stored(old) => Some(old.to_owned()),
        Keep::Nothing => {
            a.error(
                key,
                format!("`{MASK}` is the masked form; send the {what} itself"),
            );
            None
        }
        Keep::Rebound(changed) => {
            a.error(
                key,
                format!(
                    "`{MASK}` keeps the stored {what} only while {changed} stays the same; send the {what} again"
                ),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str, previous: Option<&CallbackAuth>) -> Result<CallbackAuth, Vec<String>> {
        let mut f = Fields::parse(body.as_bytes()).unwrap();
        let auth = parse_auth(&mut f, &UrlPolicy::strict(), previous, false);
        let errors = f.finish(&["auth"]);
        match auth {
            Some(a) if errors.is_empty() => Ok(a),
            _ => Err(errors.into_iter().map(|e| e.to_string()).collect()),
        }
    }

    #[test]
    fn every_type() {
        assert_eq!(
            parse(r#"{"auth": {"type": "none"}}"#, None),
            Ok(CallbackAuth::None)
        );
        assert_eq!(
            parse(
                r#"{"auth": {"type": "basic", "username": "u", "password": "p"}}"#,
                None
            ),
            Ok(CallbackAuth::Basic {
                username: "u".into(),
                password: "p".into()
            })
        );
        assert_eq!(
            parse(
                r#"{"auth": {"type": "api_key", "header_name": "X-Api-Key", "header_value": "k"}}"#,
                None
            ),
            Ok(CallbackAuth::ApiKey {
                header_name: "X-Api-Key".into(),
                header_value: "k".into()
            })
        );
        assert_eq!(
            parse(r#"{"auth": {"type": "bearer", "token": "t"}}"#, None),
            Ok(CallbackAuth::Bearer { token: "t".into() })
        );
        let o = parse(
            r#"{"auth": {"type": "oauth2", "token_url": "https://idp.example.com/token",
                "client_id": "a", "client_secret": "s", "scope": "webhooks",
                "extra_params": {"audience": "x"}}}"#,
            None,
        )
        .unwrap();
        let CallbackAuth::OAuth2(o) = o else { panic!() };
        assert_eq!(o.scope.as_deref(), Some("webhooks"));
        assert_eq!(o.extra_params["audience"], "x");
    }

    #[test]
    fn required_fields_per_type() {
        let e = parse(r#"{"auth": {"type": "basic"}}"#, None).unwrap_err();
        assert_eq!(
            e,
            [
                "auth.username: is required (a non-empty string)",
                "auth.password: is required (a non-empty string)"
            ]
        );
        let e = parse(
            r#"{"auth": {"type": "oauth2", "token_url": "http://x"}}"#,
            None,
        )
        .unwrap_err();
        assert!(e[0].starts_with("auth.token_url: must use https"), "{e:?}");
        assert!(e[1].starts_with("auth.client_id"));
        assert!(e[2].starts_with("auth.client_secret"));
        let e = parse(r#"{"auth": {"type": "digest", "x": 1}}"#, None).unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(e[0].contains("basic, api_key, bearer, oauth2"));
        let e = parse(
            r#"{"auth": {"type": "bearer", "token": "t", "extra": 1}}"#,
            None,
        )
        .unwrap_err();
        assert!(e[0].starts_with("auth.extra: unknown field"));
        let e = parse(
            r#"{"auth": {"type": "api_key", "header_name": "Webhook-Id", "header_value": "v"}}"#,
            None,
        )
        .unwrap_err();
        assert!(e[0].contains("set by Waybill"));
        let e = parse(r#"{"auth": {"type": "bearer", "token": "***"}}"#, None).unwrap_err();
        assert!(e[0].contains("masked form"));
    }

    #[test]
    fn debug_never_prints_a_credential() {
        let all = [
            CallbackAuth::Basic {
                username: "u".into(),
                password: "pw-secret".into(),
            },
            CallbackAuth::ApiKey {
                header_name: "X-K".into(),
                header_value: "hv-secret".into(),
            },
            CallbackAuth::Bearer {
                token: "tok-secret".into(),
            },
            CallbackAuth::OAuth2(OAuth2 {
                token_url: "https://idp/t".into(),
                client_id: "c".into(),
                client_secret: "cs-secret".into(),
                ..OAuth2::default()
            }),
        ];
        for auth in &all {
            let printed = format!("{auth:?} {:?}", Some(auth));
            for secret in auth.secrets() {
                assert!(!printed.contains(secret), "{printed}");
            }
            assert!(printed.contains(MASK), "{printed}");
        }
        if let CallbackAuth::OAuth2(o) = &all[3] {
            assert!(!format!("{o:?}").contains("cs-secret"));
        }
    }

    #[test]
    fn masked_credentials_keep_the_stored_value() {
        let stored = CallbackAuth::Basic {
            username: "u".into(),
            password: "secret".into(),
        };
        let again = parse(
            r#"{"auth": {"type": "basic", "username": "v", "password": "***"}}"#,
            Some(&stored),
        )
        .unwrap();
        assert_eq!(
            again,
            CallbackAuth::Basic {
                username: "v".into(),
                password: "secret".into()
            }
        );
        assert_eq!(stored.masked()["password"], MASK);
        assert!(!stored.masked().to_string().contains("secret"));
        // A different type does not inherit the credential.
        assert!(
            parse(
                r#"{"auth": {"type": "bearer", "token": "***"}}"#,
                Some(&stored)
            )
            .is_err()
        );
    }
}
