//! Files only this user may read (mode 0600), written once.

use std::io::Write;
use std::path::Path;

/// Creates `path` with `contents`; fails with `AlreadyExists` when another
/// process made it first, so exactly one writer wins.
pub fn create_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents)
}
