//! `If-Match` for optimistic concurrency: the ETag of an order is
//! `"<version>"`, and a write carrying If-Match only applies to that version.

use crate::error::ApiError;
use crate::order::OrderId;
use crate::sidecar::SidecarClient;

/// What a client's If-Match header asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`: the order must exist, in any version.
    Any,
    /// One or more strong ETags; the write applies if the current version is
    /// one of them.
    Versions(Vec<i64>),
}

impl IfMatch {
    pub fn parse(header: Option<&str>) -> Result<Option<Self>, ApiError> {
        let Some(header) = header.map(str::trim) else { return Ok(None) };
        if header == "*" {
            return Ok(Some(Self::Any));
        }
        let mut versions = Vec::new();
        for tag in header.split(',').map(str::trim) {
            let malformed = || {
                ApiError::bad_request(format!(
                    "If-Match must be \"*\" or a list of ETags like \"3\"; got {tag:?}"
                ))
            };
            // A weak tag never matches under If-Match's strong comparison.
            if tag.starts_with("W/\"") && tag.ends_with('"') {
                continue;
            }
            let inner = tag
                .strip_prefix('"')
                .and_then(|rest| rest.strip_suffix('"'))
                .ok_or_else(malformed)?;
            if inner.contains('"') {
                return Err(malformed());
            }
            // A well-formed tag that is not a version number matches nothing.
            if let Ok(version) = inner.parse::<i64>() {
                versions.push(version);
            }
        }
        Ok(Some(Self::Versions(versions)))
    }

    /// The version the store must find for the write to apply. Only a list
    /// of several tags needs the current version first; a single tag is
    /// checked atomically by the store itself.
    pub async fn version_to_require(
        &self,
        sidecar: &SidecarClient,
        order_id: &OrderId,
    ) -> Result<Option<i64>, ApiError> {
        if !self.needs_current_version() {
            return self.required_version(|| None);
        }
        let current = sidecar.get_order(order_id).await?.ok_or_else(ApiError::order_not_found)?;
        self.required_version(|| Some(current.version()))
    }

    fn required_version(&self, current: impl FnOnce() -> Option<i64>) -> Result<Option<i64>, ApiError> {
        match self {
            IfMatch::Any => Ok(None),
            IfMatch::Versions(versions) if versions.len() == 1 => Ok(Some(versions[0])),
            IfMatch::Versions(versions) => match current() {
                Some(version) if versions.contains(&version) => Ok(Some(version)),
                _ => Err(ApiError::precondition_failed()),
            },
        }
    }

    fn needs_current_version(&self) -> bool {
        matches!(self, IfMatch::Versions(versions) if versions.len() != 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_header_means_no_precondition() {
        assert_eq!(IfMatch::parse(None).unwrap(), None);
    }

    #[test]
    fn star_and_lists_parse() {
        assert_eq!(IfMatch::parse(Some("*")).unwrap(), Some(IfMatch::Any));
        assert_eq!(IfMatch::parse(Some("\"3\", W/\"4\", \"5\"")).unwrap(), Some(IfMatch::Versions(vec![3, 5])));
        assert_eq!(IfMatch::parse(Some("\"abc\"")).unwrap(), Some(IfMatch::Versions(vec![])));
    }

    #[test]
    fn unquoted_tags_are_malformed() {
        assert_eq!(IfMatch::parse(Some("3")).unwrap_err().status, 400);
    }

    #[test]
    fn multi_tag_lists_resolve_against_the_current_version() {
        let tags = IfMatch::Versions(vec![2, 3]);
        assert_eq!(tags.required_version(|| Some(3)).unwrap(), Some(3));
        assert_eq!(tags.required_version(|| Some(4)).unwrap_err().status, 412);
        assert_eq!(IfMatch::Versions(vec![]).required_version(|| Some(1)).unwrap_err().status, 412);
    }
}
