//! The in-process cache used when no Redis is configured. Bounded: when it
//! holds too many entries it starts over, which costs misses, not memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Cache, CacheResult, EntryKind, Generation, Lookup};

#[derive(Default)]
struct State {
    generations: HashMap<String, u64>,
    entries: HashMap<(String, EntryKind, String, u64), (String, Instant)>,
}

pub struct MemoryCache {
    state: Mutex<State>,
    max_entries: usize,
    ttl: Duration,
}

impl MemoryCache {
    pub fn new(max_entries: usize, ttl: Duration) -> Self {
        Self { state: Mutex::default(), max_entries, ttl }
    }
}

impl State {
    fn generation(&self, collection: &str) -> u64 {
        self.generations.get(collection).copied().unwrap_or(0)
    }

    /// Documents are keyed without generation (a write deletes its own
    /// entry); pages with it, so any write retires every page.
    fn key(&self, collection: &str, kind: EntryKind, key: &str) -> (String, EntryKind, String, u64) {
        let generation = if kind == EntryKind::Page { self.generation(collection) } else { 0 };
        (collection.to_owned(), kind, key.to_owned(), generation)
    }
}

#[async_trait]
impl Cache for MemoryCache {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn lookup(&self, collection: &str, kind: EntryKind, key: &str) -> CacheResult<Lookup> {
        let state = self.state.lock().expect("cache lock");
        let value = state
            .entries
            .get(&state.key(collection, kind, key))
            .filter(|(_, stored_at)| stored_at.elapsed() < self.ttl)
            .map(|(value, _)| value.clone());
        Ok(Lookup { value, generation: Generation(state.generation(collection).to_string()) })
    }

    async fn fill(&self, collection: &str, kind: EntryKind, key: &str, seen: &Generation, value: &str) -> CacheResult<()> {
        let mut state = self.state.lock().expect("cache lock");
        if state.generation(collection).to_string() != seen.0 {
            return Ok(());
        }
        if state.entries.len() >= self.max_entries {
            state.entries.clear();
        }
        let entry_key = state.key(collection, kind, key);
        state.entries.insert(entry_key, (value.to_owned(), Instant::now()));
        Ok(())
    }

    async fn invalidate(&self, collection: &str, id: &str) -> CacheResult<()> {
        let mut state = self.state.lock().expect("cache lock");
        *state.generations.entry(collection.to_owned()).or_default() += 1;
        // Pages of older generations are unreachable; drop them to free memory.
        let current = state.generation(collection);
        state.entries.retain(|(c, kind, k, generation), _| {
            !(c == collection && ((*kind == EntryKind::Page && *generation < current) || (*kind == EntryKind::Doc && k == id)))
        });
        Ok(())
    }

    async fn reset(&self) -> CacheResult<()> {
        let mut state = self.state.lock().expect("cache lock");
        state.entries.clear();
        for generation in state.generations.values_mut() {
            *generation += 1;
        }
        Ok(())
    }

    async fn ping(&self) -> CacheResult<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fill_after_a_concurrent_write_is_dropped() {
        let cache = MemoryCache::new(100, Duration::from_secs(60));
        let seen = cache.lookup("orders", EntryKind::Doc, "a").await.unwrap().generation;
        cache.invalidate("orders", "a").await.unwrap();
        cache.fill("orders", EntryKind::Doc, "a", &seen, "old").await.unwrap();
        assert_eq!(cache.lookup("orders", EntryKind::Doc, "a").await.unwrap().value, None);
    }

    #[tokio::test]
    async fn writes_retire_pages_but_not_other_documents() {
        let cache = MemoryCache::new(100, Duration::from_secs(60));
        let seen = cache.lookup("orders", EntryKind::Page, "p").await.unwrap().generation;
        cache.fill("orders", EntryKind::Page, "p", &seen, "page").await.unwrap();
        cache.fill("orders", EntryKind::Doc, "b", &seen, "doc-b").await.unwrap();
        cache.invalidate("orders", "a").await.unwrap();
        assert_eq!(cache.lookup("orders", EntryKind::Page, "p").await.unwrap().value, None);
        assert_eq!(cache.lookup("orders", EntryKind::Doc, "b").await.unwrap().value.as_deref(), Some("doc-b"));
    }
}
