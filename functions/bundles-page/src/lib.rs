//! The bundle page: `GET /` and `GET /bundles/new` answer `web/bundles.html`,
//! one self-contained file (inline style and script) compiled into the
//! component, with a Content-Security-Policy that lets only that page's own
//! inline code run. The page talks to `/bundles…` (docs/bundles.md).

use orders_common::ApiError;
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

const PAGE: &str = include_str!("../../../web/bundles.html");

// Why hashes and not 'unsafe-inline': the policy names the sha256 of the
// page's one <script> and one <style>, computed at compile time from the file
// included above, so it follows every edit of the page by itself, and nothing
// else inline can run — not an injected <script>, not an `onclick=` or
// `style=` attribute, which 'unsafe-inline' would all allow. The checks in
// `inline_block` make the build fail if the page stops fitting that policy.
const SCRIPT_SHA256: [u8; 44] = base64(&sha256(inline_block(PAGE.as_bytes(), b"<script>", b"</script>")));
const STYLE_SHA256: [u8; 44] = base64(&sha256(inline_block(PAGE.as_bytes(), b"<style>", b"</style>")));
const _: () = assert!(find(PAGE.as_bytes(), b" style=\"", 0).is_none(), "inline style attributes would be blocked by the CSP");

#[http_component]
fn handle(request: Request) -> Response {
    let method = request.method();
    if !matches!(method, Method::Get | Method::Head) {
        return ApiError::method_not_allowed(&["GET", "HEAD"]).into_response();
    }
    let path = request.path();
    if !matches!(path, "/" | "/bundles/new") {
        return ApiError::not_found(format!("No page at {path}; the bundle page is /bundles/new")).into_response();
    }
    let body = if *method == Method::Head { "" } else { PAGE };
    Response::builder()
        .status(200)
        .header("content-type", "text/html; charset=utf-8")
        .header("cache-control", "no-cache")
        .header("x-content-type-options", "nosniff")
        .header("content-security-policy", content_security_policy())
        .body(body)
        .build()
}

/// Only this page's inline script and style, requests to its own origin
/// (fetch, EventSource), no plugins, frames, base rewriting or foreign forms.
fn content_security_policy() -> String {
    let script = std::str::from_utf8(&SCRIPT_SHA256).unwrap_or_default();
    let style = std::str::from_utf8(&STYLE_SHA256).unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'sha256-{script}'; style-src 'sha256-{style}'; \
         connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// The text between `open` and `close`, which must each occur exactly once
/// (a second block would not match the policy's hash); checked at compile time.
const fn inline_block<'a>(page: &'a [u8], open: &[u8], close: &[u8]) -> &'a [u8] {
    let tag = open.split_at(open.len() - 1).0; // "<script", also catches "<script type=…>"
    let Some(first) = find(page, tag, 0) else { panic!("the page has no inline block of this kind") };
    assert!(find(page, tag, first + 1).is_none(), "the page must have exactly one inline <script> and one <style>");
    assert!(starts_with(page, first, open), "the inline block must open with a bare tag, no attributes");
    let start = first + open.len();
    let Some(end) = find(page, close, start) else { panic!("the inline block is not closed") };
    page.split_at(end).0.split_at(start).1
}

const fn starts_with(haystack: &[u8], at: usize, needle: &[u8]) -> bool {
    if at + needle.len() > haystack.len() {
        return false;
    }
    let mut i = 0;
    while i < needle.len() {
        if haystack[at + i] != needle[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at + needle.len() <= haystack.len() {
        if starts_with(haystack, at, needle) {
            return Some(at);
        }
        at += 1;
    }
    None
}

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
    0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
    0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
    0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
];

/// SHA-256 (FIPS 180-4), as a `const fn` so the digest is part of the binary.
const fn sha256(data: &[u8]) -> [u8; 32] {
    let mut h: [u32; 8] =
        [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
    let bit_len = (data.len() as u64).wrapping_mul(8);
    let blocks = (data.len() + 9).div_ceil(64);
    let mut block = 0;
    while block < blocks {
        let mut w = [0u32; 64];
        let mut i = 0;
        while i < 64 {
            // byte i of this block of the padded message: data, 0x80, zeros, length
            let at = block * 64 + i;
            let byte = if at < data.len() {
                data[at]
            } else if at == data.len() {
                0x80
            } else if at >= blocks * 64 - 8 {
                (bit_len >> (8 * (blocks * 64 - 1 - at))) as u8
            } else {
                0
            };
            w[i / 4] |= (byte as u32) << (24 - 8 * (i % 4));
            i += 1;
        }
        let mut t = 16;
        while t < 64 {
            let s0 = w[t - 15].rotate_right(7) ^ w[t - 15].rotate_right(18) ^ (w[t - 15] >> 3);
            let s1 = w[t - 2].rotate_right(17) ^ w[t - 2].rotate_right(19) ^ (w[t - 2] >> 10);
            w[t] = w[t - 16].wrapping_add(s0).wrapping_add(w[t - 7]).wrapping_add(s1);
            t += 1;
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        let mut t = 0;
        while t < 64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh.wrapping_add(s1).wrapping_add(ch).wrapping_add(K[t]).wrapping_add(w[t]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            (hh, g, f, e, d, c, b, a) = (g, f, e, d.wrapping_add(t1), c, b, a, t1.wrapping_add(t2));
            t += 1;
        }
        let add = [a, b, c, d, e, f, g, hh];
        let mut j = 0;
        while j < 8 {
            h[j] = h[j].wrapping_add(add[j]);
            j += 1;
        }
        block += 1;
    }
    let mut out = [0u8; 32];
    let mut j = 0;
    while j < 32 {
        out[j] = (h[j / 4] >> (24 - 8 * (j % 4))) as u8;
        j += 1;
    }
    out
}

/// Standard base64 with padding, as CSP hash sources are written.
const fn base64(bytes: &[u8; 32]) -> [u8; 44] {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = [b'='; 44];
    let mut i = 0;
    while i < 11 {
        let b0 = bytes[3 * i] as u32;
        let b1 = if 3 * i + 1 < 32 { bytes[3 * i + 1] as u32 } else { 0 };
        let b2 = if 3 * i + 2 < 32 { bytes[3 * i + 2] as u32 } else { 0 };
        let n = (b0 << 16) | (b1 << 8) | b2;
        out[4 * i] = ALPHABET[(n >> 18) as usize & 63];
        out[4 * i + 1] = ALPHABET[(n >> 12) as usize & 63];
        if 3 * i + 1 < 32 {
            out[4 * i + 2] = ALPHABET[(n >> 6) as usize & 63];
        }
        if 3 * i + 2 < 32 {
            out[4 * i + 3] = ALPHABET[n as usize & 63];
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha256_matches_the_standard_vectors() {
        assert_eq!(hex(&sha256(b"")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(hex(&sha256(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let long = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"; // 56 bytes: two padding blocks
        assert_eq!(hex(&sha256(long)), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    }

    #[test]
    fn base64_pads_a_digest() {
        assert_eq!(&base64(&sha256(b"")), b"47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
    }

    #[test]
    fn the_policy_names_the_inline_blocks() {
        let csp = content_security_policy();
        assert!(csp.contains("script-src 'sha256-") && csp.contains("connect-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"));
        assert!(inline_block(PAGE.as_bytes(), b"<script>", b"</script>").starts_with(b"\n(() => {"));
    }
}
