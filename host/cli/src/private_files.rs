//! Secrets and customer data on disk: the data directory is the owner's
//! alone (0700), and so is every file in it that holds a secret (the
//! download secret, nginx's config with the same secret) or customer data
//! (the SQLite store, queue and event files, the bundle zips): 0600.
//!
//! New files get these modes from the process umask (set once at start, so
//! files made by SQLite, nginx and the bundle worker are covered too); files
//! left by an older version with looser modes are tightened at start.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

/// Files and directories below the data directory that hold secrets or
/// customer data, and are tightened at start when they exist.
const PRIVATE_DIRS: &[&str] = &["store", "store/blobs", "nginx", "cluster"];
const PRIVATE_FILES: &[&str] = &["download-secret", "nginx/nginx.conf"];

/// Every file this process creates is its owner's only (0600, dirs 0700).
pub fn restrict_umask() {
    // SAFETY: umask has no preconditions and cannot fail.
    unsafe { libc::umask(0o077) };
}

/// Creates `data_dir` if needed and makes it and what it holds private.
pub fn private_data_dir(data_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    restrict(data_dir, 0o700)?;
    for dir in PRIVATE_DIRS {
        let dir = data_dir.join(dir);
        if !dir.is_dir() {
            continue;
        }
        restrict(&dir, 0o700)?;
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
        {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                restrict(&entry.path(), 0o600)?;
            }
        }
    }
    for file in PRIVATE_FILES {
        let file = data_dir.join(file);
        if file.is_file() {
            restrict(&file, 0o600)?;
        }
    }
    Ok(())
}

/// Writes `contents` to `path`, readable by the owner only, also when the
/// file existed before with another mode.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    std::fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))?;
    restrict(path, 0o600)
}

fn restrict(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot restrict {} to {mode:o}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn loose_files_of_an_older_version_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("store/blobs")).unwrap();
        for file in [
            "download-secret",
            "store/orders.sqlite3",
            "store/blobs/bundle-a.zip",
        ] {
            std::fs::write(data.join(file), b"x").unwrap();
            std::fs::set_permissions(data.join(file), std::fs::Permissions::from_mode(0o644))
                .unwrap();
        }
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_data_dir(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("store")), 0o700);
        for file in [
            "download-secret",
            "store/orders.sqlite3",
            "store/blobs/bundle-a.zip",
        ] {
            assert_eq!(mode(&data.join(file)), 0o600, "{file}");
        }
        write_private(&data.join("nginx.conf"), b"secret").unwrap();
        assert_eq!(mode(&data.join("nginx.conf")), 0o600);
    }
}
