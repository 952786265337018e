//! MongoDB ObjectIds as the API and the stores write them: 24 lowercase hex
//! characters, the first 8 of which are the creation time in seconds. Order
//! ids and bundle ids both follow this rule; the sidecar refuses any other.

/// Whether `id` is a canonical ObjectId: 24 lowercase hex characters.
pub fn is_object_id(id: &str) -> bool {
    id.len() == 24
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The canonical form of a client-given id (hex in either case).
pub fn normalise(raw: &str) -> Option<String> {
    let lowercase = raw.to_ascii_lowercase();
    is_object_id(&lowercase).then_some(lowercase)
}

/// The id of twelve bytes (a bundle's random ones), in canonical form.
pub fn from_bytes(bytes: [u8; 12]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]])
        .map(char::from)
        .collect()
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
    fn twelve_bytes_make_a_canonical_id() {
        let id = from_bytes([
            0x65, 0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0x07, 0x18, 0x29, 0x3a, 0x4b,
        ]);
        assert_eq!(id, "65a1b2c3d4e5f60718293a4b");
        assert!(is_object_id(&from_bytes([255; 12])));
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
