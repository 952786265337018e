//! The request headers as Spin gives them to a component: the `spin-*`
//! headers of the route (replacing any a client sent), no `Connection`, so
//! a component reads the same values under the runner as under `spin up`.
//! Spin defines them in `crates/trigger-http/src/headers.rs`
//! (`compute_default_headers`, `prepare_header_key`); Spin's conformance
//! suite (`fermyon/conformance-tests`, test `request-shape`) checks them.

use std::net::SocketAddr;

use http::header::{HeaderName, HeaderValue};

use crate::routes::RouteMatch;

pub fn set_spin_headers<B>(request: &mut http::Request<B>, route: &RouteMatch, client_addr: SocketAddr) {
    let host = request
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_owned();
    let scheme = request.uri().scheme_str().unwrap_or("http").to_owned();
    let path_and_query = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
    let mut values = vec![
        ("spin-path-info".to_owned(), route.path_info.clone()),
        ("spin-full-url".to_owned(), format!("{scheme}://{host}{path_and_query}")),
        ("spin-matched-route".to_owned(), route.based_route.clone()),
        ("spin-base-path".to_owned(), "/".to_owned()),
        ("spin-raw-component-route".to_owned(), route.raw_route.clone()),
        ("spin-component-route".to_owned(), route.component_route().to_owned()),
        ("spin-client-addr".to_owned(), client_addr.to_string()),
    ];
    for (name, value) in &route.captures {
        values.push((path_match_header(name), value.clone()));
    }
    let headers = request.headers_mut();
    // Transport information for the server alone; Spin drops it
    // (`strip_forbidden_headers`), so a guest forwarding the request is not
    // confused by it.
    headers.remove(http::header::CONNECTION);
    for (name, value) in values {
        // Spin leaves out a header whose name or value is not valid HTTP
        // (`prepare_request` in its `wasi.rs`) rather than failing the request.
        let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) else { continue };
        headers.insert(name, value);
    }
}

/// Whether every header value is UTF-8 text. Spin gives a component no
/// request with another value (`prepare_request_headers` fails on it); the
/// runner answers such a request 400 itself.
pub fn values_are_utf8(headers: &http::HeaderMap) -> bool {
    headers.values().all(|value| std::str::from_utf8(value.as_bytes()).is_ok())
}

/// The header of the `:name` capture: Spin builds `SPIN_PATH_MATCH_<NAME>`
/// and turns it into a header name by lowercasing it and writing every `_`
/// as `-`, so `:user_id` arrives as `spin-path-match-user-id`.
fn path_match_header(capture: &str) -> String {
    format!("spin-path-match-{}", capture.to_ascii_lowercase().replace('_', "-"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{HttpTrigger, RouteDecl};
    use crate::routes::Router;

    #[test]
    fn headers_for_a_wildcard_route_with_a_capture() {
        let trigger = HttpTrigger { route: RouteDecl::Pattern("/foo/:userid/...".into()), component: "c".into() };
        let (router, _) = Router::build(&[trigger]).unwrap();
        let route = router.route("/foo/42/bar").unwrap();
        let mut request = http::Request::builder()
            .uri("/foo/42/bar?key1=value1")
            .header("host", "fermyon.dev")
            .body(())
            .unwrap();
        set_spin_headers(&mut request, &route, "127.0.0.1:8777".parse().unwrap());
        let header = |name: &str| request.headers()[name].to_str().unwrap().to_owned();
        assert_eq!(header("spin-full-url"), "http://fermyon.dev/foo/42/bar?key1=value1");
        assert_eq!(header("spin-path-info"), "/bar");
        assert_eq!(header("spin-matched-route"), "/foo/:userid/...");
        assert_eq!(header("spin-raw-component-route"), "/foo/:userid/...");
        assert_eq!(header("spin-component-route"), "/foo/:userid");
        assert_eq!(header("spin-base-path"), "/");
        assert_eq!(header("spin-client-addr"), "127.0.0.1:8777");
        assert_eq!(header("spin-path-match-userid"), "42");
    }

    #[test]
    fn header_values_must_be_utf8() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-text", HeaderValue::from_bytes("café".as_bytes()).unwrap());
        assert!(values_are_utf8(&headers));
        headers.insert("x-latin", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        assert!(!values_are_utf8(&headers));
    }

    #[test]
    fn capture_names_become_header_names_as_spin_writes_them() {
        assert_eq!(path_match_header("path_segment"), "spin-path-match-path-segment");
        assert_eq!(path_match_header("userId"), "spin-path-match-userid");
        assert_eq!(path_match_header("id"), "spin-path-match-id");
    }
}
