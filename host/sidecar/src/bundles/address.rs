//! Which addresses the bundle worker may fetch from: public unicast only,
//! unless an operator's allow-list names the host (tests, intranets).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is refused, in words for the URL's error message; `None`
/// for a public address.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4_reason(v4),
            None => v6_reason(v6),
        },
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(match () {
        _ if ip.is_loopback() => "a loopback address",
        _ if ip.is_private() => "a private address",
        _ if ip.is_link_local() => "a link-local address (cloud metadata lives there)",
        _ if ip.is_multicast() => "a multicast address",
        _ if ip.is_broadcast() => "the broadcast address",
        _ if ip.is_unspecified() || a == 0 => "an unspecified address",
        _ if a == 100 && (64..128).contains(&b) => "a shared (carrier-grade NAT) address",
        _ if ip.is_documentation() || (a == 198 && (b == 18 || b == 19)) => "a reserved address",
        _ if a >= 240 => "a reserved address",
        _ => return None,
    })
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    Some(match () {
        _ if ip.is_loopback() => "a loopback address",
        _ if ip.is_unspecified() => "an unspecified address",
        _ if ip.is_multicast() => "a multicast address",
        _ if ip.is_unique_local() => "a private address",
        _ if ip.is_unicast_link_local() => "a link-local address",
        // fec0::/10 (site-local, deprecated but routed by some networks), 2001:db8::/32.
        _ if first & 0xffc0 == 0xfec0 || (first == 0x2001 && ip.segments()[1] == 0x0db8) => "a reserved address",
        // 64:ff9b::/96 and 2002::/16 embed IPv4 addresses that may be private.
        _ if first == 0x64 || first == 0x2002 => "an address that tunnels to IPv4",
        _ => return None,
    })
}

/// `--fetch-allow HOST[:PORT]` entries: a host name or address, and
/// optionally the one port allowed on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntry {
    host: String,
    port: Option<u16>,
}

impl AllowEntry {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bad = || format!("--fetch-allow {text:?}: expected HOST or HOST:PORT (IPv6 in brackets: [::1]:8080)");
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, tail) = rest.split_once(']').ok_or_else(bad)?;
            match tail {
                "" => (host, None),
                _ => (host, Some(tail.strip_prefix(':').ok_or_else(bad)?)),
            }
        } else {
            match text.rsplit_once(':') {
                Some((host, port)) if !host.contains(':') => (host, Some(port)),
                Some(_) => return Err(bad()),
                None => (text, None),
            }
        };
        if host.is_empty() || host.contains('/') {
            return Err(bad());
        }
        let port = port.map(|p| p.parse::<u16>().map_err(|_| bad())).transpose()?;
        Ok(Self { host: host.to_ascii_lowercase(), port })
    }

    pub fn matches(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.host.eq_ignore_ascii_case(host) && self.port.is_none_or(|p| p == port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_every_internal_range() {
        for text in [
            "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0", "100.64.0.1",
            "224.0.0.1", "255.255.255.255", "::1", "::", "fc00::1", "fe80::1", "ff02::1", "::ffff:127.0.0.1",
            "::ffff:169.254.169.254", "64:ff9b::a00:1", "2002:a00:1::", "fd00:ec2::254",
        ] {
            assert!(forbidden_reason(text.parse().unwrap()).is_some(), "{text} must be refused");
        }
        for text in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "8.8.8.8"] {
            assert_eq!(forbidden_reason(text.parse().unwrap()), None, "{text} is public");
        }
    }

    #[test]
    fn allow_entries() {
        let entry = AllowEntry::parse("127.0.0.1:8080").unwrap();
        assert!(entry.matches("127.0.0.1", 8080));
        assert!(!entry.matches("127.0.0.1", 22));
        let any_port = AllowEntry::parse("Files.Intranet").unwrap();
        assert!(any_port.matches("files.intranet", 443));
        assert!(AllowEntry::parse("[::1]:9000").unwrap().matches("[::1]", 9000));
        for bad in ["", ":80", "host:port", "a/b", "::1:80", "[::1", "[::1]x"] {
            assert!(AllowEntry::parse(bad).is_err(), "{bad:?}");
        }
    }
}
