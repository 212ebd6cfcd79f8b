//! Root filesystems as single tars: `ferry import` turns one into a
//! one-layer image (gzip layer, diffID, config, like `docker import`), and
//! `ferry export` flattens an image's layers into one, honouring whiteouts
//! (`.wh.name`, `.wh..wh..opq`) and removing them. Work is tar to tar: no
//! file is ever created, and no link followed, on the host.

use super::names::clean;
use super::{ArchiveError, Compression, LimitedReader};
use crate::types::manifest::descriptor_digest;
use crate::types::staging::{StagedBlob, Staging};
use crate::types::time::{format_rfc3339, now_unix};
use crate::types::{media, Digest, Hasher, ParsedManifest, Platform};
use std::collections::HashSet;
use std::io::{BufRead, Read, Write};

/// Hashes the uncompressed bytes (the diffID) as they pass.
struct DiffIdReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for DiffIdReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..read]);
        Ok(read)
    }
}

/// Apply one `--change` instruction (Dockerfile syntax) to a config's `config` object.
pub fn apply_change(config: &mut serde_json::Value, change: &str) -> Result<(), String> {
    let (instruction, rest) = change
        .trim()
        .split_once(char::is_whitespace)
        .ok_or(format!("--change {change:?} has no value"))?;
    let rest = rest.trim();
    let list = |text: &str, shell: bool| -> serde_json::Value {
        match serde_json::from_str::<Vec<String>>(text) {
            Ok(items) => items.into(),
            Err(_) if shell => serde_json::json!(["/bin/sh", "-c", text]),
            Err(_) => text.split_whitespace().collect::<Vec<_>>().into(),
        }
    };
    let pairs = |text: &str| -> Result<Vec<(String, String)>, String> {
        let words = dockerfile_words(text).map_err(|e| format!("--change {change:?}: {e}"))?;
        match words.first() {
            // The legacy form: `ENV KEY the rest is the value`.
            Some((word, None)) => Ok(text
                .split_once(char::is_whitespace)
                .map(|(_, v)| vec![(word.clone(), v.trim().to_owned())])
                .unwrap_or_else(|| vec![(word.clone(), String::new())])),
            _ => words
                .into_iter()
                .map(|(word, equals)| match equals {
                    Some(at) => Ok((word[..at].to_owned(), word[at + 1..].to_owned())),
                    None => Err(format!(
                        "--change {change:?}: {word:?} is not KEY=VALUE (quote values with spaces)"
                    )),
                })
                .collect(),
        }
    };
    match instruction.to_ascii_uppercase().as_str() {
        "CMD" => config["Cmd"] = list(rest, true),
        "ENTRYPOINT" => config["Entrypoint"] = list(rest, true),
        "USER" => config["User"] = rest.into(),
        "WORKDIR" => config["WorkingDir"] = rest.into(),
        "STOPSIGNAL" => config["StopSignal"] = rest.into(),
        "ENV" => {
            let env = config["Env"].as_array().cloned().unwrap_or_default();
            let mut env: Vec<serde_json::Value> = env;
            for (key, value) in pairs(rest)? {
                env.retain(|e| e.as_str().is_some_and(|e| !e.starts_with(&format!("{key}="))));
                env.push(format!("{key}={value}").into());
            }
            config["Env"] = env.into();
        }
        "LABEL" => {
            for (key, value) in pairs(rest)? {
                if !config["Labels"].is_object() {
                    config["Labels"] = serde_json::json!({});
                }
                config["Labels"][key] = value.into();
            }
        }
        "EXPOSE" => {
            for port in rest.split_whitespace() {
                let port = if port.contains('/') { port.to_owned() } else { format!("{port}/tcp") };
                if !config["ExposedPorts"].is_object() {
                    config["ExposedPorts"] = serde_json::json!({});
                }
                config["ExposedPorts"][port] = serde_json::json!({});
            }
        }
        "VOLUME" => {
            for volume in list(rest, false).as_array().cloned().unwrap_or_default() {
                if !config["Volumes"].is_object() {
                    config["Volumes"] = serde_json::json!({});
                }
                config["Volumes"][volume.as_str().unwrap_or_default()] = serde_json::json!({});
            }
        }
        other => return Err(format!("--change {other} is not supported; use CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR or STOPSIGNAL")),
    }
    Ok(())
}

/// Split `KEY=VALUE` words the way a Dockerfile does: whitespace outside
/// quotes separates words; `"…"` and `'…'` quote (their quotes removed);
/// a backslash escapes the next character (outside single quotes). Each
/// word comes with where its first unquoted `=` is in the result.
fn dockerfile_words(text: &str) -> Result<Vec<(String, Option<usize>)>, String> {
    let mut words = Vec::new();
    let mut word: Option<(String, Option<usize>)> = None;
    let mut chars = text.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if let Some(done) = word.take() {
                    words.push(done);
                }
                continue;
            }
            _ => {}
        }
        let current = word.get_or_insert_with(|| (String::new(), None));
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => current.0.push(c),
            (_, '\\') => match chars.next() {
                Some(next) => current.0.push(next),
                None => return Err("it ends with a lone backslash".into()),
            },
            (None, '"' | '\'') => quote = Some(c),
            (None, '=') if current.1.is_none() => {
                current.1 = Some(current.0.len());
                current.0.push('=');
            }
            (_, c) => current.0.push(c),
        }
    }
    if let Some(q) = quote {
        return Err(format!("a {q} quote is not closed"));
    }
    words.extend(word);
    Ok(words)
}

/// A one-layer image built from a root filesystem tar, not yet in a store.
pub struct ImportedImage {
    /// The layer (gzip), staged and hashed.
    pub layer: StagedBlob,
    pub config: Vec<u8>,
    /// The image ID (the config's digest).
    pub config_digest: Digest,
    pub manifest: Vec<u8>,
    pub manifest_digest: Digest,
}

/// Build a one-layer image from a root filesystem tar (optionally
/// compressed), its layer staged in `staging`; the engine commits it.
pub fn import(
    staging: &dyn Staging,
    input: &mut dyn Read,
    source: &str,
    changes: &[String],
) -> Result<ImportedImage, ArchiveError> {
    let io = |source_error| ArchiveError::Io {
        archive: source.to_owned(),
        source: source_error,
    };
    let mut buffered = std::io::BufReader::with_capacity(1 << 20, input);
    let compression = Compression::detect(buffered.fill_buf().map_err(io)?);
    let plain = compression.decoder(buffered).map_err(io)?;
    let mut diff = DiffIdReader {
        inner: super::tar_check::TarCheck::new(plain),
        hasher: Hasher::new(crate::types::digest::Algorithm::Sha256),
    };
    let layer = {
        let mut gzip = flate2::read::GzEncoder::new(&mut diff, flate2::Compression::fast());
        staging
            .stage(&mut gzip, u64::MAX)
            .map_err(|e| ArchiveError::Invalid {
                archive: source.to_owned(),
                message: e.to_string(),
            })?
    };
    let diff_id = diff.hasher.finish();
    let mut container = serde_json::json!({});
    for change in changes {
        apply_change(&mut container, change).map_err(ArchiveError::Usage)?;
    }
    let now = format_rfc3339(now_unix());
    let host = Platform::host();
    let mut config = serde_json::json!({
        "architecture": host.architecture,
        "os": host.os,
        "created": now,
        "config": container,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": now, "created_by": "ferry import", "comment": format!("Imported from {source}")}],
    });
    if let Some(variant) = host.variant {
        config["variant"] = variant.into();
    }
    let config_bytes = serde_json::to_vec(&config).expect("JSON serialises");
    let config_digest = Digest::sha256_of(&config_bytes);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": config_digest, "size": config_bytes.len()},
        "layers": [{"mediaType": media::OCI_LAYER_GZIP, "digest": layer.digest, "size": layer.size}],
    });
    let manifest_bytes = serde_json::to_vec(&manifest).expect("JSON serialises");
    let manifest_digest = Digest::sha256_of(&manifest_bytes);
    Ok(ImportedImage {
        layer,
        config: config_bytes,
        config_digest,
        manifest: manifest_bytes,
        manifest_digest,
    })
}

/// Opens a layer blob by digest and size: a reader of exactly its bytes,
/// whose digest the opener has checked (the store's blob files).
pub type OpenLayer<'a> = &'a dyn Fn(&Digest, u64) -> std::io::Result<Box<dyn Read>>;

fn open_layer(open: OpenLayer<'_>, digest: &Digest, size: u64) -> std::io::Result<Box<dyn Read>> {
    let mut reader = std::io::BufReader::with_capacity(1 << 20, open(digest, size)?);
    let compression = Compression::detect(reader.fill_buf()?);
    let limit = size.saturating_mul(1000) + (1 << 30);
    Ok(Box::new(LimitedReader::new(
        compression.decoder(reader)?,
        limit,
        "a layer",
    )))
}

/// A directory entry for a parent that a layer implies but does not list
/// (its name is given when it is appended, so a long one gets a GNU
/// long-name record).
fn implied_directory() -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    // Docker applies layers creating missing parents with mode 0600
    // (UnpackLayer's MkdirAll), and `docker export` shows exactly that.
    header.set_mode(0o600);
    header.set_uid(0);
    header.set_gid(0);
    header.set_size(0);
    header.set_mtime(0);
    header
}

/// Whether an entry is a sparse file (GNU `S`, or PAX sparse records).
fn is_sparse<R: Read>(entry: &mut tar::Entry<'_, R>) -> bool {
    if entry.header().entry_type() == tar::EntryType::GNUSparse {
        return true;
    }
    match entry.pax_extensions() {
        Ok(Some(extensions)) => extensions
            .flatten()
            .any(|e| e.key().is_ok_and(|k| k.starts_with("GNU.sparse."))),
        _ => false,
    }
}

/// Whether `path` is `dir` or lies beneath it.
fn under(path: &str, dir: &str) -> bool {
    path == dir
        || (path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/')
}

/// Flatten the image's layers into one tar on `out`.
/// `manifest` is the image's single-platform manifest
/// (the store's `resolve_platform`); `image` names it in errors, and
/// `open` reads its layers.
pub fn export(
    open: OpenLayer<'_>,
    image: &str,
    manifest: &ParsedManifest,
    out: &mut dyn Write,
) -> Result<(), ArchiveError> {
    let bad = |message: String| ArchiveError::Invalid {
        archive: image.to_owned(),
        message,
    };
    let layers: Vec<(Digest, u64)> = manifest
        .image()
        .ok_or_else(|| bad("is not an image manifest".into()))?
        .layers()
        .iter()
        .map(|l| {
            Ok((
                descriptor_digest(l).map_err(|e| bad(e.to_string()))?,
                l.size(),
            ))
        })
        .collect::<Result<_, ArchiveError>>()?;
    let io = |source| ArchiveError::Io {
        archive: image.to_owned(),
        source,
    };
    // Pass 1, top layer down: decide which entries survive. A whiteout or
    // opaque marker hides only what lies in lower layers.
    let mut seen: HashSet<String> = HashSet::new();
    let mut removed: Vec<String> = Vec::new();
    let mut opaque: Vec<String> = Vec::new();
    let mut keep: Vec<Vec<bool>> = vec![Vec::new(); layers.len()];
    for (index, (digest, size)) in layers.iter().enumerate().rev() {
        let mut layer_removed = Vec::new();
        let mut layer_opaque = Vec::new();
        // Within one layer a later entry of a name replaces an earlier one
        // (as tar extracts and docker applies a layer).
        let mut layer_seen: std::collections::HashMap<String, usize> = Default::default();
        let mut tar = tar::Archive::new(open_layer(open, digest, *size).map_err(io)?);
        for entry in tar.entries().map_err(io)? {
            let mut entry = entry.map_err(io)?;
            let path = clean(&entry.path_bytes())
                .map_err(|why| bad(format!("layer {digest} holds {why}")))?;
            if is_sparse(&mut entry) {
                return Err(bad(format!(
                    "layer {digest} holds a sparse file ({path}), which export cannot \
                     flatten yet; nothing was written"
                )));
            }
            let (parent, file) = match path.rsplit_once('/') {
                Some((parent, file)) => (parent.to_owned(), file),
                None => (String::new(), path.as_str()),
            };
            let hidden = removed.iter().any(|r| under(&path, r))
                || opaque
                    .iter()
                    .any(|o| o.is_empty() || (path != *o && under(&path, o)));
            if file == ".wh..wh..opq" {
                layer_opaque.push(parent);
                keep[index].push(false);
            } else if let Some(target) = file.strip_prefix(".wh.") {
                if !target.is_empty() {
                    layer_removed.push(if parent.is_empty() {
                        target.to_owned()
                    } else {
                        format!("{parent}/{target}")
                    });
                }
                keep[index].push(false);
            } else if path.is_empty() || hidden || seen.contains(&path) {
                keep[index].push(false);
            } else {
                if let Some(earlier) = layer_seen.insert(path, keep[index].len()) {
                    keep[index][earlier] = false;
                }
                keep[index].push(true);
            }
        }
        seen.extend(layer_seen.into_keys());
        removed.extend(layer_removed);
        opaque.extend(layer_opaque);
    }
    // Pass 2, bottom layer up: write the survivors, so link targets come
    // before the links that name them. Parents a layer only implies get an
    // entry of their own (0600, root), as docker export writes them.
    let mut builder = tar::Builder::new(out);
    let mut written: HashSet<String> = HashSet::new();
    for (index, (digest, size)) in layers.iter().enumerate() {
        let mut tar = tar::Archive::new(open_layer(open, digest, *size).map_err(io)?);
        for (position, entry) in tar.entries().map_err(io)?.enumerate() {
            let mut entry = entry.map_err(io)?;
            if !keep[index].get(position).copied().unwrap_or(false) {
                continue;
            }
            let path = clean(&entry.path_bytes())
                .map_err(|why| bad(format!("layer {digest} holds {why}")))?;
            let mut header = entry.header().clone();
            for (at, _) in path.match_indices('/') {
                let parent = &path[..at];
                if !seen.contains(parent) && written.insert(parent.to_owned()) {
                    builder
                        .append_data(
                            &mut implied_directory(),
                            format!("{parent}/"),
                            std::io::empty(),
                        )
                        .map_err(io)?;
                }
            }
            written.insert(path.clone());
            if header.entry_type() == tar::EntryType::Directory {
                // A trailing slash, as docker export and GNU tar write.
                builder
                    .append_data(&mut header, format!("{path}/"), std::io::empty())
                    .map_err(io)?;
                continue;
            }
            match header.entry_type() {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target = super::names::link_target(&entry);
                    builder
                        .append_link(&mut header, &path, &target)
                        .map_err(io)?;
                }
                _ => builder
                    .append_data(&mut header, &path, &mut entry)
                    .map_err(io)?,
            }
        }
    }
    builder.finish().map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::apply_change;

    fn applied(changes: &[&str]) -> serde_json::Value {
        let mut config = serde_json::json!({});
        for change in changes {
            apply_change(&mut config, change).unwrap();
        }
        config
    }

    #[test]
    fn changes_are_quoted_as_a_dockerfile_quotes() {
        let config = applied(&[
            r#"ENV MSG="hello world""#,
            r#"ENV A=1 B='two words' C=x\ y D="say \"hi\"""#,
            "ENV LEGACY the rest is the value",
            r#"LABEL "a"="My App" b=plain"#,
        ]);
        assert_eq!(
            config["Env"],
            serde_json::json!([
                "MSG=hello world",
                "A=1",
                "B=two words",
                "C=x y",
                "D=say \"hi\"",
                "LEGACY=the rest is the value"
            ])
        );
        assert_eq!(
            config["Labels"],
            serde_json::json!({"a": "My App", "b": "plain"})
        );
        let mut config = serde_json::json!({});
        for bad in [r#"ENV A="open"#, "ENV A=1 B", r"ENV A=\"] {
            assert!(apply_change(&mut config, bad).is_err(), "{bad}");
        }
    }
}
