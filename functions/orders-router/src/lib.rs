//! Spin routes by path only, while the contract gives `/orders` and
//! `/orders/{id}` one component per method. This component owns both routes
//! and hands each request, unchanged, to the private component of its method
//! through Spin's local service chaining (`http://<component>.spin.internal`).
//! It answers with the caller's `X-Request-Id` (`respond::finish`), as the
//! functions do. The project's runner routes by method itself and skips
//! this component (the `tool.orders-runner` tables in `spin.toml`); it
//! still answers what those tables leave out, such as 405 with `Allow`.
//!
//! Both bodies stream through: the request's goes to the callee as the
//! client sends it, the answer's to the client as the callee writes it, so
//! the router holds a chunk at a time, never a whole body. A body cut on
//! either side reaches the other as cut (`stream::pipe`), not as shorter.

use futures::future::join;
use orders_common::ApiError;
use orders_common::access::chained_headers;
use orders_common::respond::{REQUEST_ID, finish};
use orders_common::stream::{header, pipe, send_whole};
use spin_sdk::http::{
    Fields, IncomingRequest, IncomingResponse, Method, OutgoingRequest, OutgoingResponse, ResponseOutparam, Scheme, send,
};
use spin_sdk::http_component;

#[http_component]
async fn handle(request: IncomingRequest, out: ResponseOutparam) {
    let request_id = header(&request, REQUEST_ID);
    let answer = match target(&request) {
        Ok(component) => forward(request, component).await,
        Err(error) => Err(error),
    };
    match answer {
        Ok(answer) => relay(answer, request_id, out).await,
        Err(error) => send_whole(out, finish(request_id, Err(error))).await,
    }
}

/// The private component answering this method on this path.
fn target(request: &IncomingRequest) -> Result<&'static str, ApiError> {
    let path = request.path_with_query().unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default();
    let is_item = path.trim_end_matches('/').trim_start_matches('/').contains('/');
    Ok(match (is_item, request.method()) {
        (false, Method::Get) => "orders-list",
        (false, Method::Post) => "orders-create",
        (false, _) => return Err(ApiError::method_not_allowed(&["GET", "POST"])),
        (true, Method::Get) => "orders-get",
        (true, Method::Put) => "orders-update",
        (true, Method::Delete) => "orders-delete",
        (true, _) => return Err(ApiError::method_not_allowed(&["GET", "PUT", "DELETE"])),
    })
}

/// Sends the request on to `component`, its body following as it arrives,
/// and gives back the answer's head once it comes.
async fn forward(request: IncomingRequest, component: &str) -> Result<IncomingResponse, ApiError> {
    let unavailable = |why: String| ApiError::unavailable(format!("The {component} function is unavailable: {why}"));
    let headers = chained_headers(request.headers().entries());
    let outgoing = OutgoingRequest::new(Fields::from_list(&headers).map_err(|e| unavailable(format!("{e:?}")))?);
    let path_with_query = request.path_with_query().unwrap_or_else(|| "/".to_owned());
    let authority = format!("{component}.spin.internal");
    let refused = |_| unavailable("the request could not be addressed".to_owned());
    outgoing.set_method(&request.method()).map_err(refused)?;
    outgoing.set_scheme(Some(&Scheme::Http)).map_err(refused)?;
    outgoing.set_authority(Some(&authority)).map_err(refused)?;
    outgoing.set_path_with_query(Some(&path_with_query)).map_err(refused)?;
    let Ok(body) = outgoing.body() else { return Err(unavailable("no request body to write".to_owned())) };
    // The callee may answer before it has read everything (a 413, say), so
    // the body is written while the answer is awaited.
    let (_, answer) = join(pipe(request.into_body_stream(), body), send::<_, IncomingResponse>(outgoing)).await;
    answer.map_err(|e| unavailable(e.to_string()))
}

/// Answers the client with the callee's head, the caller's request id, and
/// the callee's body as it comes.
async fn relay(answer: IncomingResponse, request_id: Option<String>, out: ResponseOutparam) {
    let mut headers = answer.headers().entries();
    if let Some(id) = request_id {
        headers.retain(|(name, _)| !name.eq_ignore_ascii_case(REQUEST_ID));
        headers.push((REQUEST_ID.to_owned(), id.into_bytes()));
    }
    let Ok(fields) = Fields::from_list(&headers) else {
        let error = ApiError::unavailable("The function's answer had headers that cannot be passed on");
        return send_whole(out, error.into_response()).await;
    };
    let response = OutgoingResponse::new(fields);
    // A callee's status is one the host already accepted.
    let _ = response.set_status_code(answer.status());
    let Ok(body) = response.body() else { return };
    out.set(response);
    // A cut answer reaches the client as cut; there is no one else to tell.
    let _ = pipe(answer.take_body_stream(), body).await;
}
