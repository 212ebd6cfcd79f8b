//! The one atomic file writer: a temp file beside the target, written,
//! fsynced, renamed into place, and the directory fsynced, so a reader (or
//! a crash) sees the old file or the complete new one, never a part. On any
//! error the temp file is removed and the target is untouched. Used for
//! archives, the store's index and metadata, job state and docker's
//! `config.json`.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// Write `path` through `write`; `mode` sets the new file's permissions
/// (e.g. 0o600 for files holding secrets).
pub fn write_atomically<E: From<std::io::Error>>(
    path: &Path,
    mode: Option<u32>,
    write: impl FnOnce(&mut std::fs::File) -> Result<(), E>,
) -> Result<(), E> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a file name", path.display()),
        )
    })?;
    std::fs::create_dir_all(&dir)?;
    let temp = dir.join(format!(
        ".{}.{}.{:x}.partial",
        name.to_string_lossy(),
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        if let Some(mode) = mode {
            options.mode(mode);
        }
        let mut file = options.open(&temp)?;
        write(&mut file)?;
        file.flush()?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        std::fs::File::open(&dir).and_then(|d| d.sync_all())?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}
