//! The one atomic file writer: a temp file beside the target, written,
//! fsynced, renamed into place, and the directory fsynced, so a reader (or
//! a crash) sees the old file or the complete new one, never a part. On any
//! error the temp file is removed and the target is untouched. Used for
//! archives, the store's index and metadata, job state and docker's
//! `config.json`. Temps a killed process left beside the target are
//! swept by the next write of the same name.

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
    let name = name.to_string_lossy();
    sweep_stale(&dir, &name);
    let temp = dir.join(format!(
        ".{name}.{}.{:x}.partial",
        std::process::id(),
        rand::random::<u32>()
    ));
    // Removed on an exit at once (a second Ctrl-C), as on every error here.
    let _tracked = super::interrupt::track(&temp);
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

/// Remove temps of `name` that a process no longer running left (killed
/// before it could clean up): see [`sweep_stale_temps`].
fn sweep_stale(dir: &Path, name: &str) {
    sweep_stale_temps(dir, |temp_of| temp_of == name);
}

/// Remove the temps in `dir` of the files `of` accepts (by final name)
/// that a process no longer running left: `.NAME.<pid>.<hex>.partial`
/// whose pid is gone and that nothing wrote to for five minutes (a writer
/// in another PID namespace sharing the directory keeps writing to its
/// temp). A writer whose names never repeat (a `{time}` backup output)
/// sweeps with a pattern.
pub fn sweep_stale_temps(dir: &Path, of: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(rest) = file
            .to_str()
            .and_then(|f| f.strip_prefix('.'))
            .and_then(|f| f.strip_suffix(".partial"))
        else {
            continue;
        };
        let mut parts = rest.rsplitn(3, '.');
        let (Some(hex), Some(pid), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(pid), true) = (
            pid.parse::<u32>(),
            !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()),
        ) else {
            continue;
        };
        if !of(name) {
            continue;
        }
        let idle = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(300));
        if idle && pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod sweep_tests {
    use super::sweep_stale_temps;

    #[test]
    fn a_dead_writers_idle_temp_of_a_matching_name_is_swept() {
        let dir = tempfile::tempdir().unwrap();
        // pid 4194305 is above any pid_max: no such process.
        let ours = dir
            .path()
            .join(".bk-2026-12-03-101010.tar.4194305.beef.partial");
        let other = dir.path().join(".notes.txt.4194305.beef.partial");
        for path in [&ours, &other] {
            let file = std::fs::File::create(path).unwrap();
            file.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600))
                .unwrap();
        }
        sweep_stale_temps(dir.path(), |name| {
            name.starts_with("bk-") && name.ends_with(".tar")
        });
        assert!(!ours.exists(), "the matching temp stayed");
        assert!(other.exists(), "a temp of another file was swept");
    }
}
