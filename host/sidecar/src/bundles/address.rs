//! Which addresses the bundle worker may fetch from: public unicast only,
//! unless an operator's allow-list names the host (tests, intranets).
//!
//! "Public" means outside every range of the IANA IPv4 and IPv6
//! Special-Purpose Address Registries (RFC 6890 and its updates), plus the
//! multicast blocks and the deprecated forms that embed or tunnel to an IPv4
//! address. One table per family says which ranges and why; addresses that
//! carry an IPv4 address (IPv4-mapped, the NAT64 well-known prefix) are
//! judged by the address they carry.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use ipnet::{Ipv4Net, Ipv6Net};

/// One special-purpose range: where it is defined and what it is, for the
/// log (clients only ever read "not a public address").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialRange {
    pub range: &'static str,
    pub name: &'static str,
    pub rfc: &'static str,
}

impl std::fmt::Display for SpecialRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {})", self.range, self.name, self.rfc)
    }
}

const fn special(range: &'static str, name: &'static str, rfc: &'static str) -> SpecialRange {
    SpecialRange { range, name, rfc }
}

/// The first match names the range in the log, so the more specific come first.
const V4_RANGES: &[SpecialRange] = &[
    special("0.0.0.0/8", "this network", "RFC 791"),
    special("10.0.0.0/8", "private", "RFC 1918"),
    special(
        "100.64.0.0/10",
        "shared address space (carrier-grade NAT)",
        "RFC 6598",
    ),
    special("127.0.0.0/8", "loopback", "RFC 1122"),
    special("169.254.0.0/16", "link-local (cloud metadata)", "RFC 3927"),
    special("172.16.0.0/12", "private", "RFC 1918"),
    special("192.0.0.0/24", "IETF protocol assignments", "RFC 6890"),
    special("192.0.2.0/24", "documentation (TEST-NET-1)", "RFC 5737"),
    special("192.31.196.0/24", "AS112-v4", "RFC 7535"),
    special("192.52.193.0/24", "AMT", "RFC 7450"),
    special(
        "192.88.99.0/24",
        "deprecated 6to4 relay anycast",
        "RFC 7526",
    ),
    special("192.168.0.0/16", "private", "RFC 1918"),
    special(
        "192.175.48.0/24",
        "direct delegation AS112 service",
        "RFC 7534",
    ),
    special("198.18.0.0/15", "benchmarking", "RFC 2544"),
    special("198.51.100.0/24", "documentation (TEST-NET-2)", "RFC 5737"),
    special("203.0.113.0/24", "documentation (TEST-NET-3)", "RFC 5737"),
    special("224.0.0.0/4", "multicast", "RFC 5771"),
    special("255.255.255.255/32", "limited broadcast", "RFC 919"),
    special("240.0.0.0/4", "reserved", "RFC 1112"),
];

const V6_RANGES: &[SpecialRange] = &[
    special("::1/128", "loopback", "RFC 4291"),
    special("::/128", "unspecified", "RFC 4291"),
    special("::/96", "IPv4-compatible (deprecated)", "RFC 4291"),
    special("::ffff:0:0:0/96", "IPv4-translated", "RFC 2765"),
    special(
        "64:ff9b:1::/48",
        "local-use IPv4/IPv6 translation",
        "RFC 8215",
    ),
    special("100::/64", "discard-only", "RFC 6666"),
    special("100:0:0:1::/64", "dummy IPv6 prefix", "RFC 9780"),
    special("2001::/32", "Teredo", "RFC 4380"),
    special("2001:2::/48", "benchmarking", "RFC 5180"),
    special("2001::/23", "IETF protocol assignments", "RFC 2928"),
    special("2001:db8::/32", "documentation", "RFC 3849"),
    special("2002::/16", "6to4", "RFC 3056"),
    special(
        "2620:4f:8000::/48",
        "direct delegation AS112 service",
        "RFC 7534",
    ),
    special("3fff::/20", "documentation", "RFC 9637"),
    special("5f00::/16", "segment routing (SRv6) SIDs", "RFC 9602"),
    special("fc00::/7", "unique local (private)", "RFC 4193"),
    special("fe80::/10", "link-local", "RFC 4291"),
    special("fec0::/10", "site-local (deprecated)", "RFC 3879"),
    special("ff00::/8", "multicast", "RFC 4291"),
];

/// The NAT64 well-known prefix: its addresses stand for the IPv4 address in
/// their last 32 bits (DNS64 on IPv6-only networks answers with them), so
/// they are as public as that address.
const NAT64_WELL_KNOWN: SpecialRange = special("64:ff9b::/96", "IPv4/IPv6 translation", "RFC 6052");

static V4_NETS: LazyLock<Vec<(Ipv4Net, SpecialRange)>> = LazyLock::new(|| {
    V4_RANGES
        .iter()
        .map(|r| {
            (
                r.range.parse().expect("the V4 table holds valid ranges"),
                *r,
            )
        })
        .collect()
});
static V6_NETS: LazyLock<Vec<(Ipv6Net, SpecialRange)>> = LazyLock::new(|| {
    V6_RANGES
        .iter()
        .map(|r| {
            (
                r.range.parse().expect("the V6 table holds valid ranges"),
                *r,
            )
        })
        .collect()
});
static NAT64_NET: LazyLock<Ipv6Net> =
    LazyLock::new(|| NAT64_WELL_KNOWN.range.parse().expect("a valid range"));

/// The special-purpose range `ip` falls in, `None` for a public address.
pub fn forbidden_reason(ip: IpAddr) -> Option<SpecialRange> {
    match ip {
        IpAddr::V4(v4) => v4_range(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_range(v4);
            }
            if NAT64_NET.contains(&v6) {
                let [.., a, b, c, d] = v6.octets();
                return v4_range(Ipv4Addr::new(a, b, c, d));
            }
            v6_range(v6)
        }
    }
}

fn v4_range(ip: Ipv4Addr) -> Option<SpecialRange> {
    V4_NETS
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, range)| *range)
}

fn v6_range(ip: Ipv6Addr) -> Option<SpecialRange> {
    V6_NETS
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .map(|(_, range)| *range)
}

/// `--fetch-allow HOST[:PORT]` entries: a host name or address, and the one
/// port allowed on it; without a port, only the URL scheme's default port
/// (80 for http, 443 for https), so allowing a host never opens its other
/// services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntry {
    host: String,
    port: Option<u16>,
}

impl AllowEntry {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bad = || {
            format!(
                "--fetch-allow {text:?}: expected HOST or HOST:PORT (IPv6 in brackets: [::1]:8080)"
            )
        };
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
        let port = port
            .map(|p| p.parse::<u16>().map_err(|_| bad()))
            .transpose()?;
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// Whether a URL to `host:port`, whose scheme's default port is
    /// `default_port`, may go to this host.
    pub fn matches(&self, host: &str, port: u16, default_port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.host.eq_ignore_ascii_case(host) && self.port.unwrap_or(default_port) == port
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_by(text: &str) -> Option<&'static str> {
        forbidden_reason(text.parse().unwrap()).map(|r| r.range)
    }

    /// One address inside each special-purpose range, the range that must
    /// refuse it, and where that range is defined.
    #[test]
    fn every_special_purpose_range_is_refused() {
        let table: &[(&str, &str, &str)] = &[
            ("0.1.2.3", "0.0.0.0/8", "RFC 791"),
            ("0.0.0.0", "0.0.0.0/8", "RFC 791"),
            ("10.1.2.3", "10.0.0.0/8", "RFC 1918"),
            ("100.64.0.1", "100.64.0.0/10", "RFC 6598"),
            ("100.127.255.254", "100.64.0.0/10", "RFC 6598"),
            ("127.0.0.1", "127.0.0.0/8", "RFC 1122"),
            ("127.255.0.9", "127.0.0.0/8", "RFC 1122"),
            ("169.254.169.254", "169.254.0.0/16", "RFC 3927"),
            ("172.16.0.1", "172.16.0.0/12", "RFC 1918"),
            ("172.31.255.1", "172.16.0.0/12", "RFC 1918"),
            ("192.0.0.8", "192.0.0.0/24", "RFC 6890"),
            ("192.0.0.170", "192.0.0.0/24", "RFC 6890"),
            ("192.0.2.10", "192.0.2.0/24", "RFC 5737"),
            ("192.31.196.1", "192.31.196.0/24", "RFC 7535"),
            ("192.52.193.1", "192.52.193.0/24", "RFC 7450"),
            ("192.88.99.1", "192.88.99.0/24", "RFC 7526"),
            ("192.168.1.1", "192.168.0.0/16", "RFC 1918"),
            ("192.175.48.6", "192.175.48.0/24", "RFC 7534"),
            ("198.18.0.1", "198.18.0.0/15", "RFC 2544"),
            ("198.19.255.1", "198.18.0.0/15", "RFC 2544"),
            ("198.51.100.7", "198.51.100.0/24", "RFC 5737"),
            ("203.0.113.9", "203.0.113.0/24", "RFC 5737"),
            ("224.0.0.1", "224.0.0.0/4", "RFC 5771"),
            ("239.255.255.250", "224.0.0.0/4", "RFC 5771"),
            ("240.0.0.1", "240.0.0.0/4", "RFC 1112"),
            ("255.255.255.255", "255.255.255.255/32", "RFC 919"),
            ("::1", "::1/128", "RFC 4291"),
            ("::", "::/128", "RFC 4291"),
            ("::7f00:1", "::/96", "RFC 4291"),
            ("::a9fe:a9fe", "::/96", "RFC 4291"),
            ("::808:808", "::/96", "RFC 4291"),
            ("::ffff:0:7f00:1", "::ffff:0:0:0/96", "RFC 2765"),
            ("::ffff:0:808:808", "::ffff:0:0:0/96", "RFC 2765"),
            ("64:ff9b:1::a00:1", "64:ff9b:1::/48", "RFC 8215"),
            ("64:ff9b:1::808:808", "64:ff9b:1::/48", "RFC 8215"),
            ("100::1", "100::/64", "RFC 6666"),
            ("100:0:0:1::1", "100:0:0:1::/64", "RFC 9780"),
            ("2001::1", "2001::/32", "RFC 4380"),
            (
                "2001:0:4136:e378:8000:63bf:3fff:fdd2",
                "2001::/32",
                "RFC 4380",
            ),
            ("2001:1::1", "2001::/23", "RFC 2928"),
            ("2001:2::5", "2001:2::/48", "RFC 5180"),
            ("2001:3::1", "2001::/23", "RFC 2928"),
            ("2001:4:112::1", "2001::/23", "RFC 2928"),
            ("2001:10::1", "2001::/23", "RFC 2928"),
            ("2001:20::1", "2001::/23", "RFC 2928"),
            ("2001:30::1", "2001::/23", "RFC 2928"),
            ("2001:db8::1", "2001:db8::/32", "RFC 3849"),
            ("2002:a00:1::", "2002::/16", "RFC 3056"),
            ("2002:808:808::1", "2002::/16", "RFC 3056"),
            ("2620:4f:8000::1", "2620:4f:8000::/48", "RFC 7534"),
            ("3fff::1", "3fff::/20", "RFC 9637"),
            ("5f00::1", "5f00::/16", "RFC 9602"),
            ("fc00::1", "fc00::/7", "RFC 4193"),
            ("fd00:ec2::254", "fc00::/7", "RFC 4193"),
            ("fe80::1", "fe80::/10", "RFC 4291"),
            ("fec0::1", "fec0::/10", "RFC 3879"),
            ("ff02::1", "ff00::/8", "RFC 4291"),
        ];
        for (address, range, rfc) in table {
            let found = forbidden_reason(address.parse().unwrap())
                .unwrap_or_else(|| panic!("{address} must be refused ({range}, {rfc})"));
            assert_eq!(found.range, *range, "{address}");
            assert_eq!(found.rfc, *rfc, "{address}");
        }
        // Every range of the tables is exercised above.
        for range in V4_RANGES.iter().chain(V6_RANGES) {
            assert!(
                table.iter().any(|(_, r, _)| r == &range.range),
                "no case for {range}"
            );
        }
    }

    #[test]
    fn addresses_that_carry_an_ipv4_address_are_judged_by_it() {
        assert_eq!(
            refused_by("::ffff:127.0.0.1"),
            Some("127.0.0.0/8"),
            "IPv4-mapped loopback"
        );
        assert_eq!(refused_by("::ffff:169.254.169.254"), Some("169.254.0.0/16"));
        assert_eq!(refused_by("::ffff:192.0.0.8"), Some("192.0.0.0/24"));
        assert_eq!(
            refused_by("64:ff9b::a00:1"),
            Some("10.0.0.0/8"),
            "NAT64 to a private address"
        );
        assert_eq!(refused_by("64:ff9b::7f00:1"), Some("127.0.0.0/8"));
        assert_eq!(refused_by("::ffff:8.8.8.8"), None, "IPv4-mapped public");
        assert_eq!(
            refused_by("64:ff9b::808:808"),
            None,
            "NAT64 to a public address (DNS64 networks)"
        );
    }

    #[test]
    fn public_addresses_pass() {
        for text in [
            "93.184.216.34",
            "1.1.1.1",
            "8.8.8.8",
            "192.0.1.1",
            "100.128.0.1",
            "198.20.0.1",
            "2606:4700:4700::1111",
            "2a00:1450::1",
            "2001:200::1",
        ] {
            assert_eq!(refused_by(text), None, "{text} is public");
        }
    }

    #[test]
    fn allow_entries() {
        let entry = AllowEntry::parse("127.0.0.1:8080").unwrap();
        assert!(entry.matches("127.0.0.1", 8080, 80));
        assert!(!entry.matches("127.0.0.1", 22, 80));
        let no_port = AllowEntry::parse("Files.Intranet").unwrap();
        assert!(
            no_port.matches("files.intranet", 443, 443),
            "https default port"
        );
        assert!(
            no_port.matches("files.intranet", 80, 80),
            "http default port"
        );
        assert!(
            !no_port.matches("files.intranet", 8080, 80),
            "another port of an allowed host"
        );
        assert!(
            !no_port.matches("files.intranet", 80, 443),
            "http's port under https"
        );
        assert!(
            AllowEntry::parse("[::1]:9000")
                .unwrap()
                .matches("[::1]", 9000, 80)
        );
        for bad in ["", ":80", "host:port", "a/b", "::1:80", "[::1", "[::1]x"] {
            assert!(AllowEntry::parse(bad).is_err(), "{bad:?}");
        }
    }
}
