//! The read-through cache in front of the store: single documents and list
//! pages, invalidated on every write so that a read after a successful
//! write never sees the old value.
//!
//! Invalidation without races uses a generation per collection. A reader
//! notes the generation when it misses, reads the store, and fills the
//! cache only if no write bumped the generation meanwhile (documents) or
//! under a key that includes the generation (list pages). A writer bumps
//! the generation and deletes the document's entry after its store write.
//! So a reader that fetched the old value just before a write can never
//! put it back after that write returns.

pub mod memory;
pub mod redis;

use async_trait::async_trait;

/// The generation a reader saw when it missed; filling the cache is only
/// accepted while it is still current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation(pub String);

/// What a cache lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub value: Option<String>,
    pub generation: Generation,
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

#[async_trait]
pub trait Cache: Send + Sync {
    fn backend(&self) -> &'static str;
    async fn lookup(&self, collection: &str, kind: EntryKind, key: &str) -> CacheResult<Lookup>;
    /// Stores `value` unless the collection's generation moved past `seen`.
    async fn fill(&self, collection: &str, kind: EntryKind, key: &str, seen: &Generation, value: &str) -> CacheResult<()>;
    /// After a write to document `id`: new generation, document entry gone.
    async fn invalidate(&self, collection: &str, id: &str) -> CacheResult<()>;
    /// Forgets every entry (used after the cache missed invalidations).
    async fn reset(&self) -> CacheResult<()>;
    async fn ping(&self) -> CacheResult<()>;
}
