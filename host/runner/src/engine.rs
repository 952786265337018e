//! One wasmtime `Engine` per process, with the pooling allocator, and
//! components compiled once: the machine code is cached on disk keyed by
//! the component's bytes and the engine's compatibility hash, so a restart
//! only deserializes (milliseconds) instead of recompiling (hundreds).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the granularity of the CPU budget, and the
/// longest a running guest keeps a thread before it yields.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Builds the engine. `max_instances` bounds how many component instances
/// can be alive at once (concurrent requests, chained calls included);
/// `max_memory` bounds each linear memory (the store's limiter refuses
/// growth past the runner's limit first, so a guest sees `memory.grow` fail).
pub fn new_engine(max_instances: u32, max_memory: usize) -> Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    // A Rust component holds a handful of core instances, memories and
    // tables (its module plus the canonical-ABI shims).
    pool.total_component_instances(max_instances)
        .total_core_instances(max_instances * 8)
        .total_memories(max_instances * 2)
        .total_tables(max_instances * 4)
        .max_memory_size(max_memory);
    keep_slots_warm(&mut pool, pagemap_scan_available());
    let mut config = code_config();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("cannot create the wasmtime engine: {e}"))?;
    start_epoch_ticker(&engine)?;
    Ok(engine)
}

/// An engine that only compiles: the code settings of [`new_engine`]'s,
/// so its output is what a serving engine loads (the same compatibility
/// hash, pinned by a test), without a pool or an epoch ticker.
pub fn compiling_engine() -> Result<Engine> {
    Engine::new(&code_config()).map_err(|e| anyhow::anyhow!("cannot create the wasmtime engine: {e}"))
}

/// What decides the machine code, as opposed to where instances live.
fn code_config() -> Config {
    let mut config = Config::new();
    // Compiled code checks the epoch at loop heads and function entries, so
    // a guest that never calls the host can still be stopped.
    config.epoch_interruption(true);
    config
}

/// Linear memory kept resident per slot between requests: more than a
/// request of these components touches (their heap and stack stay well
/// under it).
const KEEP_RESIDENT_MEMORY: usize = 4 << 20;
const KEEP_RESIDENT_TABLE: usize = 64 << 10;
/// Decommits flushed together: one TLB shoot-down for many slots.
const DECOMMIT_BATCH: usize = 64;
/// Slots kept warm while unused; each may hold up to its resident memory.
const MAX_UNUSED_WARM_SLOTS: u32 = 16;

/// Keeps a slot's pages between requests instead of giving them back to the
/// kernel and faulting them in again (docs/request-path.md, "Memory kept
/// resident": cached get-by-id 760 -> 420 CPU-µs per request on this
/// machine, peak RSS unchanged). Keeping pages resident pays only where
/// the kernel's `PAGEMAP_SCAN` lets wasmtime reset just the pages a request
/// dirtied: without it every kept byte is cleared with `memset` on reuse
/// (measured: RSS doubled, CPU barely moved), so there only the decommits
/// are batched.
fn keep_slots_warm(pool: &mut PoolingAllocationConfig, pagemap_scan: bool) {
    pool.decommit_batch_size(DECOMMIT_BATCH).max_unused_warm_slots(MAX_UNUSED_WARM_SLOTS);
    if pagemap_scan {
        pool.pagemap_scan(wasmtime::Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
            .table_keep_resident(KEEP_RESIDENT_TABLE);
    }
}

/// Linux has the `PAGEMAP_SCAN` ioctl from 6.7 on.
fn pagemap_scan_available() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").is_ok_and(|release| kernel_at_least(&release, (6, 7)))
}

fn kernel_at_least(release: &str, wanted: (u32, u32)) -> bool {
    let mut numbers = release.trim().split(|c: char| !c.is_ascii_digit()).map(|n| n.parse::<u32>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= wanted,
        _ => false,
    }
}

/// Advances the engine's epoch every `EPOCH_TICK` on a thread of its own
/// (a tokio task would stall behind the very guests it must interrupt);
/// the thread ends when the engine is dropped.
fn start_epoch_ticker(engine: &Engine) -> Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .context("cannot start the epoch ticker thread")?;
    Ok(())
}

/// Loads a component, compiling it only if the cache has no code for these
/// exact bytes under this engine configuration.
pub fn load_component(engine: &Engine, wasm_path: &Path, cache_dir: &Path) -> Result<Component> {
    let bytes = read_component(wasm_path)?;
    let cached = cache_path(engine, &bytes, cache_dir);
    if cached.exists() {
        // SAFETY: the cache directory only holds files `compile_to_cache`
        // wrote for an engine with this compatibility hash.
        match unsafe { Component::deserialize_file(engine, &cached) } {
            Ok(component) => return Ok(component),
            Err(error) => tracing::warn!(path = %cached.display(), %error, "discarding unusable cached component"),
        }
    }
    let code = compile_to_cache(engine, &bytes, wasm_path, &cached)?;
    // SAFETY: `code` was produced just above by this engine.
    unsafe { Component::deserialize(engine, &code) }
        .map_err(|e| anyhow::anyhow!("cannot load compiled {}: {e}", wasm_path.display()))
}

/// Whether the cache lacks this engine's code for the component.
pub fn needs_compiling(engine: &Engine, wasm_path: &Path, cache_dir: &Path) -> Result<bool> {
    Ok(!cache_path(engine, &read_component(wasm_path)?, cache_dir).exists())
}

/// Compiles the component into the cache unless its code is there already;
/// says whether it compiled.
pub fn compile_if_missing(engine: &Engine, wasm_path: &Path, cache_dir: &Path) -> Result<bool> {
    let bytes = read_component(wasm_path)?;
    let cached = cache_path(engine, &bytes, cache_dir);
    if cached.exists() {
        return Ok(false);
    }
    compile_to_cache(engine, &bytes, wasm_path, &cached)?;
    Ok(true)
}

fn read_component(wasm_path: &Path) -> Result<Vec<u8>> {
    std::fs::read(wasm_path).with_context(|| format!("cannot read component {}", wasm_path.display()))
}

/// Compiles and writes the code under its cache name (through a private
/// temporary file and a rename, so a reader never sees half a file).
fn compile_to_cache(engine: &Engine, bytes: &[u8], wasm_path: &Path, cached: &Path) -> Result<Vec<u8>> {
    let code = engine
        .precompile_component(bytes)
        .map_err(|e| anyhow::anyhow!("cannot compile {}: {e}", wasm_path.display()))?;
    let cache_dir = cached.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("cannot create cache directory {}", cache_dir.display()))?;
    let partial = cached.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&partial, &code).with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, cached).with_context(|| format!("cannot write {}", cached.display()))?;
    Ok(code)
}

fn cache_path(engine: &Engine, bytes: &[u8], cache_dir: &Path) -> PathBuf {
    let mut engine_hash = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut engine_hash);
    let content = hex::encode(&Sha256::digest(bytes)[..16]);
    cache_dir.join(format!("{content}-{:016x}.cwasm", engine_hash.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `orders compile` writes with a compiling engine what a server, with
    /// whatever limits, loads: same cache names, so nothing is compiled twice.
    #[test]
    fn code_compiled_ahead_is_what_every_server_engine_loads() {
        let dir = Path::new("/cache");
        let compiled = cache_path(&compiling_engine().unwrap(), b"component", dir);
        for (instances, memory) in [(4, 16 << 20), (512, 128 << 20)] {
            assert_eq!(cache_path(&new_engine(instances, memory).unwrap(), b"component", dir), compiled);
        }
    }

    #[test]
    fn kernel_releases_are_compared_by_major_and_minor() {
        assert!(kernel_at_least("6.18.44-fc-v1272\n", (6, 7)));
        assert!(kernel_at_least("6.7.0", (6, 7)));
        assert!(!kernel_at_least("6.1.0-28-amd64", (6, 7)));
        assert!(!kernel_at_least("5.15.0", (6, 7)));
        assert!(kernel_at_least("7.0-rc1", (6, 7)));
        assert!(!kernel_at_least("garbage", (6, 7)));
    }
}
