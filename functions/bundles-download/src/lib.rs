//! `GET /downloads/bundle-{id}.zip?md5=…&expires=…`: the one-time download.
//! Checks the signed link as nginx's `secure_link` would (403 wrong, 410
//! expired), then spends the link by delivery, not by attempt:
//!
//! - the link's mark is reserved before anything is sent (one holder at a
//!   time across every instance: a concurrent download gets 409);
//! - a failure on our side before the first byte (the blob store cannot
//!   open or read the zip) gives the reservation back and answers 503, so
//!   the same link works on the next try;
//! - the last bytes go out only once the mark is spent, so of several
//!   downloads at most one ever completes;
//! - a client that goes away after bytes went out has spent the link (a cut
//!   cannot be told from a client that kept what it got).
//!
//! Behind nginx (`X-Orders-Accel-Prefix`) the component checks the zip is
//! there, spends the mark and answers `X-Accel-Redirect`; nginx names the
//! delivery (`X-Orders-Delivery-Id`, its `$request_id`), so its retry of the
//! same request on another instance is the same holder and is served.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use orders_common::access::Access;
use orders_common::bundle::BundleId;
use orders_common::stream::{header, send_error, streaming_response};
/// Holders are opaque ids: nginx's `$request_id` (32 hex) or ours, by the
/// sidecar's rule for them.
use orders_common::vocabulary::api::is_holder as valid_holder;
use orders_common::vocabulary::bundle::{DOWNLOAD_PATH as PREFIX, bundle_of_zip_key};
use orders_common::{ApiError, Reservation, SidecarClient};
use orders_signed_link::{Verdict, verify};
use spin_sdk::http::{IncomingRequest, Method, ResponseOutparam};
use spin_sdk::http_component;

/// A reservation outlives a stalled or dead instance by at most this long.
const LEASE_SECS: u64 = 60;
/// A download that is still sending renews its reservation this often.
const RENEW_EVERY_SECS: u64 = 20;

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

/// This delivery's hold on the link's one-time mark.
struct Hold {
    sidecar: SidecarClient,
    key: String,
    holder: String,
    /// How long a spent mark is kept: until the link would have expired.
    spent_ttl_secs: u64,
}

impl Hold {
    async fn spend(&self) -> bool {
        self.sidecar.spend_mark(&self.key, &self.holder, self.spent_ttl_secs).await.unwrap_or(false)
    }

    /// Nothing was delivered: the link stays usable. Should the sidecar not
    /// hear of it, the lease runs out by itself.
    async fn release(&self) {
        let _ = self.sidecar.release_mark(&self.key, &self.holder).await;
    }

    async fn renew(&self) -> bool {
        matches!(self.sidecar.reserve_mark(&self.key, &self.holder, LEASE_SECS).await, Ok(Reservation::Granted))
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
    let id = check!(bundle_of_zip_key(file).ok_or_else(not_found).and_then(BundleId::parse));
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
    let accel = header(&request, "x-orders-accel-prefix").filter(|p| p.starts_with('/') && p.ends_with('/'));
    // Only nginx sets the accel prefix, and with it the delivery id; anyone
    // else's delivery is its own, fresh holder.
    let delivery = header(&request, "x-orders-delivery-id").filter(|d| accel.is_some() && valid_holder(d));
    let holder = match delivery {
        Some(delivery) => delivery,
        None => check!(random_holder()),
    };
    let key = format!("download-{}", id.as_str());
    match check!(sidecar.reserve_mark(&key, &holder, LEASE_SECS).await) {
        Reservation::Granted => {}
        Reservation::Spent => return Err(Failed(ApiError::gone("This download link was already used"), out)),
        Reservation::Busy => return Err(Failed(ApiError::conflict("This link is being downloaded right now, and it works once"), out)),
    }
    let hold = Hold { sidecar, key, holder, spent_ttl_secs: expires.saturating_sub(now) + 60 };
    let disposition = ("content-disposition", format!("attachment; filename=\"{file}\""));
    if let Some(prefix) = accel {
        if !matches!(hold.sidecar.blob_exists(file).await, Ok(true)) {
            hold.release().await;
            return Err(Failed(not_available(), out));
        }
        if !hold.spend().await {
            return Err(Failed(ApiError::conflict("This link is being downloaded right now, and it works once"), out));
        }
        let response = streaming_response(200, &[
            ("content-type", "application/zip".to_owned()),
            disposition,
            ("x-accel-redirect", format!("{prefix}{file}")),
            ("cache-control", "no-store".to_owned()),
        ]);
        let _ = out.set_with_body(response, Vec::new()).await;
        return Ok(());
    }

    // Everything that can fail on our side before the first byte: the blob
    // is opened, its length known, its first chunk read.
    let blob = match hold.sidecar.open_blob(file).await {
        Ok(Some(blob)) => blob,
        Ok(None) | Err(_) => {
            hold.release().await;
            return Err(Failed(not_available(), out));
        }
    };
    let length = blob.headers().get("content-length").into_iter().next().and_then(|v| String::from_utf8(v).ok()).and_then(|v| v.parse::<u64>().ok());
    let mut chunks = blob.take_body_stream();
    let (Some(length), Some(Ok(first))) = (length.filter(|l| *l > 0), chunks.next().await) else {
        hold.release().await;
        return Err(Failed(not_available(), out));
    };
    // The length is always declared, so a body cut short is never taken
    // for a whole zip.
    let response = streaming_response(200, &[
        ("content-type", "application/zip".to_owned()),
        disposition,
        ("cache-control", "no-store".to_owned()),
        ("content-length", length.to_string()),
    ]);
    let mut body = response.take_body();
    out.set(response);
    let (mut held_back, mut sent, mut renewed_at) = (first, 0u64, Instant::now());
    loop {
        match chunks.next().await {
            Some(Ok(chunk)) => {
                let chunk = std::mem::replace(&mut held_back, chunk);
                sent += chunk.len() as u64;
                if body.send(chunk).await.is_err() {
                    // The client went away with part of the zip.
                    hold.spend().await;
                    return Ok(());
                }
                if renewed_at.elapsed().as_secs() >= RENEW_EVERY_SECS {
                    if !hold.renew().await {
                        return Ok(());
                    }
                    renewed_at = Instant::now();
                }
            }
            // The blob store failed mid-way: our fault, the link stays usable.
            Some(Err(_)) => {
                hold.release().await;
                return Ok(());
            }
            None => break,
        }
    }
    if sent + held_back.len() as u64 != length {
        hold.release().await;
        return Ok(());
    }
    if hold.spend().await {
        let _ = body.send(held_back).await;
    }
    Ok(())
}

fn not_found() -> ApiError {
    ApiError::not_found("No such download")
}

/// A link within its life whose zip cannot be read right now: the janitor
/// removes zips only after their links expire, so this is on our side.
fn not_available() -> ApiError {
    ApiError::unavailable("The bundle's file cannot be read right now; the link still works, retry shortly")
}

fn random_holder() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::unavailable(format!("No randomness for a delivery id: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').filter_map(|pair| pair.split_once('=')).find(|(key, _)| *key == name).map(|(_, value)| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_ids_hold_a_link() {
        assert!(valid_holder("0123456789abcdef0123456789abcdef"));
        for bad in ["", "a b", "a/b", "x\n", &"a".repeat(129)] {
            assert!(!valid_holder(bad), "{bad:?}");
        }
    }
}
