//! Generate a realistic test image straight into a ferry store, with no
//! registry and no internet: a base layer with directories, a symlink and
//! a hardlink, then random (incompressible) layers. Used by the quick start
//! and the benchmark.
//!
//! ```text
//! cargo run --release --example seed_image -- --store DIR --name host:5000/demo/app:1.0 \
//!     [--layers 4] [--layer-size 1048576] [--seed 1]
//! ```

#![allow(clippy::print_stdout)]

use ferry::store::{IndexEntry, Store};
use ferry::types::{media, Digest, Reference};
use flate2::write::GzEncoder;
use std::io::Write;

struct Options {
    store: String,
    name: String,
    layers: usize,
    layer_size: usize,
    seed: u64,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        store: String::new(),
        name: String::new(),
        layers: 3,
        layer_size: 1 << 20,
        seed: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--store" => options.store = value()?,
            "--name" => options.name = value()?,
            "--layers" => {
                options.layers = value()?.parse().map_err(|e| format!("--layers: {e}"))?
            }
            "--layer-size" => {
                options.layer_size = value()?.parse().map_err(|e| format!("--layer-size: {e}"))?
            }
            "--seed" => options.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if options.store.is_empty() || options.name.is_empty() {
        return Err("usage: seed_image --store DIR --name IMAGE [--layers N] [--layer-size BYTES] [--seed N]".into());
    }
    Ok(options)
}

/// Fill `buffer` with xorshift bytes: fast and incompressible.
fn fill_random(buffer: &mut [u8], state: &mut u64) {
    for chunk in buffer.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let bytes = state.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

/// A tar written straight through gzip while both forms are hashed.
struct LayerWriter {
    gzip: GzEncoder<HashingFile>,
    diff_hasher: ferry::types::Hasher,
}

struct HashingFile {
    file: std::io::BufWriter<std::fs::File>,
    hasher: ferry::types::Hasher,
    size: u64,
}

impl Write for HashingFile {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.file.write(bytes)?;
        self.hasher.update(&bytes[..written]);
        self.size += written as u64;
        Ok(written)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Write for LayerWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.gzip.write(bytes)?;
        self.diff_hasher.update(&bytes[..written]);
        Ok(written)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.gzip.flush()
    }
}

fn sha256() -> ferry::types::Hasher {
    ferry::types::Hasher::new(ferry::types::digest::Algorithm::Sha256)
}

/// Write one layer into the store; returns (digest, size, diffID).
fn write_layer(
    store: &Store,
    build: impl FnOnce(&mut tar::Builder<&mut LayerWriter>) -> std::io::Result<()>,
) -> std::io::Result<(Digest, u64, Digest)> {
    let temp = store
        .root()
        .join("ingest")
        .join(format!("seed-{}.tmp", std::process::id()));
    let file = HashingFile {
        file: std::io::BufWriter::new(std::fs::File::create(&temp)?),
        hasher: sha256(),
        size: 0,
    };
    let mut writer = LayerWriter {
        gzip: GzEncoder::new(file, flate2::Compression::fast()),
        diff_hasher: sha256(),
    };
    {
        let mut builder = tar::Builder::new(&mut writer);
        build(&mut builder)?;
        builder.finish()?;
    }
    let diff_id = writer.diff_hasher.finish();
    let mut file = writer.gzip.finish()?;
    file.flush()?;
    let digest = file.hasher.finish();
    let size = file.size;
    std::fs::rename(&temp, store.blob_path(&digest))?;
    Ok((digest, size, diff_id))
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(1_700_000_000);
    header
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = parse_options()?;
    let name = Reference::parse(&options.name)?;
    let store = Store::open(&options.store)?;
    let mut state = options.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut layers = Vec::new();
    layers.push(write_layer(&store, |tar| {
        tar.append_data(
            &mut header(tar::EntryType::Directory, 0o755, 0),
            "etc",
            std::io::empty(),
        )?;
        let release = b"NAME=\"ferry demo\"\n";
        tar.append_data(
            &mut header(tar::EntryType::Regular, 0o644, release.len() as u64),
            "etc/os-release",
            &release[..],
        )?;
        tar.append_link(
            &mut header(tar::EntryType::Symlink, 0o777, 0),
            "etc/localtime",
            "/usr/share/zoneinfo/UTC",
        )?;
        let tool = b"#!/bin/sh\necho ferry demo\n";
        tar.append_data(
            &mut header(tar::EntryType::Regular, 0o755, tool.len() as u64),
            "bin/demo",
            &tool[..],
        )?;
        tar.append_link(
            &mut header(tar::EntryType::Link, 0o755, 0),
            "bin/demo-link",
            "bin/demo",
        )
    })?);
    for index in 0..options.layers {
        let size = options.layer_size;
        let mut chunk = vec![0u8; 1 << 20];
        layers.push(write_layer(&store, |tar| {
            let mut data_header = header(tar::EntryType::Regular, 0o644, size as u64);
            data_header.set_path(format!("data/layer-{index}.bin"))?;
            data_header.set_cksum();
            tar.append(
                &data_header,
                RandomReader {
                    remaining: size,
                    chunk: &mut chunk,
                    state: &mut state,
                    offset: usize::MAX,
                },
            )
        })?);
    }
    let diff_ids: Vec<String> = layers.iter().map(|(_, _, diff)| diff.to_string()).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": ferry::types::Platform::host().architecture,
        "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/demo"], "Labels": {"org.opencontainers.image.title": "ferry demo"}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": layers.iter().enumerate().map(|(i, _)| serde_json::json!({"created": "2026-01-01T00:00:00Z", "created_by": format!("seed_image layer {i}")})).collect::<Vec<_>>(),
    }))?;
    let config_digest = Digest::sha256_of(&config);
    std::fs::write(store.blob_path(&config_digest), &config)?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": layers.iter().map(|(digest, size, _)| serde_json::json!({"mediaType": media::OCI_LAYER_GZIP, "digest": digest, "size": size})).collect::<Vec<_>>(),
    }))?;
    let manifest_digest = Digest::sha256_of(&manifest);
    std::fs::write(store.blob_path(&manifest_digest), &manifest)?;
    store.set_tag(
        &name,
        IndexEntry::new(
            media::OCI_MANIFEST,
            manifest_digest.clone(),
            manifest.len() as u64,
        ),
    )?;
    println!("{name}@{manifest_digest}");
    Ok(())
}

/// Streams `remaining` random bytes.
struct RandomReader<'a> {
    remaining: usize,
    chunk: &'a mut Vec<u8>,
    state: &'a mut u64,
    offset: usize,
}

impl std::io::Read for RandomReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        if self.offset >= self.chunk.len() {
            fill_random(self.chunk, self.state);
            self.offset = 0;
        }
        let count = out
            .len()
            .min(self.remaining)
            .min(self.chunk.len() - self.offset);
        out[..count].copy_from_slice(&self.chunk[self.offset..self.offset + count]);
        self.offset += count;
        self.remaining -= count;
        Ok(count)
    }
}
