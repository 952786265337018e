//! `POST /bundles`: checks every URL, records the bundle's `queued` event
//! and appends its job to the `bundles` stream; the worker does the rest.

use orders_common::access::{Access, Scope, client_address};
use orders_common::bundle::BundleId;
use orders_common::clock::now_rfc3339;
use orders_common::request::json_body;
use orders_common::respond::{finish, json, request_id};
use orders_common::vocabulary::bundle::{BundleEvent, BundleJob};
use orders_common::{ApiError, FieldError, SidecarClient};
use serde_json::{Map, Value, json};
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

const MAX_URL_LENGTH: usize = 2048;

#[http_component]
async fn handle(request: Request) -> Response {
    finish(request_id(&request), create_bundle(request).await)
}

async fn create_bundle(request: Request) -> Result<Response, ApiError> {
    if *request.method() != Method::Post {
        return Err(ApiError::method_not_allowed(&["POST"]));
    }
    let urls = parse_urls(&json_body(&request)?, max_urls())?;
    let mut random = [0u8; 12];
    getrandom::fill(&mut random).map_err(|e| ApiError::unavailable(format!("No randomness for an id: {e}")))?;
    let id = BundleId::random(random);
    let sidecar = SidecarClient::from_request(&request, Access::Scope(Scope::Bundles))?;
    // The event first: once the job exists a worker may write the next ones.
    let queued = BundleEvent::Queued { created_at: now_rfc3339(), urls: urls.clone() };
    sidecar.append_bundle_event(&id, &queued).await?;
    sidecar.queue_bundle_job(&BundleJob { bundle: id.as_str().to_owned(), urls }, &limit_key(&request)).await?;
    let location = format!("/bundles/{}", id.as_str());
    let body = json!({ "id": id.as_str(), "status": "queued", "events": format!("{location}/events"), "state": location });
    Ok(json(202, &body, &[("location", location.clone())]))
}

/// Whom a bundle counts against while it is queued or running: the client's
/// address, by the same rule access control throttles by
/// (`access::client_address`). (With access control, the caller's key.)
fn limit_key(request: &Request) -> String {
    let header = |name: &str| request.header(name).and_then(|v| v.as_str()).map(str::to_owned);
    client_of(header("spin-client-addr").as_deref(), header("x-forwarded-for").as_deref())
}

fn client_of(peer: Option<&str>, forwarded_for: Option<&str>) -> String {
    format!("client:{}", client_address(peer, forwarded_for).as_deref().unwrap_or("unknown"))
}

/// The `bundle_max_urls` variable, 20 when unset or unreadable.
fn max_urls() -> usize {
    spin_sdk::variables::get("bundle_max_urls").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(20)
}

/// `{"urls": [...]}` with 1..=max http(s) URLs; every problem reported at once.
fn parse_urls(body: &Map<String, Value>, max: usize) -> Result<Vec<String>, ApiError> {
    let mut errors: Vec<FieldError> = body
        .keys()
        .filter(|key| key.as_str() != "urls")
        .map(|key| FieldError::new(key.clone(), "unknown field; a bundle has only \"urls\""))
        .collect();
    let items = match body.get("urls") {
        Some(Value::Array(items)) if items.is_empty() => {
            errors.push(FieldError::new("urls", "give at least one URL"));
            &[][..]
        }
        Some(Value::Array(items)) if items.len() > max => {
            errors.push(FieldError::new("urls", format!("at most {max} URLs per bundle, got {}", items.len())));
            &[][..]
        }
        Some(Value::Array(items)) => items.as_slice(),
        Some(_) => {
            errors.push(FieldError::new("urls", "must be an array of URLs"));
            &[][..]
        }
        None => {
            errors.push(FieldError::new("urls", "is required"));
            &[][..]
        }
    };
    let mut urls = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        match check_url(item) {
            Ok(url) => urls.push(url),
            Err(problem) => errors.push(FieldError::new(format!("urls[{index}]"), problem)),
        }
    }
    if errors.is_empty() { Ok(urls) } else { Err(ApiError::unprocessable(errors)) }
}

fn check_url(item: &Value) -> Result<String, String> {
    let text = item.as_str().ok_or("must be a string")?.trim();
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    if text.len() > MAX_URL_LENGTH {
        return Err(format!("longer than {MAX_URL_LENGTH} characters"));
    }
    let url = url::Url::parse(text).map_err(|e| format!("not a valid URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme {} is not allowed; use http or https", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn accepts_http_and_https() {
        let urls = parse_urls(&body(json!({ "urls": ["https://a.example/x.png", " http://b.example:8080/y?z=1 "] })), 20).unwrap();
        assert_eq!(urls, ["https://a.example/x.png", "http://b.example:8080/y?z=1"]);
    }

    #[test]
    fn reports_every_bad_url() {
        let error = parse_urls(
            &body(json!({ "urls": ["ftp://a/x", "", 3, "not a url", "http://user:pw@a/x", "https://ok.example/"], "extra": 1 })),
            20,
        )
        .unwrap_err();
        assert_eq!(error.status, 422);
        let fields: Vec<&str> = error.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["extra", "urls[0]", "urls[1]", "urls[2]", "urls[3]", "urls[4]"]);
    }

    #[test]
    fn bundles_count_against_the_client_not_the_local_proxy() {
        assert_eq!(client_of(Some("203.0.113.7:5555"), None), "client:203.0.113.7");
        assert_eq!(client_of(Some("203.0.113.7:5555"), Some("10.9.9.9")), "client:203.0.113.7", "only a local proxy is believed");
        assert_eq!(client_of(Some("127.0.0.1:4000"), Some("198.51.100.2")), "client:198.51.100.2");
        assert_eq!(client_of(Some("127.0.0.1:4000"), Some("1.1.1.1, 198.51.100.2")), "client:198.51.100.2", "the proxy's own entry");
        assert_eq!(client_of(Some("127.0.0.1:4000"), Some("garbage")), "client:127.0.0.1");
        assert_eq!(client_of(None, None), "client:unknown");
    }

    #[test]
    fn counts_urls() {
        assert_eq!(parse_urls(&body(json!({ "urls": [] })), 20).unwrap_err().errors[0].field, "urls");
        let many: Vec<String> = (0..21).map(|i| format!("https://a.example/{i}")).collect();
        assert!(parse_urls(&body(json!({ "urls": many })), 20).unwrap_err().errors[0].problem.contains("at most 20"));
        assert!(parse_urls(&body(json!({})), 20).is_err());
        assert!(parse_urls(&body(json!({ "urls": "https://a.example/" })), 20).is_err());
    }
}
