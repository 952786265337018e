//! The parsed forms of option values that are more than numbers and paths,
//! so that nothing downstream handles them as strings.

use std::fmt;
use std::str::FromStr;

use clap::ValueEnum;
use mongodb::options::{Acknowledgment, ReadPreference as DriverReadPreference, ReadPreferenceOptions};
use serde::{Serialize, Serializer};
use url::Url;

/// `--mongo-read-preference`, named as MongoDB's connection strings name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[value(rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub enum ReadPreference {
    Primary,
    PrimaryPreferred,
    Secondary,
    SecondaryPreferred,
    Nearest,
}

impl ReadPreference {
    pub fn to_driver(self) -> DriverReadPreference {
        let options = Some(ReadPreferenceOptions::default());
        match self {
            Self::Primary => DriverReadPreference::Primary,
            Self::PrimaryPreferred => DriverReadPreference::PrimaryPreferred { options },
            Self::Secondary => DriverReadPreference::Secondary { options },
            Self::SecondaryPreferred => DriverReadPreference::SecondaryPreferred { options },
            Self::Nearest => DriverReadPreference::Nearest { options },
        }
    }
}

/// `--mongo-write-concern`: `majority` or how many nodes must acknowledge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteConcern {
    Majority,
    Nodes(u32),
}

impl WriteConcern {
    pub fn to_driver(self) -> Acknowledgment {
        match self {
            Self::Majority => Acknowledgment::Majority,
            Self::Nodes(nodes) => Acknowledgment::Nodes(nodes),
        }
    }
}

impl FromStr for WriteConcern {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "majority" => Ok(Self::Majority),
            number => match number.parse::<u32>() {
                Ok(nodes) if nodes >= 1 => Ok(Self::Nodes(nodes)),
                _ => Err("must be \"majority\" or a number of nodes >= 1".to_owned()),
            },
        }
    }
}

impl fmt::Display for WriteConcern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Majority => f.write_str("majority"),
            Self::Nodes(nodes) => write!(f, "{nodes}"),
        }
    }
}

impl Serialize for WriteConcern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// An `http://` or `https://` URL (the sidecar's, an OIDC issuer's, a JWKS).
pub fn http_url(value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|error| format!("not a URL: {error}"))?;
    match url.scheme() {
        "http" | "https" if url.has_host() => Ok(url),
        "http" | "https" => Err("the URL has no host".to_owned()),
        other => Err(format!("the scheme must be http or https, not {other}")),
    }
}

/// Whether a MongoDB URI has the shape the driver accepts; the driver parses
/// it fully when it connects. The message never repeats the value: it may
/// hold a password.
pub fn check_mongo_uri(uri: &str) -> Result<(), String> {
    if uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://") {
        Ok(())
    } else {
        Err("must start with mongodb:// or mongodb+srv://".to_owned())
    }
}

/// Whether a Redis URL is one the client accepts (without repeating it).
pub fn check_redis_url(value: &str) -> Result<(), String> {
    let url = Url::parse(value).map_err(|error| format!("not a URL ({error})"))?;
    match url.scheme() {
        "redis" | "rediss" | "unix" | "redis+unix" => Ok(()),
        other => Err(format!("the scheme must be redis, rediss or unix, not {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_concern_reads_and_prints_the_documented_forms() {
        assert_eq!("majority".parse(), Ok(WriteConcern::Majority));
        assert_eq!("2".parse(), Ok(WriteConcern::Nodes(2)));
        assert!("0".parse::<WriteConcern>().is_err());
        assert!("most".parse::<WriteConcern>().is_err());
        assert_eq!(WriteConcern::Nodes(3).to_string(), "3");
    }

    #[test]
    fn read_preference_uses_mongodb_names() {
        let names: Vec<String> =
            ReadPreference::value_variants().iter().map(|v| v.to_possible_value().unwrap().get_name().to_owned()).collect();
        assert_eq!(names, ["primary", "primaryPreferred", "secondary", "secondaryPreferred", "nearest"]);
    }

    #[test]
    fn urls_are_checked_without_repeating_them() {
        assert!(http_url("http://127.0.0.1:7071").is_ok());
        assert!(http_url("ftp://host").is_err());
        assert!(check_mongo_uri("mongodb://u:p@host/?authSource=admin").is_ok());
        let error = check_mongo_uri("postgres://u:hunter2@host").unwrap_err();
        assert!(!error.contains("hunter2"));
        assert!(check_redis_url("redis://127.0.0.1:6379/0").is_ok());
        assert!(check_redis_url("http://127.0.0.1").is_err());
    }
}
