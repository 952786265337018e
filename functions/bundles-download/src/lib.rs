//! `GET /downloads/bundle-{id}.zip?md5=…&expires=…`: the one-time download.
//! Checks the signed link as nginx's `secure_link` would (403 wrong, 410
//! expired), takes the link's one-time mark in the sidecar (410 once used,
//! atomic across every instance), then hands over the zip: by
//! `X-Accel-Redirect` when nginx asked for it, else streamed from the sidecar.

use std::time::{SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use orders_common::access::Access;
use orders_common::bundle::BundleId;
use orders_common::stream::{header, send_error, streaming_response};
use orders_common::{ApiError, SidecarClient};
use orders_signed_link::{Verdict, verify};
use spin_sdk::http::{IncomingRequest, Method, ResponseOutparam};
use spin_sdk::http_component;

const PREFIX: &str = "/downloads/";

#[http_component]
async fn handle(request: IncomingRequest, out: ResponseOutparam) {
    if let Err(error) = download(request, out).await {
        // `download` only fails before it has answered.
        error.send().await;
    }
}

struct Failed(ApiError, ResponseOutparam);

impl Failed {
    async fn send(self) {
        send_error(self.1, self.0).await;
    }
}

async fn download(request: IncomingRequest, out: ResponseOutparam) -> Result<(), Failed> {
    macro_rules! check {
        ($e:expr) => {
            match $e {
                Ok(value) => value,
                Err(error) => return Err(Failed(error, out)),
            }
        };
    }
    if !matches!(request.method(), Method::Get) {
        return Err(Failed(ApiError::method_not_allowed(&["GET"]), out));
    }
    let path_with_query = request.path_with_query().unwrap_or_default();
    let (path, query) = path_with_query.split_once('?').unwrap_or((&path_with_query, ""));
    let file = path.strip_prefix(PREFIX).unwrap_or_default();
    let id = check!(file.strip_prefix("bundle-").and_then(|f| f.strip_suffix(".zip")).ok_or_else(not_found).and_then(|id| BundleId::parse(id)));
    let secret = check!(spin_sdk::variables::get("download_secret").map_err(|e| ApiError::unavailable(format!("The component is missing its 'download_secret' setting: {e}"))));
    let (md5, expires) = (query_value(query, "md5"), query_value(query, "expires"));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    match verify(path, md5.as_deref(), expires.as_deref(), &secret, now) {
        Verdict::Valid => {}
        Verdict::Invalid => return Err(Failed(ApiError::forbidden("This download link is not valid"), out)),
        Verdict::Expired => return Err(Failed(ApiError::gone("This download link has expired"), out)),
    }
    let sidecar = check!(SidecarClient::new(header(&request, "x-request-id"), None, None, Access::Public));
    let expires: u64 = expires.and_then(|e| e.parse().ok()).unwrap_or(now);
    // One mark per bundle, kept until the link would have expired anyway.
    let first_use = check!(sidecar.mark_once(&format!("download-{}", id.as_str()), expires.saturating_sub(now) + 60).await);
    if !first_use {
        return Err(Failed(ApiError::gone("This download link was already used"), out));
    }
    let disposition = ("content-disposition", format!("attachment; filename=\"{file}\""));
    if let Some(prefix) = header(&request, "x-orders-accel-prefix").filter(|p| p.starts_with('/') && p.ends_with('/')) {
        let response = streaming_response(200, &[
            ("content-type", "application/zip".to_owned()),
            disposition,
            ("x-accel-redirect", format!("{prefix}{file}")),
            ("cache-control", "no-store".to_owned()),
        ]);
        let _ = out.set_with_body(response, Vec::new()).await;
        return Ok(());
    }
    let blob = check!(sidecar.open_blob(file).await);
    let Some(blob) = blob else {
        return Err(Failed(ApiError::gone("This bundle has expired and was removed"), out));
    };
    let mut headers = vec![("content-type", "application/zip".to_owned()), disposition, ("cache-control", "no-store".to_owned())];
    if let Some(length) = blob.headers().get("content-length").into_iter().next().and_then(|v| String::from_utf8(v).ok()) {
        headers.push(("content-length", length));
    }
    let response = streaming_response(200, &headers);
    let mut body = response.take_body();
    out.set(response);
    let mut chunks = blob.take_body_stream();
    while let Some(Ok(chunk)) = chunks.next().await {
        if body.send(chunk).await.is_err() {
            break;
        }
    }
    Ok(())
}

fn not_found() -> ApiError {
    ApiError::not_found("No such download")
}

fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').filter_map(|pair| pair.split_once('=')).find(|(key, _)| *key == name).map(|(_, value)| value.to_owned())
}
