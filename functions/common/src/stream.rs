//! For components that stream their answer (Server-Sent Events, downloads)
//! and so take the raw WASI request and response out-parameter.

use spin_sdk::http::{Fields, IncomingRequest, OutgoingResponse, Response, ResponseOutparam};

use crate::error::ApiError;

/// The first value of header `name`, as text.
pub fn header(request: &IncomingRequest, name: &str) -> Option<String> {
    request.headers().get(name).into_iter().next().and_then(|value| String::from_utf8(value).ok())
}

/// A response with `headers`, ready for its body to be streamed.
pub fn streaming_response(status: u16, headers: &[(&str, String)]) -> OutgoingResponse {
    let list: Vec<(String, Vec<u8>)> = headers.iter().map(|(name, value)| ((*name).to_owned(), value.clone().into_bytes())).collect();
    let response = OutgoingResponse::new(Fields::from_list(&list).expect("header names and values we set are valid"));
    response.set_status_code(status).expect("a valid status code");
    response
}

/// Sends an already built (small) response through the out-parameter.
pub async fn send_whole(out: ResponseOutparam, response: Response) {
    let headers: Vec<(&str, String)> = response
        .headers()
        .filter_map(|(name, value)| value.as_str().map(|v| (name, v.to_owned())))
        .collect();
    let outgoing = streaming_response(*response.status(), &headers);
    let _ = out.set_with_body(outgoing, response.body().to_vec()).await;
}

/// Sends an API error through the out-parameter.
pub async fn send_error(out: ResponseOutparam, error: ApiError) {
    send_whole(out, error.into_response()).await;
}
