//! How `orders cluster` hands a child process (a sidecar, an instance) its
//! settings whole: the child's own argument struct, already resolved and
//! typed, serialized into a private settings file (0600: it holds the
//! tokens and the store's URIs) that the child reads with `--config`. The
//! child's environment has no `ORDERS_*` variables, which would override the
//! file, so what the child runs with is exactly what the parent decided.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

/// Writes `settings` (and the log filter) to `<dir>/<name>.toml`.
pub fn write_settings(dir: &Path, name: &str, settings: &impl Serialize, log: &str) -> Result<PathBuf> {
    let mut table = toml::Table::try_from(settings).context("cannot serialize a child's settings")?;
    table.insert("log".to_owned(), toml::Value::String(log.to_owned()));
    let text = toml::to_string(&table).context("cannot serialize a child's settings")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("{name}.toml"));
    crate::private_files::write_private(&path, text.as_bytes())?;
    Ok(path)
}

/// `orders <command> --config <settings>`, with no `ORDERS_*` variables.
pub fn command(exe: &Path, subcommand: &str, settings: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(exe);
    command.arg(subcommand).arg("--config").arg(settings);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ORDERS_") {
            command.env_remove(&name);
        }
    }
    command
}
