//! Reports what the host gave this instance, so the runner's tests can pin
//! Spin's behaviours: the request headers, a variable, the outcome of an
//! outbound call (`?call=URL`) and how many requests this instance served.
//! `?answer_header=NAME:VALUE` adds that header to its answer, and
//! `?declare_length` a `content-length`, so a test can see that the runner
//! passes the answer on as the component made it.

use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{Map, Value, json};
use spin_sdk::http::conversions::TryFromIncomingRequest;
use spin_sdk::http::{IncomingRequest, Request, Response, send};
use spin_sdk::http_component;

/// Per-instance state: a fresh instance per request always reports 1.
static SERVED: AtomicU32 = AtomicU32::new(0);

#[http_component]
async fn handle(incoming: IncomingRequest) -> Response {
    // Every header as the host gave it: `Request` keeps one value per name.
    let mut repeated: Vec<String> = incoming.headers().entries().into_iter().map(|(name, _)| name).collect();
    repeated.sort_unstable();
    repeated = repeated.windows(2).filter(|pair| pair[0] == pair[1]).map(|pair| pair[0].clone()).collect();
    repeated.dedup();
    let Ok(request) = Request::try_from_incoming_request(incoming).await else {
        return Response::new(400, "the request could not be read");
    };
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
    // Spin's conformance suite (`variables`) asks for these three names.
    let invalid: Vec<Value> = ["invalid-name", "invalid!name", "4invalidname"]
        .iter()
        .map(|name| Value::from(spin_sdk::variables::get(name).map_err(|e| format!("{e:?}")).err()))
        .collect();
    let query_value = |key: &str| request.query().split('&').find_map(|pair| pair.strip_prefix(key)).map(str::to_owned);
    let call = query_value("call=");
    let answer_header = query_value("answer_header=");
    let declare_length = request.query().split('&').any(|pair| pair == "declare_length");
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
        "repeated_headers": repeated,
        "variable": variable,
        "undefined_variable": undefined,
        "invalid_variable_names": invalid,
        "outbound": outbound,
        "body_len": request.body().len(),
    });
    let mut builder = Response::builder();
    builder.status(200).header("content-type", "application/json");
    if let Some((name, value)) = answer_header.as_deref().and_then(|header| header.split_once(':')) {
        builder.header(name, value);
    }
    let body = body.to_string();
    if declare_length {
        builder.header("content-length", body.len().to_string());
    }
    builder.body(body).build()
}
