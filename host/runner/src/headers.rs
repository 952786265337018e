//! The `spin-*` request headers Spin sets for a routed request, so a
//! component reads the same values under the runner as under `spin up`.

use std::net::SocketAddr;

use anyhow::Result;
use http::header::{HeaderName, HeaderValue};

use crate::routes::RouteMatch;

pub fn set_spin_headers<B>(request: &mut http::Request<B>, route: &RouteMatch, client_addr: SocketAddr) -> Result<()> {
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
        ("spin-matched-route".to_owned(), route.raw_route.clone()),
        ("spin-base-path".to_owned(), "/".to_owned()),
        ("spin-raw-component-route".to_owned(), route.raw_route.clone()),
        ("spin-component-route".to_owned(), route.component_route().to_owned()),
        ("spin-client-addr".to_owned(), client_addr.to_string()),
    ];
    for (name, value) in &route.captures {
        values.push((format!("spin-path-match-{}", name.to_ascii_lowercase()), value.clone()));
    }
    let headers = request.headers_mut();
    for (name, value) in values {
        headers.insert(HeaderName::try_from(name)?, HeaderValue::try_from(value)?);
    }
    Ok(())
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
        set_spin_headers(&mut request, &route, "127.0.0.1:8777".parse().unwrap()).unwrap();
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
}
