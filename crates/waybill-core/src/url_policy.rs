//! Which callback URLs Waybill may call.
//!
//! Checked twice: when a subscription or event is accepted (syntax, scheme,
//! literal addresses) and at send time on the resolved addresses, so that a
//! host name cannot smuggle a request into the deployment's private network.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::Url;

/// Longest callback URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// The deployment's outbound URL rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UrlPolicy {
    /// Allow `http://` targets (development; production requires https).
    pub allow_http: bool,
    /// Allow loopback, private, link-local and other non-public addresses.
    pub allow_private_networks: bool,
}

impl UrlPolicy {
    /// The strict production default: https only, public addresses only.
    pub fn strict() -> Self {
        Self::default()
    }

    /// Everything allowed, for `waybill dev` and tests on loopback.
    pub fn permissive() -> Self {
        Self {
            allow_http: true,
            allow_private_networks: true,
        }
    }

    /// Checks a URL's syntax, scheme, and host when it is an IP literal.
    pub fn check_url(&self, raw: &str) -> Result<Url, String> {
        if raw.len() > MAX_URL_LEN {
            return Err(format!("must be at most {MAX_URL_LEN} characters"));
        }
        let url = Url::parse(raw).map_err(|e| format!("is not a valid absolute URL ({e})"))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => return Err("must use https (this deployment does not allow http)".into()),
            other => return Err(format!("must use https, not `{other}`")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry credentials; use `auth` instead".into());
        }
        if url.fragment().is_some() {
            return Err("must not have a fragment (`#...`)".into());
        }
        match url.host() {
            None => return Err("must have a host".into()),
            Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip))?,
            Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip))?,
            Some(url::Host::Domain(domain)) => {
                if !self.allow_private_networks
                    && (domain.eq_ignore_ascii_case("localhost")
                        || domain.to_ascii_lowercase().ends_with(".localhost"))
                {
                    return Err("must not point to a loopback host".into());
                }
            }
        }
        Ok(url)
    }

    /// Checks one address a host resolved to.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), String> {
        if self.allow_private_networks {
            return Ok(());
        }
        match non_public_reason(ip) {
            Some(reason) => Err(format!(
                "must not point to a {reason} address ({ip}); this deployment only calls public addresses"
            )),
            None => Ok(()),
        }
    }
}

/// Why an address is not a public unicast address, if it is not.
pub fn non_public_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_reason(v4);
            }
            v6_reason(v6)
        }
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (carrier-grade NAT)")
    } else if ip.is_broadcast() || ip.is_multicast() || a >= 240 {
        Some("broadcast, multicast or reserved")
    } else if ip.is_documentation() || (a == 198 && (b == 18 || b == 19)) {
        Some("documentation or benchmarking")
    } else {
        None
    }
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if first & 0xfe00 == 0xfc00 {
        Some("private (unique local)")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if first == 0x2001 && ip.segments()[1] == 0x0db8 {
        Some("documentation")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_policy() {
        let p = UrlPolicy::strict();
        assert!(p.check_url("https://hooks.example.com/x?y=1").is_ok());
        assert!(
            p.check_url("http://hooks.example.com")
                .unwrap_err()
                .contains("https")
        );
        assert!(
            p.check_url("ftp://hooks.example.com")
                .unwrap_err()
                .contains("ftp")
        );
        assert!(p.check_url("not a url").is_err());
        assert!(
            p.check_url("https://127.0.0.1/")
                .unwrap_err()
                .contains("loopback")
        );
        assert!(
            p.check_url("https://10.1.2.3/")
                .unwrap_err()
                .contains("private")
        );
        assert!(
            p.check_url("https://169.254.169.254/")
                .unwrap_err()
                .contains("link-local")
        );
        assert!(
            p.check_url("https://[::1]/")
                .unwrap_err()
                .contains("loopback")
        );
        assert!(
            p.check_url("https://[::ffff:10.0.0.1]/")
                .unwrap_err()
                .contains("private")
        );
        assert!(
            p.check_url("https://[fd00::1]/")
                .unwrap_err()
                .contains("unique local")
        );
        assert!(
            p.check_url("https://localhost:8080/")
                .unwrap_err()
                .contains("loopback")
        );
        assert!(
            p.check_url("https://u:p@example.com/")
                .unwrap_err()
                .contains("credentials")
        );
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(p.check_url(&long).unwrap_err().contains("2048"));
    }

    #[test]
    fn public_addresses_pass() {
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert_eq!(non_public_reason(ip.parse().unwrap()), None, "{ip}");
        }
        for ip in [
            "100.64.0.1",
            "192.168.1.1",
            "172.16.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "fe80::1",
        ] {
            assert!(non_public_reason(ip.parse().unwrap()).is_some(), "{ip}");
        }
    }

    #[test]
    fn permissive_policy_allows_loopback_http() {
        let p = UrlPolicy::permissive();
        assert!(p.check_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(p.check_url("http://localhost:9000/hook").is_ok());
    }
}
