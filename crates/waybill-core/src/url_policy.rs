//! Which callback URLs Waybill may call.
//!
//! Checked twice: when a subscription or event is accepted (syntax, scheme,
//! port, literal addresses, and the addresses the host resolves to) and at
//! send time on the resolved addresses, so that a host name cannot smuggle a
//! request into the deployment's private network.
//!
//! An address is public when it is in no range of IANA's IPv4 and IPv6
//! Special-Purpose Address Registries that is not globally reachable, is not
//! multicast, broadcast or the deprecated site-local range, and, for IPv6,
//! lies in global unicast space (`2000::/3`). IPv6 forms that carry an IPv4
//! address (IPv4-mapped, IPv4-compatible, SIIT, NAT64, 6to4, Teredo) are
//! judged by the IPv4 address they carry.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::Url;

/// Longest callback URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// Ports allowed when the configuration names none: https's, the usual
/// alternative, and http's when http is allowed.
pub const DEFAULT_PORTS: [u16; 2] = [443, 8443];

/// The deployment's outbound URL rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UrlPolicy {
    /// Allow `http://` targets (development; production requires https).
    pub allow_http: bool,
    /// Allow loopback, private, link-local and other non-public addresses.
    pub allow_private_networks: bool,
    /// Destination ports allowed; empty means [`DEFAULT_PORTS`] plus 80
    /// when http is allowed.
    pub allowed_ports: Vec<u16>,
    /// Allow every destination port (development and tests on loopback).
    pub allow_any_port: bool,
}

/// The first character of `raw` that an IRI (RFC 3987) does not allow
/// unencoded: controls, space, `<>"{}|\^` and backtick, and outside the
/// query the private-use ranges (`iprivate`) and the non-characters. A URL
/// stored as given must read back as a valid IRI: the parser would
/// silently percent-encode them, and the stored text would still carry them.
pub fn first_non_iri_char(raw: &str) -> Option<char> {
    let query_at = raw.find('?');
    raw.char_indices().find_map(|(at, c)| {
        let in_query = query_at.is_some_and(|q| at > q);
        (!is_iri_char(c, in_query)).then_some(c)
    })
}

fn is_iri_char(c: char, in_query: bool) -> bool {
    let n = u32::from(c);
    if c.is_ascii() {
        return c.is_ascii_graphic()
            && !matches!(c, '<' | '>' | '"' | '{' | '}' | '|' | '\\' | '^' | '`');
    }
    let ucschar = matches!(n, 0xA0..=0xD7FF | 0xF900..=0xFDCF | 0xFDF0..=0xFFEF)
        || (n >= 0x10000 && (n & 0xFFFF) <= 0xFFFD && n < 0xE0000)
        || matches!(n, 0xE1000..=0xEFFFD);
    let iprivate = matches!(n, 0xE000..=0xF8FF | 0xF0000..=0xFFFFD | 0x100000..=0x10FFFD);
    ucschar || (in_query && iprivate)
}

impl UrlPolicy {
    /// The strict production default: https only, public addresses only,
    /// ports 443 and 8443.
    pub fn strict() -> Self {
        Self::default()
    }

    /// Everything allowed, for `waybill dev` and tests on loopback.
    pub fn permissive() -> Self {
        Self {
            allow_http: true,
            allow_private_networks: true,
            allowed_ports: Vec::new(),
            allow_any_port: true,
        }
    }

    /// Whether a destination port may be called.
    pub fn allows_port(&self, port: u16) -> bool {
        if self.allow_any_port {
            return true;
        }
        if self.allowed_ports.is_empty() {
            DEFAULT_PORTS.contains(&port) || (self.allow_http && port == 80)
        } else {
            self.allowed_ports.contains(&port)
        }
    }

    /// The allowed ports, for messages.
    fn ports_text(&self) -> String {
        let mut ports: Vec<u16> = if self.allowed_ports.is_empty() {
            let mut p = DEFAULT_PORTS.to_vec();
            if self.allow_http {
                p.insert(0, 80);
            }
            p
        } else {
            self.allowed_ports.clone()
        };
        ports.sort_unstable();
        ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Checks a URL's syntax, scheme, port, and host when it is an IP literal.
    pub fn check_url(&self, raw: &str) -> Result<Url, String> {
        if raw.len() > MAX_URL_LEN {
            return Err(format!("must be at most {MAX_URL_LEN} characters"));
        }
        if let Some(bad) = first_non_iri_char(raw) {
            return Err(format!(
                "must not contain {bad:?} (U+{:04X}): percent-encode it",
                u32::from(bad)
            ));
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
        let port = url.port_or_known_default().unwrap_or(443);
        if !self.allows_port(port) {
            return Err(format!(
                "must use an allowed port ({}), not {port}",
                self.ports_text()
            ));
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

    /// Checks one address a URL names literally; the message says why.
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

    /// Checks the addresses `host` resolved to. The error's
    /// [`Refusal::public`] is what a tenant may read (it names no address:
    /// DNS answers inside the deployment are not theirs to see);
    /// [`Refusal::detail`] is for the operator's log.
    pub fn check_resolved(&self, host: &str, addrs: &[IpAddr]) -> Result<(), Refusal> {
        if self.allow_private_networks {
            return Ok(());
        }
        for ip in addrs {
            if let Some(reason) = non_public_reason(*ip) {
                return Err(Refusal {
                    public: format!(
                        "host `{host}` resolves to an address this deployment does not call (only public addresses are allowed)"
                    ),
                    detail: format!("host `{host}` resolves to {ip}, a {reason} address"),
                });
            }
        }
        Ok(())
    }
}

/// Why resolved addresses were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// For the tenant (API answers, attempt records).
    pub public: String,
    /// For the operator (logs): the address and its range.
    pub detail: String,
}

/// One range of a special-purpose registry that Waybill does not call.
struct Range<A> {
    network: A,
    prefix: u8,
    reason: &'static str,
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8, reason: &'static str) -> Range<Ipv4Addr> {
    Range {
        network: Ipv4Addr::new(a, b, c, d),
        prefix,
        reason,
    }
}

/// IPv4 ranges that are not public unicast: every entry of IANA's IPv4
/// Special-Purpose Address Registry that is not globally reachable (and the
/// whole of `192.0.0.0/24`, though two anycast addresses in it are), plus
/// multicast and the deprecated 6to4 relay anycast.
const V4_RANGES: &[Range<Ipv4Addr>] = &[
    v4(0, 0, 0, 0, 8, "unspecified (\"this network\")"),
    v4(10, 0, 0, 0, 8, "private"),
    v4(100, 64, 0, 0, 10, "shared (carrier-grade NAT)"),
    v4(127, 0, 0, 0, 8, "loopback"),
    v4(169, 254, 0, 0, 16, "link-local"),
    v4(172, 16, 0, 0, 12, "private"),
    v4(192, 0, 0, 0, 24, "IETF protocol assignment"),
    v4(192, 0, 2, 0, 24, "documentation"),
    v4(192, 88, 99, 0, 24, "deprecated 6to4 relay anycast"),
    v4(192, 168, 0, 0, 16, "private"),
    v4(198, 18, 0, 0, 15, "benchmarking"),
    v4(198, 51, 100, 0, 24, "documentation"),
    v4(203, 0, 113, 0, 24, "documentation"),
    v4(224, 0, 0, 0, 4, "multicast"),
    v4(255, 255, 255, 255, 32, "broadcast"),
    v4(240, 0, 0, 0, 4, "reserved"),
];

const fn v6(segments: [u16; 8], prefix: u8, reason: &'static str) -> Range<Ipv6Addr> {
    let [a, b, c, d, e, f, g, h] = segments;
    Range {
        network: Ipv6Addr::new(a, b, c, d, e, f, g, h),
        prefix,
        reason,
    }
}

/// IPv6 ranges inside global unicast space (`2000::/3`) that are not
/// globally reachable, by IANA's IPv6 Special-Purpose Address Registry.
/// Everything outside `2000::/3` is refused as well (loopback, unique local,
/// link-local, site-local, multicast, discard-only, SRv6 SIDs, ...), except
/// the forms that carry an IPv4 address, which are judged by it.
const V6_RANGES: &[Range<Ipv6Addr>] = &[
    v6([0x2001, 0x2, 0, 0, 0, 0, 0, 0], 48, "benchmarking"),
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, "documentation"),
    v6([0x2001, 0x10, 0, 0, 0, 0, 0, 0], 28, "deprecated ORCHID"),
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "documentation"),
];

/// Globally reachable entries inside the IETF protocol assignments block
/// `2001::/23`, which is otherwise refused.
const V6_IETF_GLOBAL: &[Range<Ipv6Addr>] = &[
    v6([0x2001, 0x1, 0, 0, 0, 0, 0, 0x1], 128, "PCP anycast"),
    v6([0x2001, 0x1, 0, 0, 0, 0, 0, 0x2], 128, "TURN anycast"),
    v6([0x2001, 0x1, 0, 0, 0, 0, 0, 0x3], 128, "DNS-SD SRP anycast"),
    v6([0x2001, 0x3, 0, 0, 0, 0, 0, 0], 32, "AMT"),
    v6([0x2001, 0x4, 0x112, 0, 0, 0, 0, 0], 48, "AS112-v6"),
    v6([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28, "ORCHIDv2"),
    v6([0x2001, 0x30, 0, 0, 0, 0, 0, 0], 28, "drone remote ID"),
];

fn in_v4(ip: Ipv4Addr, range: &Range<Ipv4Addr>) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(range.prefix))
        .unwrap_or(0);
    u32::from(ip) & mask == u32::from(range.network) & mask
}

fn in_v6(ip: Ipv6Addr, range: &Range<Ipv6Addr>) -> bool {
    let mask = u128::MAX
        .checked_shl(128 - u32::from(range.prefix))
        .unwrap_or(0);
    u128::from(ip) & mask == u128::from(range.network) & mask
}

/// Why an address is not a public unicast address, if it is not.
pub fn non_public_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    V4_RANGES
        .iter()
        .find(|range| in_v4(ip, range))
        .map(|range| range.reason)
}

/// The IPv4 address an IPv6 address carries, and the form that carries it.
pub fn embedded_ipv4(ip: Ipv6Addr) -> Option<(Ipv4Addr, &'static str)> {
    let bits = u128::from(ip);
    let low32 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    let s = ip.segments();
    if bits >> 32 == 0xffff {
        Some((low32, "IPv4-mapped"))
    } else if bits >> 32 == 0xffff_0000 {
        Some((low32, "IPv4-translated (SIIT)"))
    } else if bits >> 32 == 0 && bits > 1 {
        Some((low32, "IPv4-compatible"))
    } else if bits >> 32 == 0x0064_ff9b_0000_0000_0000_0000 {
        Some((low32, "NAT64"))
    } else if s[0] == 0x2002 {
        Some((Ipv4Addr::from((bits >> 80) as u32), "6to4"))
    } else {
        None
    }
}

/// The server and (de-obfuscated) client IPv4 addresses of a Teredo address.
fn teredo(ip: Ipv6Addr) -> Option<[Ipv4Addr; 2]> {
    let bits = u128::from(ip);
    if bits >> 96 != 0x2001_0000 {
        return None;
    }
    let server = Ipv4Addr::from((bits >> 64) as u32);
    let client = Ipv4Addr::from(!(bits as u32));
    Some([server, client])
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if let Some((v4, _form)) = embedded_ipv4(ip) {
        return v4_reason(v4);
    }
    if let Some(addresses) = teredo(ip) {
        return addresses.into_iter().find_map(v4_reason);
    }
    let first = ip.segments()[0];
    if first & 0xe000 != 0x2000 {
        return Some(if first & 0xff00 == 0xff00 {
            "multicast"
        } else if first & 0xfe00 == 0xfc00 {
            "private (unique local)"
        } else if first & 0xffc0 == 0xfe80 {
            "link-local"
        } else if first & 0xffc0 == 0xfec0 {
            "site-local"
        } else if ip.segments()[..3] == [0x64, 0xff9b, 1] {
            "local-use IPv4/IPv6 translation"
        } else {
            "non-global unicast (outside 2000::/3)"
        });
    }
    if let Some(range) = V6_RANGES.iter().find(|range| in_v6(ip, range)) {
        return Some(range.reason);
    }
    let ietf = Range {
        network: Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        prefix: 23,
        reason: "IETF protocol assignment",
    };
    if in_v6(ip, &ietf) && !V6_IETF_GLOBAL.iter().any(|range| in_v6(ip, range)) {
        return Some(ietf.reason);
    }
    None
}

/// A callback URL as telemetry may show it (`url.full` of a webhook
/// attempt's span): user and password dropped, every query value and the
/// fragment replaced by `REDACTED` (a query often carries a token), so the
/// shape stays readable: `https://hooks.example.com/in?token=REDACTED`.
/// `None` when it does not parse.
pub fn for_telemetry(raw: &str) -> Option<url::Url> {
    let mut url = url::Url::parse(raw).ok()?;
    let _ = url.set_username("");
    let _ = url.set_password(None);
    if url.query().is_some() {
        let keys: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
        let mut pairs = url.query_pairs_mut();
        pairs.clear();
        for key in keys {
            pairs.append_pair(&key, "REDACTED");
        }
    }
    if url.fragment().is_some() {
        url.set_fragment(Some("REDACTED"));
    }
    Some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_never_shows_credentials_or_query_values() {
        let url =
            for_telemetry("https://user:pa55@hooks.example.com:8443/in?token=s3cr3t&x=1#frag")
                .unwrap();
        assert_eq!(
            url.as_str(),
            "https://hooks.example.com:8443/in?token=REDACTED&x=REDACTED#REDACTED"
        );
        assert_eq!(url.port_or_known_default(), Some(8443));
        assert_eq!(
            for_telemetry("https://hooks.example.com/in")
                .unwrap()
                .as_str(),
            "https://hooks.example.com/in"
        );
        assert!(for_telemetry("not a url").is_none());
    }

    fn last_v4(range: &Range<Ipv4Addr>) -> Ipv4Addr {
        let host = u32::MAX.checked_shr(u32::from(range.prefix)).unwrap_or(0);
        Ipv4Addr::from(u32::from(range.network) | host)
    }

    fn last_v6(range: &Range<Ipv6Addr>) -> Ipv6Addr {
        let host = u128::MAX.checked_shr(u32::from(range.prefix)).unwrap_or(0);
        Ipv6Addr::from(u128::from(range.network) | host)
    }

    /// Every IPv6 form that carries `ip`.
    fn wrapped(ip: Ipv4Addr) -> Vec<Ipv6Addr> {
        let v = u128::from(u32::from(ip));
        vec![
            ip.to_ipv6_mapped(),
            Ipv6Addr::from(v),                                   // ::a.b.c.d
            Ipv6Addr::from((0xffff_0000u128 << 32) | v),         // ::ffff:0:a.b.c.d
            Ipv6Addr::from((0x0064_ff9bu128 << 96) | v),         // 64:ff9b::a.b.c.d
            Ipv6Addr::from((0x2002u128 << 112) | (v << 80) | 1), // 2002:abcd:ef01::1
            Ipv6Addr::from((0x2001_0000u128 << 96) | (v << 64) | u128::from(!0x0808_0808u32)), // Teredo server
            Ipv6Addr::from(
                (0x2001_0000u128 << 96) | (0x0808_0808u128 << 64) | u128::from(!u32::from(ip)),
            ), // Teredo client
        ]
    }

    /// The table of IANA's IPv4 registry: every entry's first and last
    /// address, bare and wrapped in every IPv6 form, is refused with its
    /// reason.
    #[test]
    fn every_ipv4_registry_entry_is_refused_bare_and_wrapped() {
        for range in V4_RANGES {
            assert_eq!(v4_reason(range.network), Some(range.reason));
            for ip in [range.network, last_v4(range)] {
                assert!(v4_reason(ip).is_some(), "{ip}");
                for w in wrapped(ip) {
                    assert!(
                        non_public_reason(IpAddr::V6(w)).is_some(),
                        "{w} carries {ip} ({})",
                        range.reason
                    );
                }
            }
        }
        // Entries the registry lists inside larger refused ranges.
        for ip in [
            "192.0.0.0",
            "192.0.0.7",
            "192.0.0.8",
            "192.0.0.9",
            "192.0.0.10",
            "192.0.0.170",
            "192.0.0.171",
            "192.0.0.255",
        ] {
            let ip: Ipv4Addr = ip.parse().unwrap();
            assert_eq!(v4_reason(ip), Some("IETF protocol assignment"), "{ip}");
        }
    }

    #[test]
    fn every_ipv6_registry_entry_is_refused() {
        for range in V6_RANGES {
            for ip in [range.network, last_v6(range)] {
                assert_eq!(v6_reason(ip), Some(range.reason), "{ip}");
            }
        }
        for (ip, reason) in [
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("100::", "non-global unicast (outside 2000::/3)"),
            (
                "100::ffff:ffff:ffff:ffff",
                "non-global unicast (outside 2000::/3)",
            ),
            ("100:0:0:1::", "non-global unicast (outside 2000::/3)"),
            ("64:ff9b:1::", "local-use IPv4/IPv6 translation"),
            (
                "64:ff9b:1:ffff:ffff:ffff:808:808",
                "local-use IPv4/IPv6 translation",
            ),
            ("2001:5::", "IETF protocol assignment"),
            ("2001:1::4", "IETF protocol assignment"),
            ("2001:4:113::", "IETF protocol assignment"),
            ("2001:1ff:ffff::", "IETF protocol assignment"),
            ("5f00::", "non-global unicast (outside 2000::/3)"),
            ("5fff:ffff::", "non-global unicast (outside 2000::/3)"),
            ("fc00::", "private (unique local)"),
            ("fdff:ffff::1", "private (unique local)"),
            ("fe80::1", "link-local"),
            ("febf:ffff::", "link-local"),
            ("fec0::1", "site-local"),
            ("feff:ffff::", "site-local"),
            ("ff02::1", "multicast"),
            ("ff0e::", "multicast"),
            ("4000::1", "non-global unicast (outside 2000::/3)"),
        ] {
            let ip: Ipv6Addr = ip.parse().unwrap();
            assert_eq!(v6_reason(ip), Some(reason), "{ip}");
        }
    }

    #[test]
    fn public_addresses_pass_bare_and_wrapped() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "192.31.196.1",
            "192.52.193.1",
            "192.175.48.1",
        ] {
            let ip: Ipv4Addr = ip.parse().unwrap();
            assert_eq!(v4_reason(ip), None, "{ip}");
            for w in wrapped(ip) {
                assert_eq!(non_public_reason(IpAddr::V6(w)), None, "{w} carries {ip}");
            }
        }
        for range in V6_IETF_GLOBAL {
            for ip in [range.network, last_v6(range)] {
                assert_eq!(v6_reason(ip), None, "{ip} ({})", range.reason);
            }
        }
        for ip in [
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "2620:4f:8000::1",
            "3fff:1000::",
        ] {
            assert_eq!(non_public_reason(ip.parse().unwrap()), None, "{ip}");
        }
    }

    /// The forms the review found created and called.
    #[test]
    fn the_reviewed_forms_are_refused() {
        let p = UrlPolicy::strict();
        for (url, reason) in [
            ("https://[64:ff9b::a9fe:a9fe]/", "link-local"),
            ("https://[::127.0.0.1]/", "loopback"),
            ("https://[2002:7f00:1::]/", "loopback"),
            ("https://[fec0::1]/", "site-local"),
            ("https://192.0.0.1/", "IETF protocol assignment"),
            ("https://[64:ff9b::a00:5]/", "private"),
            ("https://[::ffff:0:a00:1]/", "private"),
        ] {
            let e = p.check_url(url).unwrap_err();
            assert!(e.contains(reason), "{url}: {e}");
        }
    }

    #[test]
    fn resolved_addresses_are_refused_without_naming_them_to_the_tenant() {
        let p = UrlPolicy::strict();
        let bad: IpAddr = "64:ff9b::a9fe:a9fe".parse().unwrap();
        let good: IpAddr = "8.8.8.8".parse().unwrap();
        assert!(p.check_resolved("h.example", &[good]).is_ok());
        let refusal = p.check_resolved("h.example", &[good, bad]).unwrap_err();
        assert!(!refusal.public.contains("a9fe"), "{refusal:?}");
        assert!(!refusal.public.contains("link-local"), "{refusal:?}");
        assert!(refusal.public.contains("h.example"), "{refusal:?}");
        assert!(refusal.detail.contains("64:ff9b::a9fe:a9fe"), "{refusal:?}");
        assert!(refusal.detail.contains("link-local"), "{refusal:?}");
        assert!(UrlPolicy::permissive().check_resolved("h", &[bad]).is_ok());
    }

    #[test]
    fn ports() {
        let p = UrlPolicy::strict();
        assert!(p.check_url("https://hooks.example.com:8443/").is_ok());
        let e = p.check_url("https://hooks.example.com:6379/").unwrap_err();
        assert_eq!(e, "must use an allowed port (443, 8443), not 6379");
        let http = UrlPolicy {
            allow_http: true,
            ..UrlPolicy::strict()
        };
        assert!(http.check_url("http://hooks.example.com/").is_ok());
        assert!(p.allows_port(443) && !p.allows_port(80) && http.allows_port(80));
        let only = UrlPolicy {
            allowed_ports: vec![9443],
            ..UrlPolicy::strict()
        };
        assert!(only.check_url("https://hooks.example.com/").is_err());
        assert!(only.check_url("https://hooks.example.com:9443/").is_ok());
        assert!(
            UrlPolicy::permissive()
                .check_url("http://127.0.0.1:9000/")
                .is_ok()
        );
    }

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
        for (url, reason) in [
            ("https://127.0.0.1/", "loopback"),
            ("https://10.1.2.3/", "private"),
            ("https://169.254.169.254/", "link-local"),
            ("https://[::1]/", "loopback"),
            ("https://[::ffff:10.0.0.1]/", "private"),
            ("https://[fd00::1]/", "unique local"),
            ("https://localhost/", "loopback"),
            ("https://u:p@example.com/", "credentials"),
        ] {
            let e = p.check_url(url).unwrap_err();
            assert!(e.contains(reason), "{url}: {e}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(p.check_url(&long).unwrap_err().contains("2048"));
    }

    #[test]
    fn permissive_policy_allows_loopback_http() {
        let p = UrlPolicy::permissive();
        assert!(p.check_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(p.check_url("http://localhost:9000/hook").is_ok());
    }

    #[test]
    fn a_url_is_an_iri_as_written() {
        assert_eq!(
            first_non_iri_char("https://hooks.example.com/a?b=c&d=%20"),
            None
        );
        assert_eq!(first_non_iri_char("https://例え.jp/パス"), None);
        assert_eq!(first_non_iri_char("https://w/a\u{10}b"), Some('\u{10}'));
        assert_eq!(first_non_iri_char("https://w/a b"), Some(' '));
        assert_eq!(first_non_iri_char("https://w/a{b}"), Some('{'));
        assert_eq!(first_non_iri_char("https://w/\u{F0001}"), Some('\u{F0001}'));
        assert_eq!(
            first_non_iri_char("https://w/?q=\u{F0001}"),
            None,
            "iprivate in the query"
        );
        assert_eq!(
            first_non_iri_char("https://w/\u{84}"),
            Some('\u{84}'),
            "a C1 control"
        );
        let policy = UrlPolicy::strict();
        let refused = policy
            .check_url("https://hooks.example.com/a\u{10}")
            .unwrap_err();
        assert!(refused.contains("percent-encode"), "{refused}");
    }
}
