//! The in-process cache used when no Redis is configured. Bounded: when it
//! holds too many entries it starts over, which costs misses, not memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Cache, CacheResult, Entry, EntryKind, Generation, Lookup, kept_for};

/// A collection's counters (see the cache module's comment); a lookup hands
/// them out as its `Generation` and a fill reads them back.
#[derive(Default, Clone, PartialEq, Eq, Debug)]
struct Counters {
    generation: u64,
    tail: u64,
    /// Inserts at or below the top so far.
    below_top: u64,
    top: Option<String>,
    /// The lowest id inserted at or below the top in this generation.
    ceiling: Option<String>,
}

impl Counters {
    /// What a lookup hands out (the ceiling stays here: fills read it current).
    fn seen(&self) -> Generation {
        Generation(format!("{}:{}:{}:{}", self.generation, self.tail, self.below_top, self.top.as_deref().unwrap_or_default()))
    }

    /// The counters a lookup handed out; `None` for a foreign encoding,
    /// which no fill may trust.
    fn from_seen(seen: &Generation) -> Option<Self> {
        let mut parts = seen.0.splitn(4, ':');
        let generation = parts.next()?.parse().ok()?;
        let tail = parts.next()?.parse().ok()?;
        let below_top = parts.next()?.parse().ok()?;
        let top = parts.next()?;
        Some(Self { generation, tail, below_top, top: (!top.is_empty()).then(|| top.to_owned()), ceiling: None })
    }

    /// Whether `entry`, read from the store after a lookup saw `seen`, may
    /// be kept now (see the cache module's comment).
    fn admit(&self, entry: &Entry, seen: &Counters) -> bool {
        if self.generation != seen.generation {
            return false;
        }
        match entry {
            Entry::Doc => true,
            Entry::LastPage { .. } => self.tail == seen.tail,
            Entry::FullPage { last } => {
                self.holds_every_insert_below_top(seen.below_top, last)
                    && (self.tail == seen.tail || seen.top.as_deref().is_some_and(|top| last.as_str() <= top))
            }
        }
    }

    /// Whether a full page ending at `last`, current when `below_top` such
    /// inserts were counted, lacks none of those counted since: each landed
    /// at or above the ceiling.
    fn holds_every_insert_below_top(&self, below_top: u64, last: &str) -> bool {
        below_top == self.below_top || self.ceiling.as_deref().is_none_or(|ceiling| last < ceiling)
    }

    /// An update, a delete or a reset: every page retires, so the ceiling
    /// starts over.
    fn next_generation(&mut self) {
        self.generation += 1;
        self.ceiling = None;
    }

    fn raise_top(&mut self, id: &str) {
        if self.top.as_deref().is_none_or(|top| id > top) {
            self.top = Some(id.to_owned());
        }
    }
}

struct Stored {
    value: String,
    at: Instant,
    generation: u64,
    /// The tail counter a last page was filled under; full pages and
    /// documents outlive tail moves.
    tail: Option<u64>,
    /// A full page's last id, and the inserts below the top counted when it
    /// was filled.
    end: Option<(String, u64)>,
}

impl Stored {
    /// A page is served only while no write retired it: a document is
    /// deleted by its own write instead.
    fn is_current(&self, kind: EntryKind, counters: &Counters) -> bool {
        kind == EntryKind::Doc
            || (self.generation == counters.generation
                && self.tail.is_none_or(|tail| tail == counters.tail)
                && self.end.as_ref().is_none_or(|(last, below_top)| counters.holds_every_insert_below_top(*below_top, last)))
    }
}

/// One collection's counters and entries. Documents and pages are kept
/// apart so that a write forgets its document by key and checks only the
/// pages.
#[derive(Default)]
struct Collection {
    counters: Counters,
    docs: HashMap<String, Stored>,
    pages: HashMap<String, Stored>,
}

impl Collection {
    fn entries(&self, kind: EntryKind) -> &HashMap<String, Stored> {
        match kind {
            EntryKind::Doc => &self.docs,
            EntryKind::Page => &self.pages,
        }
    }

    fn entries_mut(&mut self, kind: EntryKind) -> &mut HashMap<String, Stored> {
        match kind {
            EntryKind::Doc => &mut self.docs,
            EntryKind::Page => &mut self.pages,
        }
    }

    fn forget_entries(&mut self) {
        self.docs.clear();
        self.pages.clear();
    }

    /// Forgets the pages a counter move retired, and the written document.
    fn retire(&mut self, id: &str) {
        self.docs.remove(id);
        let counters = &self.counters;
        self.pages.retain(|_, stored| stored.is_current(EntryKind::Page, counters));
    }
}

#[derive(Default)]
struct State {
    collections: HashMap<String, Collection>,
}

impl State {
    fn collection(&mut self, name: &str) -> &mut Collection {
        if !self.collections.contains_key(name) {
            self.collections.insert(name.to_owned(), Collection::default());
        }
        self.collections.get_mut(name).expect("just inserted")
    }

    fn len(&self) -> usize {
        self.collections.values().map(|collection| collection.docs.len() + collection.pages.len()).sum()
    }
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

#[async_trait]
impl Cache for MemoryCache {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn lookup(&self, collection: &str, kind: EntryKind, key: &str) -> CacheResult<Lookup> {
        let state = self.state.lock().expect("cache lock");
        let Some(collection) = state.collections.get(collection) else {
            return Ok(Lookup { value: None, stale: false, generation: Counters::default().seen() });
        };
        let found = collection
            .entries(kind)
            .get(key)
            .map(|stored| (stored, stored.at.elapsed()))
            .filter(|(_, age)| *age < kept_for(self.ttl))
            .filter(|(stored, _)| stored.is_current(kind, &collection.counters));
        Ok(Lookup {
            value: found.map(|(stored, _)| stored.value.clone()),
            stale: found.is_some_and(|(_, age)| age >= self.ttl),
            generation: collection.counters.seen(),
        })
    }

    async fn fill(&self, collection: &str, entry: &Entry, key: &str, seen: &Generation, value: &str) -> CacheResult<()> {
        let mut state = self.state.lock().expect("cache lock");
        if state.len() >= self.max_entries {
            state.collections.values_mut().for_each(Collection::forget_entries);
        }
        let collection = state.collection(collection);
        let counters = &mut collection.counters;
        if !Counters::from_seen(seen).is_some_and(|seen| counters.admit(entry, &seen)) {
            return Ok(());
        }
        let (tail, end) = match entry {
            Entry::Doc => (None, None),
            Entry::FullPage { last } => {
                counters.raise_top(last);
                (None, Some((last.clone(), counters.below_top)))
            }
            Entry::LastPage { top } => {
                counters.raise_top(top);
                (Some(counters.tail), None)
            }
        };
        let stored = Stored { value: value.to_owned(), at: Instant::now(), generation: counters.generation, tail, end };
        collection.entries_mut(entry.kind()).insert(key.to_owned(), stored);
        Ok(())
    }

    async fn invalidate(&self, collection: &str, id: &str) -> CacheResult<()> {
        let mut state = self.state.lock().expect("cache lock");
        let collection = state.collection(collection);
        collection.counters.next_generation();
        collection.retire(id);
        Ok(())
    }

    async fn inserted(&self, collection: &str, id: &str) -> CacheResult<()> {
        let mut state = self.state.lock().expect("cache lock");
        let collection = state.collection(collection);
        let counters = &mut collection.counters;
        match &counters.top {
            Some(top) if id > top.as_str() => counters.tail += 1,
            Some(_) => {
                counters.tail += 1;
                counters.below_top += 1;
                if counters.ceiling.as_deref().is_none_or(|ceiling| id < ceiling) {
                    counters.ceiling = Some(id.to_owned());
                }
            }
            None => counters.next_generation(),
        }
        counters.raise_top(id);
        collection.retire(id);
        Ok(())
    }

    async fn reset(&self) -> CacheResult<()> {
        let mut state = self.state.lock().expect("cache lock");
        // Counters only ever move forward, so a fill that looked up before
        // the reset cannot match them afterwards.
        for collection in state.collections.values_mut() {
            collection.forget_entries();
            collection.counters.next_generation();
            collection.counters.top = None;
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

    fn cache() -> MemoryCache {
        MemoryCache::new(100, Duration::from_secs(60))
    }

    fn full(last: &str) -> Entry {
        Entry::FullPage { last: last.to_owned() }
    }

    async fn page(cache: &MemoryCache, key: &str) -> Option<String> {
        cache.lookup("orders", EntryKind::Page, key).await.unwrap().value
    }

    #[tokio::test]
    async fn fill_after_a_concurrent_write_is_dropped() {
        let cache = cache();
        let seen = cache.lookup("orders", EntryKind::Doc, "a").await.unwrap().generation;
        cache.invalidate("orders", "a").await.unwrap();
        cache.fill("orders", &Entry::Doc, "a", &seen, "old").await.unwrap();
        assert_eq!(cache.lookup("orders", EntryKind::Doc, "a").await.unwrap().value, None);
    }

    #[tokio::test]
    async fn updates_retire_pages_but_not_other_documents() {
        let cache = cache();
        let seen = cache.lookup("orders", EntryKind::Page, "p").await.unwrap().generation;
        cache.fill("orders", &full("b"), "p", &seen, "page").await.unwrap();
        cache.fill("orders", &Entry::Doc, "b", &seen, "doc-b").await.unwrap();
        cache.invalidate("orders", "a").await.unwrap();
        assert_eq!(page(&cache, "p").await, None);
        assert_eq!(cache.lookup("orders", EntryKind::Doc, "b").await.unwrap().value.as_deref(), Some("doc-b"));
    }

    #[tokio::test]
    async fn an_insert_above_the_top_keeps_full_pages_and_retires_the_last() {
        let cache = cache();
        let seen = cache.lookup("orders", EntryKind::Page, "first").await.unwrap().generation;
        cache.fill("orders", &full("b"), "first", &seen, "a,b").await.unwrap();
        cache.fill("orders", &Entry::LastPage { top: "c".into() }, "b:2", &seen, "c").await.unwrap();
        cache.inserted("orders", "d").await.unwrap();
        assert_eq!(page(&cache, "first").await.as_deref(), Some("a,b"), "the insert cannot belong in it");
        assert_eq!(page(&cache, "b:2").await, None, "the last page grew");
    }

    #[tokio::test]
    async fn an_insert_at_or_below_the_top_retires_every_page() {
        let cache = cache();
        let seen = cache.lookup("orders", EntryKind::Page, "first").await.unwrap().generation;
        cache.fill("orders", &full("m"), "first", &seen, "a..m").await.unwrap();
        cache.inserted("orders", "c").await.unwrap();
        assert_eq!(page(&cache, "first").await, None);
    }

    #[tokio::test]
    async fn an_insert_into_a_cache_without_a_top_retires_every_page() {
        let cache = cache();
        cache.inserted("orders", "x").await.unwrap();
        let seen = cache.lookup("orders", EntryKind::Page, "first").await.unwrap().generation;
        cache.fill("orders", &full("z"), "first", &seen, "..z").await.unwrap();
        // "y" is below the top the fill raised to "z": it may belong in the page.
        cache.inserted("orders", "y").await.unwrap();
        assert_eq!(page(&cache, "first").await, None);
    }

    #[tokio::test]
    async fn a_page_read_before_an_insert_is_not_kept() {
        let cache = cache();
        cache.inserted("orders", "a").await.unwrap();
        let seen = cache.lookup("orders", EntryKind::Page, "first").await.unwrap().generation;
        // The store was read here; then another sidecar inserted "b" (< the
        // page's last id "c" would be impossible for a fresh id, but "b" was
        // its id) and moved the tail before this fill.
        cache.inserted("orders", "b").await.unwrap();
        cache.fill("orders", &full("c"), "first", &seen, "a,c").await.unwrap();
        assert_eq!(page(&cache, "first").await, None);
    }

    #[tokio::test]
    async fn a_full_page_read_while_inserts_land_above_the_top_is_kept() {
        let cache = cache();
        cache.inserted("orders", "m").await.unwrap();
        let seen = cache.lookup("orders", EntryKind::Page, "first").await.unwrap().generation;
        // Read from the store here, then "x" lands above the top "m" the
        // lookup saw: it cannot belong in a page ending at "f".
        cache.inserted("orders", "x").await.unwrap();
        cache.fill("orders", &full("f"), "first", &seen, "a..f").await.unwrap();
        cache.fill("orders", &Entry::LastPage { top: "w".into() }, "f:2", &seen, "g..w").await.unwrap();
        assert_eq!(page(&cache, "first").await.as_deref(), Some("a..f"));
        assert_eq!(page(&cache, "f:2").await, None, "the last page may lack the insert");
        // The same page ending above the top seen may lack it too.
        cache.fill("orders", &full("n"), "second", &seen, "g..n").await.unwrap();
        assert_eq!(page(&cache, "second").await, None);
    }

    /// Two inserts finishing out of order (a slow store): the earlier id
    /// lands below the top the later one set. Only pages ending at or above
    /// it may lack it.
    #[tokio::test]
    async fn an_insert_below_the_top_retires_only_the_pages_that_may_lack_it() {
        let cache = cache();
        cache.inserted("orders", "z").await.unwrap();
        let before = cache.lookup("orders", EntryKind::Page, "first").await.unwrap().generation;
        cache.fill("orders", &full("c"), "first", &before, "a..c").await.unwrap();
        cache.fill("orders", &full("m"), "c:2", &before, "d..m").await.unwrap();
        cache.inserted("orders", "f").await.unwrap();
        assert_eq!(page(&cache, "first").await.as_deref(), Some("a..c"), "ends below the insert");
        assert_eq!(page(&cache, "c:2").await, None, "may lack it");
        // Fills whose lookup came before the insert: the same rule.
        cache.fill("orders", &full("n"), "m:2", &before, "..n").await.unwrap();
        cache.fill("orders", &full("e"), "d:2", &before, "..e").await.unwrap();
        assert_eq!(page(&cache, "m:2").await, None);
        assert_eq!(page(&cache, "d:2").await.as_deref(), Some("..e"));
        // A lookup after the insert: its read holds it, so the page is kept.
        let after = cache.lookup("orders", EntryKind::Page, "c:2").await.unwrap().generation;
        cache.fill("orders", &full("m"), "c:2", &after, "d..f..m").await.unwrap();
        assert_eq!(page(&cache, "c:2").await.as_deref(), Some("d..f..m"));
        // An update retires every page, and the ceiling starts over.
        cache.invalidate("orders", "b").await.unwrap();
        assert_eq!(page(&cache, "first").await, None);
    }

    #[tokio::test]
    async fn an_entry_turns_stale_past_its_ttl_and_goes_as_long_again_after() {
        let cache = MemoryCache::new(100, Duration::from_millis(100));
        let seen = cache.lookup("orders", EntryKind::Doc, "a").await.unwrap().generation;
        cache.fill("orders", &Entry::Doc, "a", &seen, "doc").await.unwrap();
        let found = || async { cache.lookup("orders", EntryKind::Doc, "a").await.map(|found| (found.value, found.stale)).unwrap() };
        assert_eq!(found().await, (Some("doc".to_owned()), false));
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(found().await, (Some("doc".to_owned()), true));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(found().await, (None, false));
    }

    #[test]
    fn counters_read_back_from_what_a_lookup_handed_out() {
        let top = Some("65f0a1b2c3d4e5f601234567".to_owned());
        for counters in [Counters::default(), Counters { generation: 7, tail: 3, below_top: 2, top, ceiling: None }] {
            assert_eq!(Counters::from_seen(&counters.seen()), Some(counters));
        }
        assert_eq!(Counters::from_seen(&Generation("7".into())), None);
    }

    #[tokio::test]
    async fn a_reset_forgets_the_top() {
        let cache = cache();
        cache.inserted("orders", "m").await.unwrap();
        cache.reset().await.unwrap();
        let seen = cache.lookup("orders", EntryKind::Page, "first").await.unwrap().generation;
        cache.fill("orders", &full("c"), "first", &seen, "a,c").await.unwrap();
        cache.inserted("orders", "b").await.unwrap();
        assert_eq!(page(&cache, "first").await, None, "b is below the page's last id");
    }
}
