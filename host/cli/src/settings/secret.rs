//! Values that must never be printed: tokens, signing secrets, and URIs that
//! may carry a password. `Debug` and `Display` show a placeholder; the value
//! is reached only through [`Secret::expose`], so every use is greppable.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(value))
    }
}

/// Serialized only into the private (0600) settings files a cluster hands
/// its child processes; see `settings::child`.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let secret = Secret::new("mongodb://admin:hunter2@db");
        assert_eq!(format!("{secret} {secret:?} {:?}", Some(&secret)), "<redacted> <redacted> Some(<redacted>)");
        assert_eq!(secret.expose(), "mongodb://admin:hunter2@db");
    }
}
