//! How many documents one read returns: what a client may ask of
//! `GET /orders` and `GET /audit`, and what the sidecar gives at most.

/// Orders per page when the client does not say.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// The most orders a client may ask for in one page.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// The most documents the sidecar lists at once: a whole page and the one
/// more that tells the component whether a next page exists.
pub const MAX_SIDECAR_PAGE: u32 = MAX_PAGE_SIZE + 1;

/// Audit entries per read when the caller does not say.
pub const DEFAULT_AUDIT_PAGE: u32 = 100;
/// The most audit entries one read returns.
pub const MAX_AUDIT_PAGE: u32 = 1000;
