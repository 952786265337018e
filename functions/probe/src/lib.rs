//! Reports what the host gave this instance, so the runner's tests can pin
//! Spin's behaviours: the request headers, a variable, the outcome of an
//! outbound call (`?call=URL`) and how many requests this instance served.

use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{Map, Value, json};
use spin_sdk::http::{Request, Response, send};
use spin_sdk::http_component;

/// Per-instance state: a fresh instance per request always reports 1.
static SERVED: AtomicU32 = AtomicU32::new(0);

#[http_component]
async fn handle(request: Request) -> Response {
    let served = SERVED.fetch_add(1, Ordering::SeqCst) + 1;
    let headers: Map<String, Value> = request
        .headers()
        .map(|(name, value)| (name.to_owned(), Value::from(value.as_str().unwrap_or_default())))
        .collect();
    let variable = match spin_sdk::variables::get("probe_value") {
        Ok(value) => json!({ "ok": value }),
        Err(error) => json!({ "error": format!("{error:?}") }),
    };
    let undefined = spin_sdk::variables::get("not_declared").map_err(|e| format!("{e:?}")).err();
    let call = request.query().split('&').find_map(|pair| pair.strip_prefix("call=")).map(str::to_owned);
    let outbound = match call {
        Some(url) => match send::<_, Response>(Request::get(url).build()).await {
            Ok(response) => json!({ "status": response.status(), "body": String::from_utf8_lossy(response.body()) }),
            Err(error) => json!({ "error": format!("{error:?}") }),
        },
        None => Value::Null,
    };
    let body = json!({
        "component": std::env::var("PROBE_NAME").unwrap_or_default(),
        "served_by_this_instance": served,
        "headers": headers,
        "variable": variable,
        "undefined_variable": undefined,
        "outbound": outbound,
        "body_len": request.body().len(),
    });
    Response::builder().status(200).header("content-type", "application/json").body(body.to_string()).build()
}
