//! The component's half of access control (docs/adr/0010): the caller's
//! credential travels with every sidecar call, and a refusal from the
//! sidecar reaches the client as the sidecar phrased it, with its status and
//! headers (401 + `WWW-Authenticate`, 403 naming the scope, 429 + `Retry-After`).

use orders_access::{PASSED_HEADERS, Refusal};
use serde::Deserialize;
use spin_sdk::http::Response;

pub use orders_access::{Access, Scope};

use crate::error::ApiError;

#[derive(Deserialize)]
struct RefusalBody {
    error: String,
    #[serde(default)]
    message: String,
}

/// The client's address, for throttling failed authentications: the direct
/// peer (Spin's `spin-client-addr`), or, when that peer is on loopback (a
/// balancer on this machine, as `orders cluster` runs nginx) or is Spin's
/// `0.0.0.0:0` of a service-chained request (the router's caller, whose
/// headers it passed on), the last address of the `X-Forwarded-For` it
/// set. Only the last entry is the proxy's own word: a proxy that appends
/// (`$proxy_add_x_forwarded_for`) keeps whatever the client sent in front of
/// it, so a first-entry rule would let a client pick its own address and
/// dodge every per-address limit. A balancer on another host is itself the
/// address then (see docs/adr/0010).
pub fn client_address(peer: Option<&str>, forwarded: Option<&str>) -> Option<String> {
    let peer: std::net::IpAddr = peer?.parse::<std::net::SocketAddr>().map(|a| a.ip()).ok()?;
    let proxy_said = forwarded.and_then(|f| f.rsplit(',').next()).and_then(|f| f.trim().parse::<std::net::IpAddr>().ok());
    match proxy_said {
        Some(forwarded) if peer.is_loopback() || peer.is_unspecified() => Some(forwarded.to_string()),
        _ => Some(peer.to_string()),
    }
}

/// The headers of a request chained on to another component: the caller's,
/// less those Spin sets anew (`spin-*`, `host`), with `X-Forwarded-For`
/// replaced by the one client address resolved here. The callee's peer is
/// Spin's `0.0.0.0:0`, so it takes that header's last entry as the client:
/// passed on as sent, it would let a remote client that reaches Spin
/// directly name any address and dodge the per-address throttle.
pub fn chained_headers(headers: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    let text = |name: &str| {
        headers.iter().rev().find(|(n, _)| n.eq_ignore_ascii_case(name)).and_then(|(_, value)| std::str::from_utf8(value).ok())
    };
    let client = client_address(text("spin-client-addr"), text(FORWARDED_FOR));
    let mut chained: Vec<(String, Vec<u8>)> = headers
        .into_iter()
        .filter(|(name, _)| {
            let name = name.to_ascii_lowercase();
            !name.starts_with("spin-") && name != "host" && name != FORWARDED_FOR
        })
        .collect();
    chained.extend(client.map(|client| (FORWARDED_FOR.to_owned(), client.into_bytes())));
    chained
}

const FORWARDED_FOR: &str = "x-forwarded-for";

/// The client's refusal, when the sidecar refused the caller (not the component).
pub fn refusal(response: &Response) -> Option<ApiError> {
    if !matches!(*response.status(), 401 | 403 | 429) {
        return None;
    }
    let body: RefusalBody = serde_json::from_slice(response.body()).ok()?;
    let refusal = Refusal::from_code(&body.error)?;
    let headers = PASSED_HEADERS
        .iter()
        .filter_map(|name| response.header(name).and_then(|v| v.as_str()).map(|v| (*name, v.to_owned())))
        .collect();
    Some(ApiError::refused(refusal.status(), body.message, headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forwarded_address_counts_only_from_loopback() {
        assert_eq!(client_address(Some("127.0.0.1:5000"), Some("203.0.113.7")).as_deref(), Some("203.0.113.7"));
        assert_eq!(
            client_address(Some("127.0.0.1:5000"), Some("10.9.9.9, 203.0.113.7")).as_deref(),
            Some("203.0.113.7"),
            "the entry the proxy appended, not the one the client sent"
        );
        assert_eq!(client_address(Some("127.0.0.1:5000"), Some("203.0.113.7, garbage")).as_deref(), Some("127.0.0.1"));
        assert_eq!(client_address(Some("198.51.100.2:5000"), Some("203.0.113.7")).as_deref(), Some("198.51.100.2"));
        assert_eq!(client_address(Some("127.0.0.1:5000"), Some("not-an-ip")).as_deref(), Some("127.0.0.1"));
        assert_eq!(client_address(None, Some("203.0.113.7")), None);
        assert_eq!(client_address(Some("0.0.0.0:0"), Some("203.0.113.7")).as_deref(), Some("203.0.113.7"), "a chained request");
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs.iter().map(|(name, value)| ((*name).to_owned(), value.as_bytes().to_vec())).collect()
    }

    /// What the callee of a chained request resolves as the client.
    fn callee_sees(chained: &[(String, Vec<u8>)]) -> Option<String> {
        let forwarded = chained.iter().find(|(name, _)| name == FORWARDED_FOR).map(|(_, v)| std::str::from_utf8(v).expect("text"));
        client_address(Some("0.0.0.0:0"), forwarded)
    }

    #[test]
    fn a_chained_request_names_the_client_the_router_resolved() {
        // A remote client reaching Spin directly, forging the header.
        let direct = chained_headers(headers(&[
            ("spin-client-addr", "198.51.100.2:40000"),
            ("x-forwarded-for", "203.0.113.7"),
            ("host", "orders.example"),
            ("authorization", "Bearer k"),
        ]));
        assert_eq!(callee_sees(&direct).as_deref(), Some("198.51.100.2"), "not the address the client chose");
        assert_eq!(
            direct,
            headers(&[("authorization", "Bearer k"), ("x-forwarded-for", "198.51.100.2")]),
            "Spin's headers and host go, the rest passes"
        );
        // Behind a proxy on this machine that appended the client's address.
        let proxied = chained_headers(headers(&[("spin-client-addr", "127.0.0.1:5000"), ("X-Forwarded-For", "10.9.9.9, 203.0.113.7")]));
        assert_eq!(callee_sees(&proxied).as_deref(), Some("203.0.113.7"));
        // Without a peer (not from Spin's listener) nothing is vouched for:
        // the client's header does not pass.
        assert_eq!(chained_headers(headers(&[("x-forwarded-for", "203.0.113.7"), ("accept", "*/*")])), headers(&[("accept", "*/*")]));
    }
}
