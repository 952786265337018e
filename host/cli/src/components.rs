//! Builds the Wasm components when they are missing or older than their
//! sources, so `orders up` works on a fresh clone without a separate step.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use orders_runner::manifest::Manifest;

/// Builds the functions workspace next to the manifest if any component
/// the manifest names is missing or stale.
pub fn build_if_stale(manifest_path: &Path) -> Result<()> {
    let manifest = Manifest::load(manifest_path)?;
    let root = crate::config::manifest_dir(manifest_path);
    let functions = root.join("functions");
    let wasm: Vec<PathBuf> = manifest.component.values().map(|c| Manifest::source_path(&root, c)).collect();
    let oldest_output = wasm.iter().map(|path| modified(path)).min().flatten();
    let newest_source = newest_in(&functions)?;
    let stale = match (oldest_output, newest_source) {
        (None, _) => true,
        (Some(built), Some(source)) => source > built,
        (Some(_), None) => false,
    };
    if !stale {
        return Ok(());
    }
    if !functions.join("Cargo.toml").exists() {
        bail!("components are missing and {} has no functions workspace to build them from", root.display());
    }
    ensure_wasm_target(&functions)?;
    let spinner = ProgressBar::new_spinner().with_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")?);
    spinner.set_message(format!("building the Wasm components (cargo build --release --target {WASM_TARGET})"));
    spinner.enable_steady_tick(Duration::from_millis(120));
    // The components' paths in spin.toml point into functions/target, so a
    // CARGO_TARGET_DIR meant for the host build must not move them.
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--target", WASM_TARGET])
        .current_dir(&functions)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .output()
        .context("cannot run cargo to build the components; is the Rust toolchain installed?")?;
    spinner.finish_and_clear();
    if !output.status.success() {
        bail!("building the components failed:\n{}", String::from_utf8_lossy(&output.stderr));
    }
    for path in &wasm {
        if !path.exists() {
            bail!("the build finished but {} is missing; check the source paths in spin.toml", path.display());
        }
    }
    Ok(())
}

const WASM_TARGET: &str = "wasm32-wasip2";

/// Adds the components' target to the toolchain when it lacks it: rustup
/// adds the targets rust-toolchain.toml names only when it installs the
/// toolchain, not to one already installed, so a fresh machine has none.
fn ensure_wasm_target(functions: &Path) -> Result<()> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(functions)
        .output()
        .context("cannot run rustc; is the Rust toolchain installed?")?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot.join("lib/rustlib").join(WASM_TARGET).is_dir() {
        return Ok(());
    }
    eprintln!("the {WASM_TARGET} target is missing: adding it (rustup target add {WASM_TARGET}), once");
    let status = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .current_dir(functions)
        .status()
        .with_context(|| format!("cannot run rustup to add the {WASM_TARGET} target; add it to your toolchain by hand"))?;
    if !status.success() {
        bail!("`rustup target add {WASM_TARGET}` failed ({status}); the components cannot be built without it");
    }
    Ok(())
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The newest modification time among the sources of the functions
/// workspace (Rust files, manifests, the OpenAPI document), skipping target/.
fn newest_in(dir: &Path) -> Result<Option<SystemTime>> {
    let mut newest = None;
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(None) };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') && name != ".cargo" {
            continue;
        }
        let candidate = if entry.file_type()?.is_dir() {
            newest_in(&path)?
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("rs" | "toml" | "json" | "lock")) {
            modified(&path)
        } else {
            None
        };
        newest = newest.max(candidate);
    }
    Ok(newest)
}
