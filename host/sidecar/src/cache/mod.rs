//! The read-through cache in front of the store: single documents and list
//! pages, invalidated on writes so that a read after a successful write
//! never sees the old value.
//!
//! Invalidation without races uses counters per collection. A reader notes
//! them when it misses, reads the store, and fills the cache only if no
//! write moved them meanwhile. A writer moves them after its store write
//! (and deletes the document's own entry). So a reader that fetched the old
//! value just before a write can never put it back after that write returns.
//!
//! Updates and deletes move the *generation*, which retires every page.
//! Inserts need not: pages are ordered by id and new orders get larger ids,
//! so an insert changes only the collection's last page. The cache keeps a
//! *top* per collection, an id that never decreases: a full page is cached
//! only once its last id is at or below the top (its fill raises the top to
//! it), and an insert above the top moves only the *tail* counter — which
//! retires the last, unfilled pages, keyed by it — and becomes the new top.
//! Every full page a tail move leaves in place ends at or below the old top,
//! so below the new id: the insert cannot belong in it.
//!
//! An insert at or below the top (two inserts that finished out of order
//! under a slow store, another sidecar's id from the same second, an
//! imported document) may belong in a cached full page. It moves the tail,
//! counts itself (*below-top* counter) and lowers the generation's
//! *ceiling* to its id: from then on a full page filled before it is served
//! only if it ends below the ceiling, since then no such insert can belong
//! in it. A page filled after it (its lookup saw the counter) read the store
//! after that insert and holds it. With no top known yet (a fresh cache) an
//! insert moves the generation instead; a new generation has no ceiling.
//!
//! A page fill needs the generation unmoved since its lookup. A last page
//! needs the tail unmoved too. A full page needs either the tail unmoved or
//! to end at or below the top its lookup saw (every insert that moved the
//! tail since then landed above that top, or was counted below it), and, if
//! inserts below the top were counted since its lookup, to end below the
//! ceiling. (Refusing every fill after a tail move, or moving the
//! generation on every out-of-order insert, left a slow store's list pages
//! uncached under steady inserts.)
//!
//! An entry is fresh for the cache's TTL and kept for [`kept_for`] it: past
//! its TTL but still current (no write retired it) it is *stale*, and the
//! data path serves it to every reader but one, who reads it anew. The
//! counters already keep every entry in step with the writes made through
//! the sidecars; the TTL only bounds how long an entry outlives a change made
//! past them (`orders import`) and how long unread entries hold memory. A
//! popular page expiring thus costs one reader's wait on the store, not
//! every reader's.

pub mod memory;
pub mod redis;

use std::time::Duration;

use async_trait::async_trait;

/// The counters a reader saw when it missed (generation, tail, below-top
/// count and top, in the backend's own encoding); a fill is accepted only
/// while the counters then admit it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation(pub String);

/// What a cache lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub value: Option<String>,
    /// `value` is past its TTL (yet current): to be read anew.
    pub stale: bool,
    pub generation: Generation,
}

/// How long an entry is kept, given the cache's TTL: as long again past
/// it, in which it is served stale while one reader refreshes it.
pub fn kept_for(ttl: Duration) -> Duration {
    ttl.saturating_mul(2)
}

/// A cache entry kind: a document by id, or a list page by its query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    Doc,
    Page,
}

impl EntryKind {
    fn as_str(self) -> &'static str {
        match self {
            EntryKind::Doc => "doc",
            EntryKind::Page => "page",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cache unavailable: {0}")]
pub struct CacheError(pub String);

pub type CacheResult<T> = Result<T, CacheError>;

/// What is being filled: a document, or a page and where it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Doc,
    /// A page that holds its full `limit`: only writes at or below `last`
    /// can change it.
    FullPage { last: String },
    /// A page shorter than its limit, so the collection's end: any insert
    /// after its cursor may extend it. `top` is the largest id it holds, or
    /// its cursor when empty (`""` for an empty collection).
    LastPage { top: String },
}

impl Entry {
    /// The kind a later lookup finds it under.
    pub fn kind(&self) -> EntryKind {
        match self {
            Entry::Doc => EntryKind::Doc,
            Entry::FullPage { .. } | Entry::LastPage { .. } => EntryKind::Page,
        }
    }

    /// Where a page ends, from its documents' ids (in order) and its cursor.
    pub fn page(ids: &[&str], after: Option<&str>, limit: u32) -> Self {
        match ids.last() {
            Some(last) if ids.len() >= limit as usize => Entry::FullPage { last: (*last).to_owned() },
            Some(last) => Entry::LastPage { top: (*last).to_owned() },
            None => Entry::LastPage { top: after.unwrap_or_default().to_owned() },
        }
    }
}

#[async_trait]
pub trait Cache: Send + Sync {
    fn backend(&self) -> &'static str;
    async fn lookup(&self, collection: &str, kind: EntryKind, key: &str) -> CacheResult<Lookup>;
    /// Stores `value` unless a write moved the counters `seen` holds (for a
    /// document only the generation counts; see the module's comment).
    async fn fill(&self, collection: &str, entry: &Entry, key: &str, seen: &Generation, value: &str) -> CacheResult<()>;
    /// After an update or delete of document `id`: new generation, its entry gone.
    async fn invalidate(&self, collection: &str, id: &str) -> CacheResult<()>;
    /// After the insert of document `id`: the tail moves (or the generation,
    /// when `id` is not above the top).
    async fn inserted(&self, collection: &str, id: &str) -> CacheResult<()>;
    /// Forgets every entry (used after the cache missed invalidations).
    async fn reset(&self) -> CacheResult<()>;
    async fn ping(&self) -> CacheResult<()>;
}
