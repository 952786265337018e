//! "Now" from the WASI wall clock, in the contract's RFC 3339 form.

use std::time::{SystemTime, UNIX_EPOCH};

/// The current time as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn now_rfc3339() -> String {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    format_unix_millis(since_epoch.as_millis() as i64)
}

pub use orders_contract::time::format_unix_millis;
