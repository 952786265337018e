//! Links nginx can check without asking us:
//!
//! ```nginx
//! secure_link $arg_md5,$arg_expires;
//! secure_link_md5 "$secure_link_expires$uri <secret>";
//! ```
//!
//! `md5` is base64url (no padding) of the MD5 of `"{expires}{path} {secret}"`.
//! MD5 is what nginx offers here; the secret, the expiry and the one-time
//! mark taken by the platform are what make the link safe, not the hash.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use md5::{Digest, Md5};

/// What a presented link turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    /// Missing, malformed or wrong signature (nginx: 403).
    Invalid,
    /// Correctly signed, but past its expiry (nginx: 410).
    Expired,
}

/// The `md5` query value for `path` (the URI path, e.g. `/downloads/x.zip`).
pub fn signature(path: &str, expires: u64, secret: &str) -> String {
    let digest = Md5::digest(format!("{expires}{path} {secret}").as_bytes());
    URL_SAFE_NO_PAD.encode(digest)
}

/// The path with its `md5` and `expires` query parameters.
pub fn sign(path: &str, expires: u64, secret: &str) -> String {
    format!("{path}?md5={}&expires={expires}", signature(path, expires, secret))
}

/// Checks a link's `md5` and `expires` values as nginx would, at `now`
/// (Unix seconds). The comparison does not stop at the first differing byte.
pub fn verify(path: &str, md5: Option<&str>, expires: Option<&str>, secret: &str, now: u64) -> Verdict {
    let (Some(md5), Some(expires)) = (md5, expires) else { return Verdict::Invalid };
    let Ok(expires) = expires.parse::<u64>() else { return Verdict::Invalid };
    let expected = signature(path, expires, secret);
    let same = expected.len() == md5.len() && expected.bytes().zip(md5.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    match (same, expires > now) {
        (false, _) => Verdict::Invalid,
        (true, false) => Verdict::Expired,
        (true, true) => Verdict::Valid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_openssl() {
        // echo -n '2147483647/s/link secret' | openssl md5 -binary | openssl base64 | tr +/ -_ | tr -d =
        assert_eq!(signature("/s/link", 2147483647, "secret"), "0Xgm37lo5nFEuHMDKl_vQg");
        assert_eq!(sign("/s/link", 2147483647, "secret"), "/s/link?md5=0Xgm37lo5nFEuHMDKl_vQg&expires=2147483647");
    }

    #[test]
    fn verdicts() {
        let md5 = signature("/downloads/b.zip", 100, "s3cret");
        assert_eq!(verify("/downloads/b.zip", Some(&md5), Some("100"), "s3cret", 99), Verdict::Valid);
        assert_eq!(verify("/downloads/b.zip", Some(&md5), Some("100"), "s3cret", 100), Verdict::Expired);
        assert_eq!(verify("/downloads/b.zip", Some(&md5), Some("101"), "s3cret", 99), Verdict::Invalid);
        assert_eq!(verify("/downloads/c.zip", Some(&md5), Some("100"), "s3cret", 99), Verdict::Invalid);
        assert_eq!(verify("/downloads/b.zip", Some(&md5), Some("100"), "other", 99), Verdict::Invalid);
        assert_eq!(verify("/downloads/b.zip", None, Some("100"), "s3cret", 99), Verdict::Invalid);
        assert_eq!(verify("/downloads/b.zip", Some(&md5), Some("soon"), "s3cret", 99), Verdict::Invalid);
    }
}
