//! MongoDB ObjectIds as the API and the stores write them: 24 lowercase hex
//! characters, the first 8 of which are the creation time in seconds.

/// Whether `id` is a canonical ObjectId: 24 lowercase hex characters.
pub fn is_object_id(id: &str) -> bool {
    id.len() == 24
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The canonical form of a client-given id (hex in either case).
pub fn normalise(raw: &str) -> Option<String> {
    (raw.len() == 24 && raw.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| raw.to_ascii_lowercase())
}

/// When the ObjectId was made, in seconds since the Unix epoch.
pub fn timestamp_secs(id: &str) -> Option<i64> {
    if !is_object_id(id) {
        return None;
    }
    u32::from_str_radix(&id[..8], 16).ok().map(i64::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_ids_are_24_lowercase_hex() {
        assert!(is_object_id("65a1b2c3d4e5f60718293a4b"));
        assert!(!is_object_id("65A1B2C3D4E5F60718293A4B"));
        assert!(!is_object_id("65a1b2c3d4e5f60718293a4"));
        assert_eq!(
            normalise("65A1B2C3D4E5F60718293A4B").as_deref(),
            Some("65a1b2c3d4e5f60718293a4b")
        );
        assert_eq!(normalise("zz"), None);
    }

    #[test]
    fn the_timestamp_is_the_first_four_bytes() {
        assert_eq!(
            timestamp_secs("65a1b2c3d4e5f60718293a4b"),
            Some(0x65a1_b2c3)
        );
        assert_eq!(timestamp_secs("not an id"), None);
    }
}
