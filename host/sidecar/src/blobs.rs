//! Blob storage for artefacts (bundle zips): files in one directory, written
//! to a temporary name, synced, then renamed, so a reader never sees half a
//! blob and an acknowledged put survives a crash. Several sidecars share
//! blobs by sharing the directory. Blobs hold customer data: the directory
//! is 0700 and every blob 0600, whatever the process's umask.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use tokio::io::AsyncWriteExt;

pub struct BlobStore {
    dir: PathBuf,
}

/// Keys are file names we choose to trust: 1–128 of `[A-Za-z0-9._-]`, not
/// starting with a dot, so no key can name a path outside the directory.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 128
        && !key.starts_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl BlobStore {
    pub fn open(dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create blob directory {}: {e}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
            anyhow::anyhow!("cannot restrict the blob directory {}: {e}", dir.display())
        })?;
        Ok(Self { dir })
    }

    /// A new file only the owner can read.
    async fn create_private(path: &std::path::Path) -> std::io::Result<tokio::fs::File> {
        tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .await
    }

    pub async fn put(&self, key: &str, bytes: &[u8]) -> std::io::Result<()> {
        let partial = self
            .dir
            .join(format!(".{key}.{}.partial", std::process::id()));
        let mut file = Self::create_private(&partial).await?;
        file.write_all(bytes).await?;
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&partial, self.dir.join(key)).await
    }

    /// Moves a finished file into the store under `key` (copying when it
    /// lives on another file system), synced like [`BlobStore::put`].
    pub async fn put_file(&self, key: &str, source: &std::path::Path) -> std::io::Result<()> {
        let target = self.dir.join(key);
        let file = tokio::fs::File::open(source).await?;
        // Before it is visible under its key: the source may have been made
        // under a looser umask.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .await?;
        file.sync_all().await?;
        if tokio::fs::rename(source, &target).await.is_err() {
            let partial = self
                .dir
                .join(format!(".{key}.{}.partial", std::process::id()));
            let mut copy = Self::create_private(&partial).await?;
            tokio::io::copy(&mut tokio::fs::File::open(source).await?, &mut copy).await?;
            copy.sync_all().await?;
            tokio::fs::rename(&partial, &target).await?;
        }
        Ok(())
    }

    /// The blob as an open file and its length, for streaming.
    pub async fn reader(&self, key: &str) -> std::io::Result<Option<(tokio::fs::File, u64)>> {
        match tokio::fs::File::open(self.dir.join(key)).await {
            Ok(file) => {
                let length = file.metadata().await?.len();
                Ok(Some((file, length)))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Removes blobs whose key starts with `prefix` and that were written
    /// more than `age` ago; returns how many.
    pub async fn remove_older_than(
        &self,
        prefix: &str,
        age: std::time::Duration,
    ) -> std::io::Result<u64> {
        let mut removed = 0;
        let mut entries = tokio::fs::read_dir(&self.dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with(prefix) {
                continue;
            }
            let modified = entry.metadata().await?.modified()?;
            if modified.elapsed().unwrap_or_default() > age && self.delete(name).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    pub async fn get(&self, key: &str) -> std::io::Result<Option<Vec<u8>>> {
        match tokio::fs::read(self.dir.join(key)).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    pub async fn delete(&self, key: &str) -> std::io::Result<bool> {
        match tokio::fs::remove_file(self.dir.join(key)).await {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_the_directory() {
        for bad in ["", "../x", "a/b", ".hidden", "x\0", &"k".repeat(129)] {
            assert!(!valid_key(bad), "{bad:?}");
        }
        assert!(valid_key("bundle-65a1.zip"));
    }

    #[tokio::test]
    async fn blobs_are_readable_by_their_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().join("blobs")).unwrap();
        store.put("a.zip", b"customer data").await.unwrap();
        let source = dir.path().join("made-elsewhere.zip");
        std::fs::write(&source, b"zip").unwrap();
        std::fs::set_permissions(&source, std::fs::Permissions::from_mode(0o644)).unwrap();
        store.put_file("b.zip", &source).await.unwrap();
        let mode = |path: PathBuf| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dir.path().join("blobs")), 0o700);
        assert_eq!(mode(dir.path().join("blobs/a.zip")), 0o600);
        assert_eq!(mode(dir.path().join("blobs/b.zip")), 0o600);
    }

    #[tokio::test]
    async fn put_get_delete_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().to_path_buf()).unwrap();
        store.put("a.zip", b"zip bytes").await.unwrap();
        assert_eq!(
            store.get("a.zip").await.unwrap().as_deref(),
            Some(&b"zip bytes"[..])
        );
        assert!(store.delete("a.zip").await.unwrap());
        assert_eq!(store.get("a.zip").await.unwrap(), None);
    }
}
