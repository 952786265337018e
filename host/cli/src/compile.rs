//! `orders compile`: the components' machine code, compiled into the data
//! directory's cache. A server compiles what the cache lacks in a child
//! process running this command, so the compiler's memory never stays in
//! the process that serves (`orders_runner::compile`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::DataDir;

#[derive(Debug, Args)]
pub struct CompileArgs {
    /// The Spin manifest whose components to compile.
    #[arg(long, env = "ORDERS_MANIFEST", default_value = "spin.toml")]
    pub manifest: PathBuf,
    #[command(flatten)]
    pub dir: DataDir,
}

/// Where a data directory keeps compiled components.
pub fn cache_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("compiled")
}

pub fn run(args: CompileArgs) -> Result<()> {
    let started = Instant::now();
    let compiled = orders_runner::compile::compile_missing(&args.manifest, &cache_dir(&args.dir.data_dir))?;
    tracing::info!(compiled, pid = std::process::id(), elapsed_ms = started.elapsed().as_millis() as u64, "components compiled");
    Ok(())
}

/// Compiles the components the cache lacks in a child `orders compile`, so
/// that the caller, about to serve, only loads cached code. Should the child
/// fail, the caller's own load compiles what is still missing (and reports
/// a component that does not compile), so this only warns.
pub fn ahead_in_child(manifest: &Path, data_dir: &Path) -> Result<()> {
    let missing = orders_runner::compile::uncompiled(manifest, &cache_dir(data_dir))?;
    if missing.is_empty() {
        return Ok(());
    }
    let spinner = ProgressBar::new_spinner().with_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")?);
    spinner.set_message(format!("compiling {} components to machine code (once: cached in {})", missing.len(), cache_dir(data_dir).display()));
    spinner.enable_steady_tick(Duration::from_millis(120));
    let status = Command::new(std::env::current_exe().context("cannot find the orders executable")?)
        .arg("compile")
        .arg("--manifest")
        .arg(manifest)
        .arg("--data-dir")
        .arg(data_dir)
        // The flags say everything; a settings file may hold keys of other commands.
        .env_remove("ORDERS_CONFIG")
        .status();
    spinner.finish_and_clear();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => tracing::warn!(%status, "compiling in a child process failed; compiling in this one"),
        Err(error) => tracing::warn!(%error, "cannot start a child process to compile; compiling in this one"),
    }
    Ok(())
}
