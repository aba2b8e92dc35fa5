//! What a component may reach, as the app's YAML grants it. Everything is denied by default.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Capabilities granted to a component. A call to anything not listed fails with a `denied`
/// error naming the entry to add.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Hosts outbound HTTP may reach: `api.example.com`, `*.example.com` (subdomains only),
    /// `api.example.com:8443`, `127.0.0.1:8080`. A host name that resolves to a loopback or
    /// private address is refused; such addresses are reachable only when listed as addresses
    /// (or as `localhost`).
    #[serde(default)]
    pub http: Vec<String>,
    /// State buckets the component may read and write.
    #[serde(default)]
    pub state: Vec<String>,
    /// Topics the component may publish to; a trailing `*` matches any suffix (`orders.*`).
    #[serde(default)]
    pub events: Vec<String>,
    /// Environment variables the component sees, with the host's values at load time.
    #[serde(default)]
    pub env: Vec<String>,
    /// Host directories mounted read-only.
    #[serde(default)]
    pub dirs: Vec<DirGrant>,
    /// Trigger components: HTTP routes they may serve, as `METHOD /path` (`/path` alone: any
    /// method).
    #[serde(default)]
    pub routes: Vec<String>,
    /// Trigger components: topics they may listen to; a trailing `*` matches any suffix.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Trigger components: pipelines they may start (`*`: any).
    #[serde(default)]
    pub pipelines: Vec<String>,
}

/// A host directory a component may read.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    /// The directory on the host, relative to the working directory.
    pub host: String,
    /// Where the component sees it, e.g. `/data`.
    pub guest: String,
}

impl Capabilities {
    /// Both grants together (a `wasm.components` entry and a `dynamic.component`'s own).
    pub fn union(&self, other: &Capabilities) -> Capabilities {
        fn merged<T: Clone + PartialEq>(a: &[T], b: &[T]) -> Vec<T> {
            let mut out = a.to_vec();
            for item in b {
                if !out.contains(item) {
                    out.push(item.clone());
                }
            }
            out
        }
        Capabilities {
            http: merged(&self.http, &other.http),
            state: merged(&self.state, &other.state),
            events: merged(&self.events, &other.events),
            env: merged(&self.env, &other.env),
            dirs: merged(&self.dirs, &other.dirs),
            routes: merged(&self.routes, &other.routes),
            subscribe: merged(&self.subscribe, &other.subscribe),
            pipelines: merged(&self.pipelines, &other.pipelines),
        }
    }

    /// The entries of `self` that `allowed` does not cover, as `capabilities.KEY: ENTRY`: what a
    /// grant sent with an upload asks beyond what the YAML allows that component. An entry is
    /// covered when it is listed, or narrower than a listed pattern (`api.example.com` under
    /// `*.example.com`, `orders.new` under `orders.*`, any pipeline under `*`).
    pub fn not_covered_by(&self, allowed: &Capabilities) -> Vec<String> {
        let mut excess = Vec::new();
        let mut check = |key: &str, entries: &[String], covered: &dyn Fn(&str) -> bool| {
            for entry in entries {
                if !covered(entry) {
                    excess.push(format!("capabilities.{key}: `{entry}`"));
                }
            }
        };
        let listed = |list: &[String], entry: &str| list.iter().any(|a| a == entry);
        check("http", &self.http, &|e| {
            HostPattern::parse(e).is_some_and(|wanted| {
                allowed
                    .http
                    .iter()
                    .filter_map(|a| HostPattern::parse(a))
                    .any(|a| a.covers(&wanted))
            })
        });
        check("state", &self.state, &|e| listed(&allowed.state, e));
        check("events", &self.events, &|e| {
            covers_topic(&allowed.events, e)
        });
        check("env", &self.env, &|e| listed(&allowed.env, e));
        check("routes", &self.routes, &|e| listed(&allowed.routes, e));
        check("subscribe", &self.subscribe, &|e| {
            covers_topic(&allowed.subscribe, e)
        });
        check("pipelines", &self.pipelines, &|e| {
            listed(&allowed.pipelines, e) || listed(&allowed.pipelines, "*")
        });
        for dir in &self.dirs {
            if !allowed.dirs.contains(dir) {
                excess.push(format!(
                    "capabilities.dirs: `{}` as `{}`",
                    dir.host, dir.guest
                ));
            }
        }
        excess
    }

    pub fn route_allowed(&self, method: &str, path: &str) -> Result<(), String> {
        let granted = self
            .routes
            .iter()
            .any(|entry| match entry.trim().split_once(' ') {
                Some((m, p)) => m.eq_ignore_ascii_case(method) && p.trim() == path,
                None => entry.trim() == path,
            });
        if granted {
            Ok(())
        } else {
            Err(format!(
                "the route `{method} {path}` is not granted; add it to `capabilities.routes`"
            ))
        }
    }

    pub fn subscribe_allowed(&self, topic: &str) -> Result<(), String> {
        if matches_pattern(&self.subscribe, topic) {
            Ok(())
        } else {
            Err(format!(
                "listening to `{topic}` is not granted; add it to `capabilities.subscribe`"
            ))
        }
    }

    pub fn pipeline_allowed(&self, pipeline: &str) -> Result<(), String> {
        if self.pipelines.iter().any(|p| p == "*" || p == pipeline) {
            Ok(())
        } else {
            Err(format!(
                "starting pipeline `{pipeline}` is not granted; add it to `capabilities.pipelines`"
            ))
        }
    }

    pub fn state_allowed(&self, bucket: &str) -> Result<(), String> {
        if self.state.iter().any(|b| b == bucket) {
            Ok(())
        } else {
            Err(format!(
                "state bucket `{bucket}` is not granted; add it to `capabilities.state`"
            ))
        }
    }

    pub fn topic_allowed(&self, topic: &str) -> Result<(), String> {
        if matches_pattern(&self.events, topic) {
            Ok(())
        } else {
            Err(format!(
                "topic `{topic}` is not granted; add it to `capabilities.events`"
            ))
        }
    }

    /// Checks a URL against the HTTP allow-list. Address checks on resolved names happen in
    /// [`GuardedResolver`], at connect time.
    pub fn url_allowed(&self, url: &reqwest::Url) -> Result<(), String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "scheme `{}` is not allowed (use http or https)",
                url.scheme()
            ));
        }
        let host = url
            .host_str()
            .ok_or_else(|| format!("`{url}` has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = url.port_or_known_default();
        if self
            .http
            .iter()
            .filter_map(|entry| HostPattern::parse(entry))
            .any(|pattern| pattern.matches(&host, port))
        {
            Ok(())
        } else {
            let shown = match url.port() {
                Some(p) => format!("{host}:{p}"),
                None => host.clone(),
            };
            Err(format!(
                "HTTP to `{shown}` is not granted; add `{shown}` to `capabilities.http`"
            ))
        }
    }
}

/// Whether `topic` matches one of `patterns` (exact, or a prefix ending in `*`).
fn matches_pattern(patterns: &[String], topic: &str) -> bool {
    patterns
        .iter()
        .any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => topic.starts_with(prefix),
            None => pattern == topic,
        })
}

/// Whether `patterns` (exact topics, or prefixes ending in `*`) cover every topic `entry`
/// names: a topic, or itself a prefix pattern.
fn covers_topic(patterns: &[String], entry: &str) -> bool {
    match entry.strip_suffix('*') {
        Some(prefix) => patterns.iter().any(|p| {
            p.strip_suffix('*')
                .is_some_and(|allowed| prefix.starts_with(allowed))
        }),
        None => matches_pattern(patterns, entry),
    }
}

/// One `capabilities.http` entry.
struct HostPattern {
    host: String,
    wildcard: bool,
    port: Option<u16>,
}

impl HostPattern {
    fn parse(entry: &str) -> Option<HostPattern> {
        let entry = entry.trim().to_ascii_lowercase();
        let (host, port) = match entry.rsplit_once(':') {
            // An IPv6 literal has colons of its own; only `[..]:port` carries a port.
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
                // A malformed port makes the entry invalid, never "any port".
                (h.to_string(), Some(p.parse::<u16>().ok()?))
            }
            _ => (entry.clone(), None),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let (host, wildcard) = match host.strip_prefix("*.") {
            Some(rest) => (rest.to_string(), true),
            None => (host, false),
        };
        (!host.is_empty()).then_some(HostPattern {
            host,
            wildcard,
            port,
        })
    }

    fn matches(&self, host: &str, port: Option<u16>) -> bool {
        let host_ok = if self.wildcard {
            host.ends_with(&format!(".{}", self.host))
        } else {
            host == self.host
        };
        host_ok && self.port.is_none_or(|p| Some(p) == port)
    }

    /// Whether every host and port `other` matches, this matches too.
    fn covers(&self, other: &HostPattern) -> bool {
        let port_ok = self.port.is_none() || self.port == other.port;
        let host_ok = match (self.wildcard, other.wildcard) {
            (false, false) => self.host == other.host,
            (false, true) => false,
            (true, _) => other.host.ends_with(&format!(".{}", self.host)),
        };
        port_ok && host_ok
    }
}

/// IPv4 special-purpose ranges (IANA's registry, RFC 6890 and updates), plus multicast and
/// the reserved block: none of them is a public destination a component may reach by name.
const INTERNAL_V4: &[([u8; 4], u8)] = &[
    ([0, 0, 0, 0], 8),       // "this network" (0.0.0.1 reaches loopback on Linux)
    ([10, 0, 0, 0], 8),      // private
    ([100, 64, 0, 0], 10),   // shared address space (carrier-grade NAT)
    ([127, 0, 0, 0], 8),     // loopback
    ([169, 254, 0, 0], 16),  // link-local (cloud metadata services)
    ([172, 16, 0, 0], 12),   // private
    ([192, 0, 0, 0], 24),    // IETF protocol assignments
    ([192, 0, 2, 0], 24),    // documentation (TEST-NET-1)
    ([192, 31, 196, 0], 24), // AS112-v4
    ([192, 52, 193, 0], 24), // AMT
    ([192, 88, 99, 0], 24),  // deprecated 6to4 relay anycast
    ([192, 168, 0, 0], 16),  // private
    ([192, 175, 48, 0], 24), // direct delegation AS112
    ([198, 18, 0, 0], 15),   // benchmarking
    ([198, 51, 100, 0], 24), // documentation (TEST-NET-2)
    ([203, 0, 113, 0], 24),  // documentation (TEST-NET-3)
    ([224, 0, 0, 0], 4),     // multicast
    ([240, 0, 0, 0], 4),     // reserved, and the limited broadcast address
];

/// IPv6 special-purpose ranges (IANA's registry), plus multicast and deprecated site-local.
/// Ranges that carry an IPv4 address (mapped, NAT64, 6to4, IPv4-compatible) are judged by
/// that address instead.
const INTERNAL_V6: &[([u16; 8], u8)] = &[
    ([0, 0, 0, 0, 0, 0, 0, 0], 128),             // unspecified
    ([0, 0, 0, 0, 0, 0, 0, 1], 128),             // loopback
    ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),      // local-use IPv4/IPv6 translation
    ([0x100, 0, 0, 0, 0, 0, 0, 0], 64),          // discard-only
    ([0x100, 0, 0, 1, 0, 0, 0, 0], 64),          // dummy prefix
    ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),         // IETF protocol assignments (Teredo, ORCHID, ...)
    ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),     // documentation
    ([0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0], 48), // direct delegation AS112
    ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),         // documentation
    ([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16),         // segment routing (SRv6) SIDs
    ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),          // unique local
    ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),         // link-local
    ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),         // site-local (deprecated)
    ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),          // multicast
];

fn in_v4(ip: std::net::Ipv4Addr, (net, bits): ([u8; 4], u8)) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
    u32::from(ip) & mask == u32::from_be_bytes(net) & mask
}

fn in_v6(ip: std::net::Ipv6Addr, (net, bits): ([u16; 8], u8)) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(std::net::Ipv6Addr::from(net)) & mask
}

/// Loopback, private, link-local, documentation, reserved and every other special-purpose
/// address: what a component must not reach through a public-looking name.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => INTERNAL_V4.iter().any(|range| in_v4(v4, *range)),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            // Addresses that carry an IPv4 address: NAT64 (64:ff9b::/96), 6to4 (2002::/16)
            // and the deprecated IPv4-compatible form (::a.b.c.d).
            let s = v6.segments();
            let embedded = |hi: u16, lo: u16| {
                std::net::Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)
            };
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                return is_internal(IpAddr::V4(embedded(s[6], s[7])));
            }
            if s[0] == 0x2002 {
                return is_internal(IpAddr::V4(embedded(s[1], s[2])));
            }
            if s[..6] == [0, 0, 0, 0, 0, 0] && (s[6] != 0 || s[7] > 1) {
                return is_internal(IpAddr::V4(embedded(s[6], s[7])));
            }
            INTERNAL_V6.iter().any(|range| in_v6(v6, *range))
        }
    }
}

/// A granted name resolved only to internal addresses.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{0}` resolves only to loopback or private addresses; grant the address itself in `capabilities.http`"
)]
pub struct InternalAddressRefused(pub String);

/// Resolves names for a component's HTTP client and drops internal addresses, so a granted
/// public name cannot be pointed at the host's own network (DNS rebinding). `localhost` is
/// resolved only when granted by that name.
#[derive(Clone)]
pub struct GuardedResolver {
    localhost_granted: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let name = name.as_str().to_string();
        let localhost_granted = self.localhost_granted;
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let allow_internal = localhost_granted && name.eq_ignore_ascii_case("localhost");
            let allowed: Vec<SocketAddr> = all
                .into_iter()
                .filter(|a| allow_internal || !is_internal(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(Box::new(InternalAddressRefused(name))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP client a component's `http.send` uses: no redirects (a redirect could leave the
/// allow-list), no proxy from the environment, the guarded resolver.
pub fn http_client(capabilities: &Capabilities) -> anyhow::Result<reqwest::Client> {
    let _ = rustls_provider();
    let localhost_granted = capabilities
        .http
        .iter()
        .filter_map(|e| HostPattern::parse(e))
        .any(|p| p.host == "localhost");
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(GuardedResolver { localhost_granted }))
        .build()?)
}

fn rustls_provider() -> Result<(), Arc<rustls::crypto::CryptoProvider>> {
    rustls::crypto::ring::default_provider().install_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(http: &[&str]) -> Capabilities {
        Capabilities {
            http: http.iter().map(|s| s.to_string()).collect(),
            ..Capabilities::default()
        }
    }

    fn url(s: &str) -> reqwest::Url {
        reqwest::Url::parse(s).expect("test url")
    }

    #[test]
    fn every_special_purpose_range_is_internal() {
        let internal = [
            "0.0.0.0",
            "0.0.0.1",
            "0.255.255.255",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.1",
            "192.0.0.170",
            "192.0.2.1",
            "192.31.196.1",
            "192.52.193.1",
            "192.88.99.1",
            "192.168.1.1",
            "192.175.48.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.255",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "100::1",
            "100:0:0:1::1",
            "2001::1",
            "2001:2::1",
            "2001:10::1",
            "2001:20::1",
            "2001:db8::1",
            "2002:7f00:1::",
            "2002:c0a8:101::",
            "2620:4f:8000::1",
            "3fff::1",
            "5f00::1",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "::127.0.0.1",
            "::10.0.0.1",
        ];
        for ip in internal {
            assert!(is_internal(ip.parse().unwrap()), "{ip} must be internal");
        }
        let public = [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "64:ff9b::808:808",
            "2002:808:808::",
            "::ffff:8.8.8.8",
        ];
        for ip in public {
            assert!(!is_internal(ip.parse().unwrap()), "{ip} must be public");
        }
    }

    #[test]
    fn upload_grants_are_checked_against_the_yaml() {
        let yaml = Capabilities {
            http: vec!["*.example.com".into(), "api.other.com:443".into()],
            state: vec!["cache".into()],
            events: vec!["orders.*".into()],
            pipelines: vec!["*".into()],
            ..Capabilities::default()
        };
        let narrower = Capabilities {
            http: vec![
                "api.example.com".into(),
                "*.eu.example.com".into(),
                "api.other.com:443".into(),
            ],
            state: vec!["cache".into()],
            events: vec!["orders.new".into(), "orders.eu.*".into()],
            pipelines: vec!["checkout".into()],
            ..Capabilities::default()
        };
        assert!(narrower.not_covered_by(&yaml).is_empty());
        let wider = Capabilities {
            http: vec![
                "example.com".into(),
                "api.other.com".into(),
                "evil.com".into(),
            ],
            state: vec!["secrets".into()],
            events: vec!["*".into(), "payments".into()],
            env: vec!["HOME".into()],
            dirs: vec![DirGrant {
                host: "/".into(),
                guest: "/host".into(),
            }],
            ..Capabilities::default()
        };
        assert_eq!(
            wider.not_covered_by(&yaml),
            [
                "capabilities.http: `example.com`",
                "capabilities.http: `api.other.com`",
                "capabilities.http: `evil.com`",
                "capabilities.state: `secrets`",
                "capabilities.events: `*`",
                "capabilities.events: `payments`",
                "capabilities.env: `HOME`",
                "capabilities.dirs: `/` as `/host`",
            ]
        );
        // Nothing in the YAML: an upload may ask for nothing.
        assert_eq!(narrower.not_covered_by(&Capabilities::default()).len(), 7);
    }

    #[test]
    fn http_allow_list_matches_hosts_ports_and_subdomains() {
        let c = caps(&[
            "api.example.com",
            "*.github.com",
            "127.0.0.1:8080",
            "bad.example.com:80800",
            "[::1]:9000",
        ]);
        assert!(c.url_allowed(&url("https://api.example.com/x")).is_ok());
        assert!(c.url_allowed(&url("https://raw.github.com/x")).is_ok());
        assert!(c.url_allowed(&url("https://github.com/x")).is_err());
        assert!(c.url_allowed(&url("http://127.0.0.1:8080/")).is_ok());
        assert!(c.url_allowed(&url("http://127.0.0.1:8081/")).is_err());
        assert!(c.url_allowed(&url("http://[::1]:9000/")).is_ok());
        assert!(c.url_allowed(&url("http://evil.example.com/")).is_err());
        // A malformed port grants nothing (not "any port").
        assert!(c.url_allowed(&url("http://bad.example.com:8080/")).is_err());
        assert!(c.url_allowed(&url("file:///etc/passwd")).is_err());
        let err = caps(&[]).url_allowed(&url("http://10.0.0.1/")).unwrap_err();
        assert!(
            err.contains("add `10.0.0.1` to `capabilities.http`"),
            "{err}"
        );
    }

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "169.254.1.1",
            "::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "100.64.0.1",
            "0.0.0.0",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "::127.0.0.1",
        ] {
            assert!(is_internal(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111"] {
            assert!(!is_internal(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[tokio::test]
    async fn the_resolver_refuses_internal_addresses_unless_localhost_is_granted() {
        use reqwest::dns::Resolve;
        let name = |n: &str| std::str::FromStr::from_str(n).expect("dns name");
        let refused = GuardedResolver {
            localhost_granted: false,
        }
        .resolve(name("localhost"))
        .await
        .err()
        .expect("localhost refused");
        assert!(
            refused.downcast_ref::<InternalAddressRefused>().is_some(),
            "{refused}"
        );
        let allowed = GuardedResolver {
            localhost_granted: true,
        }
        .resolve(name("localhost"))
        .await
        .expect("localhost granted");
        assert!(allowed.into_iter().all(|a| a.ip().is_loopback()));
    }

    #[test]
    fn topics_and_buckets_are_denied_unless_granted() {
        let c = Capabilities {
            events: vec!["orders.*".into(), "audit".into()],
            state: vec!["cache".into()],
            ..Capabilities::default()
        };
        assert!(c.topic_allowed("orders.created").is_ok());
        assert!(c.topic_allowed("audit").is_ok());
        assert!(c.topic_allowed("payments").is_err());
        assert!(c.state_allowed("cache").is_ok());
        assert!(c.state_allowed("secrets").is_err());
    }
}
