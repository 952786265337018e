//! Reading what a request carries: JSON bodies within the size limit, the
//! order id in the path, list query parameters and the Idempotency-Key.

use serde_json::{Map, Value};
use spin_sdk::http::Request;

use crate::error::ApiError;
use crate::order::{OrderId, parse_json_object};

/// The largest request body the API accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
pub use orders_vocabulary::page::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};

/// The body of a POST or PUT as a JSON object, after the size (413),
/// media type (415) and syntax (400) checks, in that order.
pub fn json_body(request: &Request) -> Result<Map<String, Value>, ApiError> {
    if request.body().len() > MAX_BODY_BYTES {
        return Err(ApiError::payload_too_large(MAX_BODY_BYTES));
    }
    let is_json = request
        .header("content-type")
        .and_then(|value| value.as_str())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media_type| media_type.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::unsupported_media_type());
    }
    parse_json_object(request.body())
}

/// The `{id}` of `/orders/{id}`: the last path segment. The path is read
/// rather than a route parameter so that the component works both when Spin
/// routes to it directly and when it is reached by service chaining.
pub fn order_id(request: &Request) -> Result<OrderId, ApiError> {
    let path = request.path();
    let segment = path.trim_end_matches('/').rsplit('/').next().unwrap_or_default();
    OrderId::parse(&percent_decode(segment))
}

/// `GET /orders` paging: how many orders, and after which id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageQuery {
    pub limit: u32,
    pub after: Option<OrderId>,
}

impl PageQuery {
    pub fn parse(query: &str) -> Result<Self, ApiError> {
        let mut limit = None;
        let mut after = None;
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value);
            match name {
                "limit" if limit.is_some() => return Err(repeated("limit")),
                "limit" => limit = Some(parse_limit(&value)?),
                "after" if after.is_some() => return Err(repeated("after")),
                "after" => {
                    after = Some(OrderId::parse(&value).map_err(|_| {
                        ApiError::bad_request("Query parameter 'after' must be an order id (24 hexadecimal characters)")
                    })?)
                }
                _ => {}
            }
        }
        Ok(Self { limit: limit.unwrap_or(DEFAULT_PAGE_SIZE), after })
    }
}

fn repeated(name: &str) -> ApiError {
    ApiError::bad_request(format!("Query parameter '{name}' is given more than once"))
}

fn parse_limit(value: &str) -> Result<u32, ApiError> {
    value
        .parse::<u32>()
        .ok()
        .filter(|limit| (1..=MAX_PAGE_SIZE).contains(limit))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "Query parameter 'limit' must be an integer between 1 and {MAX_PAGE_SIZE}"
            ))
        })
}

/// Decodes `%XX` escapes and `+`; undecodable input is kept as is, so it
/// fails the id or number rules that follow instead of being guessed at.
fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex_value(bytes[i + 1]), hex_value(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| raw.to_owned())
}

fn hex_value(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|value| value as u8)
}

/// A client's Idempotency-Key: 1 to 200 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 200;

    pub fn from_request(request: &Request) -> Result<Option<Self>, ApiError> {
        let Some(value) = request.header("idempotency-key") else { return Ok(None) };
        let bytes = value.as_bytes();
        let printable = bytes.iter().all(|b| (0x20..=0x7e).contains(b));
        if bytes.is_empty() || bytes.len() > Self::MAX_LEN || !printable {
            return Err(ApiError::bad_request(format!(
                "Idempotency-Key must be 1 to {} printable ASCII characters",
                Self::MAX_LEN
            )));
        }
        Ok(Some(Self(String::from_utf8_lossy(bytes).into_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_query_defaults() {
        assert_eq!(PageQuery::parse("").unwrap(), PageQuery { limit: 100, after: None });
    }

    #[test]
    fn page_query_limit_bounds() {
        assert_eq!(PageQuery::parse("limit=1").unwrap().limit, 1);
        assert_eq!(PageQuery::parse("limit=1000").unwrap().limit, 1000);
        for bad in ["limit=0", "limit=1001", "limit=-1", "limit=abc", "limit=", "limit=1.5", "limit=1&limit=2"] {
            assert_eq!(PageQuery::parse(bad).unwrap_err().status, 400, "{bad}");
        }
    }

    #[test]
    fn page_query_after_must_be_an_id() {
        let query = PageQuery::parse("after=65a1b2c3d4e5f60718293a4b&limit=5").unwrap();
        assert_eq!(query.after.unwrap().as_str(), "65a1b2c3d4e5f60718293a4b");
        assert_eq!(PageQuery::parse("after=nope").unwrap_err().status, 400);
    }

    #[test]
    fn percent_decoding_handles_escapes_and_garbage() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("%zz%"), "%zz%");
        assert_eq!(percent_decode("%4"), "%4");
    }
}
