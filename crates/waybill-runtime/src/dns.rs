//! Name resolution checked against the URL policy, shared by the create-time
//! check (ingest) and the send-time resolver (delivery).
//!
//! [`Dns::system`] asks the operating system's resolver; [`Dns::fixed`]
//! answers from a table, so tests can hand the policy the AAAA and A answers
//! a hostile name server would give.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use waybill_core::url_policy::{Refusal, UrlPolicy};

/// A resolver.
#[derive(Clone, Default)]
pub struct Dns {
    fixed: Option<Arc<HashMap<String, Vec<IpAddr>>>>,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.fixed.is_some() {
            "Dns(fixed)"
        } else {
            "Dns(system)"
        })
    }
}

/// Why a name could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    /// The name does not resolve.
    Unresolved(String),
    /// It resolves to an address the policy refuses.
    Refused(Refusal),
}

impl Dns {
    /// The operating system's resolver.
    pub fn system() -> Self {
        Self::default()
    }

    /// Answers from `table` only (tests).
    pub fn fixed(table: impl IntoIterator<Item = (String, Vec<IpAddr>)>) -> Self {
        Self {
            fixed: Some(Arc::new(table.into_iter().collect())),
        }
    }

    /// Every address of `host`.
    pub async fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        if let Some(table) = &self.fixed {
            return table
                .get(host)
                .cloned()
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such host"));
        }
        Ok(tokio::net::lookup_host((host, 0))
            .await?
            .map(|a| a.ip())
            .collect())
    }

    /// The addresses of `host` if the policy allows every one of them.
    /// A refusal is logged with its detail (the address and its range);
    /// the caller shows only [`Refusal::public`].
    pub async fn resolve_allowed(
        &self,
        policy: &UrlPolicy,
        host: &str,
    ) -> Result<Vec<IpAddr>, Unusable> {
        let addrs = self
            .lookup(host)
            .await
            .map_err(|e| Unusable::Unresolved(e.to_string()))?;
        if addrs.is_empty() {
            return Err(Unusable::Unresolved("no addresses".into()));
        }
        policy.check_resolved(host, &addrs).map_err(|refusal| {
            tracing::warn!(detail = %refusal.detail, "url policy refused a resolved host");
            Unusable::Refused(refusal)
        })?;
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fixed_answers_are_judged_by_the_policy() {
        let dns = Dns::fixed([
            ("ok.test".to_owned(), vec!["8.8.8.8".parse().unwrap()]),
            (
                "nat64.test".to_owned(),
                vec![
                    "8.8.8.8".parse().unwrap(),
                    "64:ff9b::a00:5".parse().unwrap(),
                ],
            ),
        ]);
        let strict = UrlPolicy::strict();
        assert_eq!(
            dns.resolve_allowed(&strict, "ok.test").await.unwrap().len(),
            1
        );
        match dns.resolve_allowed(&strict, "nat64.test").await {
            Err(Unusable::Refused(r)) => {
                assert!(r.detail.contains("64:ff9b::a00:5, a private"), "{r:?}");
                assert!(!r.public.contains("64:ff9b"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            dns.resolve_allowed(&strict, "missing.test").await,
            Err(Unusable::Unresolved(_))
        ));
        assert!(
            dns.resolve_allowed(&UrlPolicy::permissive(), "nat64.test")
                .await
                .is_ok()
        );
    }
}
