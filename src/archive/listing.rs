//! The blobs an existing archive holds, for what a delta may leave out
//! (`save --since OLD.tar`, incremental backups). Every file is hashed as
//! it streams past (through the same decompression, with the same
//! expansion bound, as the archive reader): a blob that does not hash to
//! its name makes the archive unusable as a base, and the files of a
//! `docker save` layout (`<id>/layer.tar`, `<hex>.json`) count under the
//! digests they have.

use super::ArchiveError;
use crate::types::{Digest, Hasher};
use std::collections::BTreeSet;
use std::io::Read;

/// Blobs an existing archive file holds.
pub fn archive_blobs(path: &std::path::Path) -> Result<BTreeSet<Digest>, ArchiveError> {
    let file = std::fs::File::open(path).map_err(|source| ArchiveError::Io {
        archive: path.display().to_string(),
        source,
    })?;
    archive_blobs_in(file, &path.display().to_string())
}

/// Blobs the archive read from `input` holds (`name` names it in errors).
pub fn archive_blobs_in(
    mut input: impl Read,
    name: &str,
) -> Result<BTreeSet<Digest>, ArchiveError> {
    let io = |source| ArchiveError::Io {
        archive: name.to_owned(),
        source,
    };
    let mut stream = super::read::tar_stream(&mut input, name)?;
    let mut archive = tar::Archive::new(&mut stream);
    let mut found = BTreeSet::new();
    let mut buffer = vec![0u8; 256 * 1024];
    for entry in archive.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let raw = entry.path_bytes().into_owned();
        let Ok(path) = super::names::clean(&raw) else {
            continue;
        };
        let claimed = path
            .strip_prefix("blobs/")
            .and_then(|rest| rest.split_once('/'))
            .and_then(|(algorithm, hex)| format!("{algorithm}:{hex}").parse::<Digest>().ok());
        let mut hasher = match &claimed {
            Some(digest) => digest.hasher(),
            None => Hasher::new(crate::types::digest::Algorithm::Sha256),
        };
        loop {
            let read = entry.read(&mut buffer).map_err(io)?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
        let actual = hasher.finish();
        if let Some(claimed) = claimed.filter(|c| *c != actual) {
            return Err(ArchiveError::Invalid {
                archive: name.to_owned(),
                message: format!(
                    "{path} hashes to {actual}, not {claimed}: the archive is corrupt, so a \
                     delta cannot leave out what it holds (write a full archive, or verify it \
                     with `ferry verify {name}`)"
                ),
            });
        }
        found.insert(actual);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, bytes) in entries {
            let mut header = tar::Header::new_ustar();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            builder.append_data(&mut header, path, *bytes).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn blobs_are_listed_under_the_digests_they_hash_to() {
        let layer = b"a docker save layer";
        let blob = b"an oci blob";
        let name = format!("blobs/sha256/{}", Digest::sha256_of(blob).hex());
        let tar = tar_of(&[("abc/layer.tar", layer), (&name, blob)]);
        let found = archive_blobs_in(&tar[..], "x.tar").unwrap();
        assert!(
            found.contains(&Digest::sha256_of(layer)),
            "docker layout counted"
        );
        assert!(found.contains(&Digest::sha256_of(blob)));
    }

    #[test]
    fn a_blob_that_lies_about_its_name_makes_the_archive_no_base() {
        let name = format!("blobs/sha256/{}", Digest::sha256_of(b"other").hex());
        let tar = tar_of(&[(&name, b"not other")]);
        let error = archive_blobs_in(&tar[..], "x.tar").unwrap_err().to_string();
        assert!(error.contains("corrupt"), "{error}");
    }
}
