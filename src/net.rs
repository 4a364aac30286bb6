//! Where webhooks may go. Destination checks for subscriber URLs: scheme and address rules, at
//! registration and again at connect time (a DNS resolver for the HTTP client
//! that only hands out permitted addresses, so DNS rebinding cannot pass).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// An address block such as `10.20.0.0/16` or `fd00::/8`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address block like 10.0.0.0/8"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?} has a bad prefix length"))?
        };
        Ok(Cidr { addr, prefix })
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        format!("{}/{}", c.addr, c.prefix)
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Where webhooks may go: which schemes, and which destination addresses.
#[derive(Debug, Clone)]
pub struct DestinationPolicy {
    allow_http: bool,
    allow_private: bool,
    allowed: Vec<Cidr>,
}

impl DestinationPolicy {
    pub fn new(allow_http: bool, allow_private: bool, allowed: Vec<Cidr>) -> Self {
        DestinationPolicy {
            allow_http,
            allow_private,
            allowed,
        }
    }

    /// Whether a URL scheme may be used (checked at registration and again
    /// at send time, so a rule tightened later applies to old subscriptions).
    pub(crate) fn permits_scheme(&self, scheme: &str) -> bool {
        scheme == "https" || (scheme == "http" && self.allow_http)
    }

    pub(crate) fn permits(&self, ip: IpAddr) -> bool {
        self.allow_private || is_public(ip) || self.allowed.iter().any(|c| c.contains(ip))
    }
}

/// The HTTP client's resolver: only permitted addresses come back, so a name
/// that resolves (or re-resolves) to a private address is never connected to.
pub(crate) struct GuardedResolver {
    policy: DestinationPolicy,
}

impl GuardedResolver {
    pub fn new(policy: DestinationPolicy) -> Arc<Self> {
        Arc::new(GuardedResolver { policy })
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| policy.permits(a.ip()))
                .collect();
            if permitted.is_empty() {
                return Err(
                    format!("destination refused: {host} resolves to no public address").into(),
                );
            }
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UrlError {
    #[error("url is not a valid absolute URL: {0}")]
    Syntax(String),
    #[error("url must use https (http is allowed only with security.allow_insecure_http)")]
    Scheme,
    #[error("url must not carry user name or password")]
    Credentials,
    #[error("url is longer than 2048 characters")]
    TooLong,
    #[error("url host {0} cannot be resolved")]
    Unresolvable(String),
    #[error("url host {host} resolves to {addr}, which is not a public address")]
    NonPublic { host: String, addr: IpAddr },
}

/// Whether an address is publicly routable (not loopback, private,
/// link-local, CGNAT, multicast, documentation, unspecified, …).
pub(crate) fn is_public(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x64 && s[1] == 0xff9b))
        }
    }
}

/// Checks a subscriber URL at registration: syntax, scheme, and (unless
/// private networks are allowed) that every address it resolves to is public.
pub async fn check_url(url: &str, policy: &DestinationPolicy) -> Result<Url, UrlError> {
    if url.len() > 2048 {
        return Err(UrlError::TooLong);
    }
    let parsed = Url::parse(url).map_err(|e| UrlError::Syntax(e.to_string()))?;
    if !policy.permits_scheme(parsed.scheme()) {
        return Err(UrlError::Scheme);
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(UrlError::Credentials);
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| UrlError::Syntax("no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if policy.allow_private {
        return Ok(parsed);
    }
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|_| UrlError::Unresolvable(host.clone()))?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() {
        return Err(UrlError::Unresolvable(host));
    }
    if let Some(addr) = addrs.into_iter().find(|a| !policy.permits(*a)) {
        return Err(UrlError::NonPublic { host, addr });
    }
    Ok(parsed)
}

/// A URL parsed for sending, or why it cannot be sent to.
pub fn parse_url(url: &str) -> Result<reqwest::Url, String> {
    reqwest::Url::parse(url).map_err(|e| format!("url is not valid: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> DestinationPolicy {
        DestinationPolicy::new(false, false, vec![])
    }

    #[test]
    fn non_public_addresses_are_recognized() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "192.0.2.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!is_public(a.parse().unwrap()), "{a}");
        }
        for a in ["93.184.216.34", "2606:4700::1111", "8.8.8.8"] {
            assert!(is_public(a.parse().unwrap()), "{a}");
        }
    }

    #[tokio::test]
    async fn hostile_urls_are_refused_at_registration() {
        let s = DestinationPolicy::new(true, false, vec![]);
        let hostile = [
            "https://127.0.0.1/",
            "https://127.1/",
            "https://0x7f000001/",
            "https://2130706433/",
            "https://017700000001/",
            "https://0177.0.0.1/",
            "https://127.000.000.001/",
            "https://0/",
            "https://0.0.0.0/",
            "https://localhost/",
            "https://localhost./",
            "https://[::1]/",
            "https://[::]/",
            "https://[::ffff:127.0.0.1]/",
            "https://[::ffff:7f00:1]/",
            "https://[::ffff:10.0.0.1]/",
            "https://10.0.0.1/",
            "https://10.255.255.255/",
            "https://172.16.0.1/",
            "https://172.31.255.254/",
            "https://192.168.0.1/",
            "https://169.254.169.254/latest/meta-data/",
            "https://169.254.0.1/",
            "https://100.64.0.1/",
            "https://100.127.255.255/",
            "https://224.0.0.1/",
            "https://239.255.255.250/",
            "https://255.255.255.255/",
            "https://192.0.2.10/",
            "https://198.51.100.1/",
            "https://203.0.113.5/",
            "https://198.18.0.1/",
            "https://240.0.0.1/",
            "https://[fd00::1]/",
            "https://[fc00::1]/",
            "https://[fe80::1]/",
            "https://[ff02::1]/",
            "https://[2001:db8::1]/",
            "https://[64:ff9b::7f00:1]/",
            "http://127.0.0.1:8080/",
        ];
        assert!(hostile.len() >= 30);
        for url in hostile {
            let err = check_url(url, &s).await.unwrap_err();
            assert!(
                matches!(err, UrlError::NonPublic { .. } | UrlError::Unresolvable(_)),
                "{url}: {err}"
            );
        }
        let strict = strict();
        for url in [
            "http://8.8.8.8/",
            "ftp://8.8.8.8/",
            "file:///etc/passwd",
            "gopher://8.8.8.8/",
        ] {
            assert_eq!(
                check_url(url, &strict).await.unwrap_err(),
                UrlError::Scheme,
                "{url}"
            );
        }
    }

    #[tokio::test]
    async fn allowed_networks_let_private_blocks_through() {
        let s = DestinationPolicy::new(false, false, vec!["10.20.0.0/16".parse().unwrap()]);
        assert!(check_url("https://10.20.3.4/hook", &s).await.is_ok());
        assert!(check_url("https://10.21.3.4/hook", &s).await.is_err());
        let block: Cidr = "fd12:3456::/32".parse().unwrap();
        assert!(block.contains("fd12:3456:1::1".parse().unwrap()));
        assert!(!block.contains("fd12:3457::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
    }

    #[tokio::test]
    async fn a_name_resolving_to_a_private_address_is_refused_at_connect_time() {
        // A real listener on loopback that must never see a connection.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = accepted.clone();
        tokio::spawn(async move {
            if listener.accept().await.is_ok() {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let s = DestinationPolicy::new(true, false, vec![]);
        let sender = crate::delivery::sender::Sender::new(
            std::time::Duration::from_secs(2),
            1024,
            s,
            None,
            None,
            64,
        )
        .unwrap();
        for url in [
            format!("http://localhost:{port}/hook"),
            format!("http://127.0.0.1:{port}/hook"),
        ] {
            let result = sender
                .send(crate::delivery::sender::Outbound {
                    url: &url,
                    parsed: None,
                    show_headers: false,
                    event_id: "evt_1",
                    body: &bytes::Bytes::from_static(b"{}"),
                    keys: &[&crate::signing::SigningKey::new(b"k")],
                    extra: &[],
                    bearer: None,
                })
                .await;
            let error = result.error.unwrap_or_default();
            assert!(error.contains("destination refused"), "{url}: {error}");
            assert_eq!(result.status, None);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!accepted.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test]
    async fn registration_refuses_loopback_and_http_without_connecting() {
        let s = strict();
        assert_eq!(
            check_url("http://example.com/hook", &s).await.unwrap_err(),
            UrlError::Scheme
        );
        assert!(matches!(
            check_url("https://127.0.0.1/hook", &s).await.unwrap_err(),
            UrlError::NonPublic { .. }
        ));
        assert!(matches!(
            check_url("https://[::1]:8443/hook", &s).await.unwrap_err(),
            UrlError::NonPublic { .. }
        ));
        assert!(matches!(
            check_url("https://localhost/hook", &s).await.unwrap_err(),
            UrlError::NonPublic { .. }
        ));
        assert_eq!(
            check_url("https://u:p@8.8.8.8/", &s).await.unwrap_err(),
            UrlError::Credentials
        );
        assert!(matches!(
            check_url("not a url", &s).await.unwrap_err(),
            UrlError::Syntax(_)
        ));
        let dev = DestinationPolicy::new(true, true, vec![]);
        assert!(check_url("http://127.0.0.1:9/hook", &dev).await.is_ok());
    }
}
