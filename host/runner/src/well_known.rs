//! The paths Spin answers itself, before any route: under
//! `/.well-known/spin/` (`WELL_KNOWN_PREFIX`, `crates/routes/src/lib.rs` of
//! `spinframework/spin`), `health` is `OK`, `info` is the application's
//! name and version as JSON, and anything else is 404 — so no component,
//! not even one on `/...`, is ever given such a request
//! (`HttpServer::handle`, `crates/trigger-http/src/server.rs`).

use bytes::Bytes;
use http::{Response, StatusCode};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::app::full_body;
use crate::server::json_string;

pub const PREFIX: &str = "/.well-known/spin/";

/// What `/.well-known/spin/info` reports (Spin's `AppInfo`: the name,
/// and the version when the manifest gives one).
#[derive(Debug, Clone)]
pub struct AppInfo {
    pub name: String,
    pub version: Option<String>,
}

impl AppInfo {
    fn to_json(&self) -> String {
        match &self.version {
            Some(version) => format!(
                "{{\"name\":{},\"version\":{}}}",
                json_string(&self.name),
                json_string(version)
            ),
            None => format!("{{\"name\":{}}}", json_string(&self.name)),
        }
    }
}

/// The answer for `path` when it is one of Spin's own paths.
pub fn answer(path: &str, info: &AppInfo) -> Option<Response<HyperOutgoingBody>> {
    let name = path.strip_prefix(PREFIX)?;
    let response = match name {
        "health" => Response::builder().body(full_body(Bytes::from_static(b"OK"))),
        "info" => Response::builder()
            .header("content-type", "application/json")
            .body(full_body(Bytes::from(info.to_json()))),
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(full_body(Bytes::new())),
    };
    Some(response.expect("static response parts are valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> AppInfo {
        AppInfo {
            name: "orders".into(),
            version: Some("1.2.0".into()),
        }
    }

    #[test]
    fn only_paths_under_the_prefix_are_spins() {
        assert!(answer("/healthz", &info()).is_none());
        assert!(answer("/.well-known/other", &info()).is_none());
        assert_eq!(
            answer("/.well-known/spin/health", &info())
                .unwrap()
                .status(),
            StatusCode::OK
        );
        assert_eq!(
            answer("/.well-known/spin/info", &info()).unwrap().status(),
            StatusCode::OK
        );
        assert_eq!(
            answer("/.well-known/spin/elsewhere", &info())
                .unwrap()
                .status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn info_names_the_application() {
        assert_eq!(info().to_json(), r#"{"name":"orders","version":"1.2.0"}"#);
        assert_eq!(
            AppInfo {
                name: "a\"b".into(),
                version: None
            }
            .to_json(),
            r#"{"name":"a\"b"}"#
        );
    }
}
