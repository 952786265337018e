//! Compiling an application's components into the code cache before it is
//! served. Compiling takes far more memory than serving (cranelift's working
//! sets, on every core), and the allocator keeps what it freed: a process
//! that compiled at start held about 100 MiB where one that found its code
//! cached holds about 35 (docs/request-path.md, "Compiling outside the
//! server"). So a server compiles in a short-lived child process
//! (`orders compile`) and then only maps the cached code.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::engine::{compile_if_missing, compiling_engine, needs_compiling};
use crate::manifest::Manifest;

/// The Wasm files of the manifest's components.
pub fn component_files(manifest_path: &Path) -> Result<Vec<PathBuf>> {
    let manifest = Manifest::load(manifest_path)?;
    let manifest_dir = manifest_path.parent().unwrap_or(Path::new("."));
    Ok(manifest.component.values().map(|decl| Manifest::source_path(manifest_dir, decl)).collect())
}

/// The components whose code the cache lacks.
pub fn uncompiled(manifest_path: &Path, cache_dir: &Path) -> Result<Vec<PathBuf>> {
    let engine = compiling_engine()?;
    let mut missing = Vec::new();
    for wasm in component_files(manifest_path)? {
        if needs_compiling(&engine, &wasm, cache_dir)? {
            missing.push(wasm);
        }
    }
    Ok(missing)
}

/// Compiles every component the cache lacks; returns how many it compiled.
pub fn compile_missing(manifest_path: &Path, cache_dir: &Path) -> Result<usize> {
    let engine = compiling_engine()?;
    let mut compiled = 0;
    for wasm in component_files(manifest_path)? {
        compiled += usize::from(compile_if_missing(&engine, &wasm, cache_dir)?);
    }
    Ok(compiled)
}
