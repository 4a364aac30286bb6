//! Destination checks for subscriber URLs: scheme and address rules.

use std::net::IpAddr;

use reqwest::Url;

use crate::config::SecuritySettings;

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
pub fn is_public(addr: IpAddr) -> bool {
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
pub async fn check_url(url: &str, settings: &SecuritySettings) -> Result<Url, UrlError> {
    if url.len() > 2048 {
        return Err(UrlError::TooLong);
    }
    let parsed = Url::parse(url).map_err(|e| UrlError::Syntax(e.to_string()))?;
    match parsed.scheme() {
        "https" => {}
        "http" if settings.allow_insecure_http => {}
        _ => return Err(UrlError::Scheme),
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
    if settings.allow_private_networks {
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
    if let Some(addr) = addrs.into_iter().find(|a| !is_public(*a)) {
        return Err(UrlError::NonPublic { host, addr });
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> SecuritySettings {
        SecuritySettings {
            allow_insecure_http: false,
            allow_private_networks: false,
            secrets_key: String::new(),
        }
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
        let dev = SecuritySettings {
            allow_insecure_http: true,
            allow_private_networks: true,
            secrets_key: String::new(),
        };
        assert!(check_url("http://127.0.0.1:9/hook", &dev).await.is_ok());
    }
}
