//! `allowed_outbound_hosts`: what a component may call. An entry is
//! `scheme://host[:port]` where the scheme may be `*`, the host `*` or
//! `*.domain`, and the port `*`, a number or a range `a..b`; a missing port
//! means the scheme's default. As under Spin, a request to any other
//! destination fails with `HttpRequestDenied` before a connection is made.

use anyhow::{Context, Result, bail};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ports {
    Any,
    One(u16),
    Range(u16, u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    scheme: Option<String>,
    host: HostPattern,
    ports: Ports,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Subdomain(String),
    Literal(String),
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        "redis" => Some(6379),
        "postgres" => Some(5432),
        "mysql" => Some(3306),
        "mqtt" => Some(1883),
        _ => None,
    }
}

impl AllowedHost {
    pub fn parse(entry: &str) -> Result<Self> {
        let entry = entry.trim().trim_end_matches('/');
        let Some((scheme, rest)) = entry.split_once("://") else {
            bail!("{entry:?} has no scheme: write it as scheme://host[:port]");
        };
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || rest.starts_with('[') => (host, Some(port)),
            _ => (rest, None),
        };
        if host.contains('/') {
            bail!("{entry:?} must not contain a path");
        }
        let ports = match port {
            None => Ports::One(
                default_port(scheme)
                    .with_context(|| format!("{entry:?} needs a port: scheme {scheme:?} has no default"))?,
            ),
            Some("*") => Ports::Any,
            Some(range) if range.contains("..") => {
                let (start, end) = range.split_once("..").unwrap_or_default();
                Ports::Range(start.parse()?, end.parse()?)
            }
            Some(port) => Ports::One(port.parse().with_context(|| format!("{entry:?}: bad port {port:?}"))?),
        };
        let host = match host {
            "*" => HostPattern::Any,
            _ if host.starts_with("*.") => HostPattern::Subdomain(host[1..].to_ascii_lowercase()),
            _ if host.contains('*') => bail!("{entry:?}: wildcards are allowed only as a subdomain prefix"),
            _ => HostPattern::Literal(host.to_ascii_lowercase()),
        };
        let scheme = (scheme != "*").then(|| scheme.to_ascii_lowercase());
        Ok(Self { scheme, host, ports })
    }

    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        let host = host.to_ascii_lowercase();
        let scheme_ok = self.scheme.as_deref().is_none_or(|allowed| allowed == scheme);
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::Subdomain(suffix) => host.ends_with(suffix.as_str()),
            HostPattern::Literal(literal) => *literal == host,
        };
        let Some(port) = port.or_else(|| default_port(scheme)) else { return false };
        let port_ok = match self.ports {
            Ports::Any => true,
            Ports::One(allowed) => allowed == port,
            Ports::Range(start, end) => (start..end).contains(&port),
        };
        scheme_ok && host_ok && port_ok
    }
}

/// A component's whole allow-list.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    allowed: Vec<AllowedHost>,
}

impl OutboundPolicy {
    pub fn parse(entries: &[String]) -> Result<Self> {
        let allowed = entries.iter().map(|entry| AllowedHost::parse(entry)).collect::<Result<_>>()?;
        Ok(Self { allowed })
    }

    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        self.allowed.iter().any(|entry| entry.allows(scheme, host, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(entry: &str, scheme: &str, host: &str, port: Option<u16>) -> bool {
        AllowedHost::parse(entry).unwrap().allows(scheme, host, port)
    }

    #[test]
    fn exact_host_and_port() {
        assert!(allows("http://127.0.0.1:7071", "http", "127.0.0.1", Some(7071)));
        assert!(!allows("http://127.0.0.1:7071", "http", "127.0.0.1", Some(7072)));
        assert!(!allows("http://127.0.0.1:7071", "https", "127.0.0.1", Some(7071)));
        assert!(!allows("http://127.0.0.1:7071", "http", "127.0.0.2", Some(7071)));
    }

    #[test]
    fn missing_port_means_the_scheme_default() {
        assert!(allows("https://example.com", "https", "example.com", None));
        assert!(allows("https://example.com", "https", "example.com", Some(443)));
        assert!(!allows("https://example.com", "https", "example.com", Some(8443)));
    }

    #[test]
    fn wildcards() {
        assert!(allows("*://*:*", "http", "anything", Some(1)));
        assert!(allows("http://*.spin.internal", "http", "orders-list.spin.internal", None));
        assert!(!allows("http://*.spin.internal", "http", "spin.internal.evil.com", None));
        assert!(allows("http://localhost:3000..3010", "http", "localhost", Some(3005)));
        assert!(!allows("http://localhost:3000..3010", "http", "localhost", Some(3010)));
    }

    #[test]
    fn malformed_entries_are_rejected() {
        for bad in ["example.com", "http://ex*ample.com", "http://example.com/path", "foo://example.com"] {
            assert!(AllowedHost::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn empty_policy_denies_everything() {
        assert!(!OutboundPolicy::default().allows("http", "127.0.0.1", Some(80)));
    }
}
