//! `GET /bundles/{id}/events`: the bundle's events as Server-Sent Events,
//! each with its id so a reconnect (`Last-Event-ID`) resumes exactly after
//! it, and a `clock` event every second. The stream ends after
//! `STREAM_LIFETIME`; browsers reconnect by themselves and lose nothing.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::SinkExt;
use orders_common::access::{Access, Scope, client_address};
use orders_common::bundle::{BundleId, Event};
use orders_common::clock::format_unix_millis;
use orders_common::stream::{header, send_error, streaming_response};
use orders_common::{ApiError, SidecarClient};
use serde_json::json;
use spin_sdk::http::{IncomingRequest, Method, ResponseOutparam};
use spin_sdk::http_component;

const TICK: Duration = Duration::from_secs(1);
/// Bounds how long one request holds an instance.
const STREAM_LIFETIME: Duration = Duration::from_secs(300);

#[http_component]
async fn handle(request: IncomingRequest, out: ResponseOutparam) {
    if !matches!(request.method(), Method::Get) {
        return send_error(out, ApiError::method_not_allowed(&["GET"])).await;
    }
    let path = request.path_with_query().unwrap_or_default();
    let id = match BundleId::from_path(&path) {
        Ok(id) => id,
        Err(error) => return send_error(out, error).await,
    };
    let sidecar = match SidecarClient::new(
        header(&request, "x-request-id"),
        header(&request, "authorization"),
        client_address(header(&request, "spin-client-addr").as_deref(), header(&request, "x-forwarded-for").as_deref()),
        Access::Scope(Scope::Bundles),
    ) {
        Ok(sidecar) => sidecar,
        Err(error) => return send_error(out, error).await,
    };
    let mut after = header(&request, "last-event-id").filter(|id| !id.is_empty());
    // The first read decides the status: an unknown bundle is a JSON 404,
    // not an empty stream that would make the browser retry forever, with
    // or without `Last-Event-ID` (nothing after it may mean nothing at all).
    let first = match sidecar.bundle_events(&id, after.as_deref(), 0).await {
        Ok(events) => events,
        Err(error) => return send_error(out, error).await,
    };
    if first.is_empty() {
        let known = match after {
            None => false,
            Some(_) => match sidecar.bundle_events(&id, None, 0).await {
                Ok(events) => !events.is_empty(),
                Err(error) => return send_error(out, error).await,
            },
        };
        if !known {
            return send_error(out, ApiError::not_found("Bundle not found")).await;
        }
    }
    let response = streaming_response(200, &[
        ("content-type", "text/event-stream; charset=utf-8".to_owned()),
        ("cache-control", "no-store".to_owned()),
        // Tells nginx not to buffer this answer, whatever its location says.
        ("x-accel-buffering", "no".to_owned()),
    ]);
    let mut body = response.take_body();
    out.set(response);

    let started = Instant::now();
    let mut text = String::from("retry: 1000\n\n");
    append_events(&mut text, &first, &mut after);
    text.push_str(&clock());
    let mut next_tick = Instant::now() + TICK;
    loop {
        if body.send(std::mem::take(&mut text).into_bytes()).await.is_err() {
            return; // The client went away.
        }
        if started.elapsed() >= STREAM_LIFETIME {
            return;
        }
        let wait = next_tick.saturating_duration_since(Instant::now());
        match sidecar.bundle_events(&id, after.as_deref(), wait.as_millis() as u64).await {
            Ok(events) => append_events(&mut text, &events, &mut after),
            Err(error) => {
                // Said once as a comment; the browser reconnects and resumes.
                text.push_str(&format!(": {}\n\n", error.message.replace('\n', " ")));
                let _ = body.send(text.into_bytes()).await;
                return;
            }
        }
        if Instant::now() >= next_tick {
            text.push_str(&clock());
            next_tick += TICK;
            if next_tick < Instant::now() {
                next_tick = Instant::now() + TICK;
            }
        }
    }
}

fn append_events(text: &mut String, events: &[Event], after: &mut Option<String>) {
    for event in events {
        let (name, data) = event.event.to_parts();
        text.push_str(&format!("id: {}\nevent: {name}\ndata: {data}\n\n", event.id));
        *after = Some(event.id.clone());
    }
}

/// A `clock` event; it carries no id, so it never moves the resume point.
fn clock() -> String {
    let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64;
    format!("event: clock\ndata: {}\n\n", json!({ "now": format_unix_millis(unix_ms), "unix_ms": unix_ms }))
}
