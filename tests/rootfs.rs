//! `ferry import` (rootfs tar → one-layer image) and `ferry export`
//! (flattened filesystem with whiteouts applied and removed; links kept as
//! entries, never followed).

use crate::support::image::{self, Content, Entry};
use crate::support::{run_ok, sha256, Ferry};
use std::collections::BTreeMap;
use std::process::Command;

/// Entries of a tar as path → (kind, mode, content or link target).
pub fn tar_listing(bytes: &[u8]) -> BTreeMap<String, (char, u32, Vec<u8>)> {
    let mut archive = tar::Archive::new(bytes);
    let mut out = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_owned();
        if path.is_empty() {
            continue;
        }
        let header = entry.header().clone();
        let kind = match header.entry_type() {
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            _ => 'f',
        };
        let content = match kind {
            'l' | 'h' => entry.link_name_bytes().unwrap().into_owned(),
            _ => {
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
                data
            }
        };
        out.insert(path, (kind, header.mode().unwrap() & 0o7777, content));
    }
    out
}

/// An image whose upper layer deletes a file and makes a directory opaque.
pub fn whiteout_image() -> (tempfile::TempDir, image::Image) {
    let lower = image::layer(&[
        Entry::Dir("a"),
        Entry::File("a/x", b"x".to_vec()),
        Entry::File("a/y", b"y".to_vec()),
        Entry::Dir("b"),
        Entry::File("b/keep", b"keep".to_vec()),
        Entry::File("b/old", b"old".to_vec()),
        Entry::File("top.txt", b"old top".to_vec()),
        Entry::Hardlink("b/keep-link", "b/keep"),
        Entry::Symlink("passwd", "/etc/passwd"),
        // Parents only implied: no entries for opt, opt/tool, opt/tool/bin.
        Entry::File("opt/tool/bin/run", b"#!/bin/sh\n".to_vec()),
    ]);
    let upper = image::layer(&[
        Entry::Dir("a"),
        Entry::File("a/.wh..wh..opq", Vec::new()),
        Entry::File("a/new", b"new".to_vec()),
        Entry::File("b/.wh.old", Vec::new()),
        Entry::File("top.txt", b"new top".to_vec()),
    ]);
    let built = image::image(vec![lower, upper], "amd64", "whiteouts");
    let layout = tempfile::tempdir().unwrap();
    image::write_layout(layout.path(), &[("1", Content::Image(&built))]);
    (layout, built)
}

/// Load an OCI layout's tag into ferry via skopeo's oci-archive.
pub fn load_layout(ferry: &Ferry, layout: &std::path::Path, tag: &str, name: &str) {
    let archive = ferry.dir.path().join(format!("{tag}.oci.tar"));
    run_ok(
        Command::new("skopeo")
            .args(["copy", "-q"])
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("oci-archive:{}:{name}", archive.display())),
    );
    ferry.run(&["load", "-i", archive.to_str().unwrap()]).ok();
}

#[test]
fn export_applies_whiteouts_and_keeps_links() {
    let (layout, _image) = whiteout_image();
    let ferry = Ferry::new();
    load_layout(&ferry, layout.path(), "1", "example.com/whiteouts:1");
    let out = ferry.dir.path().join("fs.tar");
    ferry
        .run(&[
            "export",
            "example.com/whiteouts:1",
            "-o",
            out.to_str().unwrap(),
        ])
        .ok();
    let listing = tar_listing(&std::fs::read(&out).unwrap());
    let paths: Vec<&str> = listing.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        vec![
            "a",
            "a/new",
            "b",
            "b/keep",
            "b/keep-link",
            "opt",
            "opt/tool",
            "opt/tool/bin",
            "opt/tool/bin/run",
            "passwd",
            "top.txt"
        ]
    );
    // Every directory, implied or listed, is written with a trailing slash.
    let bytes = std::fs::read(&out).unwrap();
    let mut raw = tar::Archive::new(&bytes[..]);
    for entry in raw.entries().unwrap() {
        let entry = entry.unwrap();
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let directory = entry.header().entry_type() == tar::EntryType::Directory;
        assert_eq!(name.ends_with('/'), directory, "{name}");
    }
    assert_eq!(listing["opt/tool"], ('d', 0o600, Vec::new()));
    assert_eq!(listing["top.txt"].2, b"new top");
    assert_eq!(listing["passwd"], ('l', 0o777, b"/etc/passwd".to_vec()));
    assert_eq!(listing["b/keep-link"].0, 'h');
    assert_eq!(listing["a"].0, 'd');
    // GNU tar extracts it cleanly (links as links; the absolute symlink is not followed).
    let extract = tempfile::tempdir().unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(&out)
            .arg("-C")
            .arg(extract.path()),
    );
    assert!(extract
        .path()
        .join("passwd")
        .symlink_metadata()
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn import_makes_a_one_layer_image_with_changes() {
    let ferry = Ferry::new();
    let rootfs = ferry.dir.path().join("rootfs.tar");
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(6);
    header.set_mode(0o755);
    header.set_cksum();
    builder
        .append_data(&mut header, "bin/hello", &b"hello\n"[..])
        .unwrap();
    let tar_bytes = builder.into_inner().unwrap();
    std::fs::write(&rootfs, &tar_bytes).unwrap();
    let run = ferry
        .run(&[
            "import",
            rootfs.to_str().unwrap(),
            "local/imported:1",
            "--change",
            r#"CMD ["/bin/hello"]"#,
            "--change",
            "ENV GREETING=hi",
            "-c",
            "EXPOSE 8080",
        ])
        .ok();
    let id = run.stdout.trim().to_owned();
    let inspect: serde_json::Value =
        serde_json::from_str(&ferry.run(&["inspect", "local/imported:1"]).ok().stdout).unwrap();
    assert_eq!(inspect[0]["Id"], id);
    let config = &inspect[0]["Config"];
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["/bin/hello"]));
    assert_eq!(config["config"]["Env"], serde_json::json!(["GREETING=hi"]));
    assert!(config["config"]["ExposedPorts"]["8080/tcp"].is_object());
    assert_eq!(config["rootfs"]["diff_ids"][0], sha256(&tar_bytes));
    assert_eq!(
        inspect[0]["Manifest"]["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    ferry.run(&["verify", "--read-data"]).ok();
    // Export gives the same files back.
    let exported = ferry
        .command(&["export", "local/imported:1"])
        .output()
        .unwrap();
    assert_eq!(tar_listing(&exported.stdout)["bin/hello"].2, b"hello\n");
    let bad = ferry
        .run(&[
            "import",
            rootfs.to_str().unwrap(),
            "local/x:1",
            "--change",
            "RUN rm -rf /",
        ])
        .expect_code(2);
    assert!(bad.stderr.contains("not supported"), "{}", bad.stderr);
    // As docker import: input that is not a tar is refused, and nothing stays.
    let before = ferry.index_json();
    let blobs = ferry.blob_files().len();
    let mut cut = tar_bytes.clone();
    cut.truncate(700);
    let mut bad_checksum = tar_bytes.clone();
    bad_checksum[0] ^= 1;
    for (what, bytes) in [
        ("garbage", b"garbage\n".to_vec()),
        ("empty", Vec::new()),
        ("cut", cut),
        ("checksum", bad_checksum),
    ] {
        let path = ferry.dir.path().join(format!("{what}.tar"));
        std::fs::write(&path, bytes).unwrap();
        let refused = ferry
            .run(&["import", path.to_str().unwrap(), "local/bad:1"])
            .expect_code(1);
        assert!(
            refused.stderr.contains("not a tar archive"),
            "{what}: {}",
            refused.stderr
        );
    }
    assert_eq!(ferry.index_json(), before);
    assert_eq!(ferry.blob_files().len(), blobs);
    ferry.run(&["verify", "--read-data"]).ok();
}

/// A ferry-loadable archive whose image is an index nesting another index
/// that holds only arm64 and s390x images (no image for this host).
fn nested_index_archive(dir: &std::path::Path) -> (image::Image, std::path::PathBuf) {
    let arm = image::image(
        vec![image::layer(&[Entry::File("arm.txt", b"arm".to_vec())])],
        "arm64",
        "nested-arm64",
    );
    let s390x = image::image(
        vec![image::random_layer("s", 500, 9)],
        "s390x",
        "nested-s390x",
    );
    let inner = image::index(vec![("arm64".into(), arm.clone()), ("s390x".into(), s390x)]);
    let layout = dir.join("layout");
    image::write_layout(&layout, &[("inner", Content::Index(&inner))]);
    let outer = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": inner.digest(), "size": inner.bytes.len()}],
    }))
    .unwrap();
    std::fs::write(
        layout
            .join("blobs/sha256")
            .join(sha256(&outer).trim_start_matches("sha256:")),
        &outer,
    )
    .unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": sha256(&outer), "size": outer.len(),
        "annotations": {"io.containerd.image.name": "example.com/nested:1", "org.opencontainers.image.ref.name": "1"},
    }]});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let archive = dir.join("nested.tar");
    crate::support::tar_dir(&layout, &archive);
    (arm, archive)
}

#[test]
fn nested_index_without_the_host_platform_is_an_error_naming_its_platforms() {
    let work = tempfile::tempdir().unwrap();
    let (arm, archive) = nested_index_archive(work.path());
    let ferry = Ferry::new();
    ferry.run(&["load", "-i", archive.to_str().unwrap()]).ok();
    ferry.run(&["verify", "--read-data"]).ok();
    let name = "example.com/nested:1";
    let host_is_listed = cfg!(target_arch = "aarch64") || cfg!(target_arch = "s390x");
    if !host_is_listed {
        for args in [
            vec!["history", name],
            vec!["export", name, "-o", "x.tar"],
            vec!["inspect", name],
        ] {
            let run = ferry.run(&args).expect_code(1);
            assert!(
                run.stderr.contains("linux/arm64") && run.stderr.contains("linux/s390x"),
                "{args:?}: {}",
                run.stderr
            );
            assert!(run.stderr.contains("--platform"), "{}", run.stderr);
        }
        assert!(!ferry.dir.path().join("x.tar").exists());
    }
    // With --platform the image inside the nested index is found.
    let history = ferry
        .run(&["history", "--platform", "linux/arm64", "--no-trunc", name])
        .ok();
    assert!(
        history.stdout.contains(&arm.config_digest()),
        "{}",
        history.stdout
    );
    let exported = ferry
        .command(&["export", "--platform", "linux/arm64", name])
        .output()
        .unwrap();
    assert!(exported.status.success());
    let listing = tar_listing(&exported.stdout);
    assert_eq!(listing["arm.txt"].2, b"arm");
    let inspect: serde_json::Value = serde_json::from_str(
        &ferry
            .run(&["inspect", "--platform", "linux/arm64", name])
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(inspect[0]["Config"]["architecture"], "arm64");
    // An unknown platform is an error, not another architecture.
    let wrong = ferry
        .run(&["history", "--platform", "linux/riscv64", name])
        .expect_code(1);
    assert!(wrong.stderr.contains("linux/riscv64"), "{}", wrong.stderr);
}

#[test]
fn export_takes_the_last_of_a_name_long_implied_parents_and_refuses_sparse_files() {
    let ferry = Ferry::new();
    let mut builder = tar::Builder::new(Vec::new());
    let long = format!("{}/f", "d".repeat(120));
    for (path, data) in [
        ("a", &b"one"[..]),
        ("a", &b"two"[..]),
        (long.as_str(), &b"x"[..]),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, path, data).unwrap();
    }
    let rootfs = ferry.dir.path().join("rootfs.tar");
    std::fs::write(&rootfs, builder.into_inner().unwrap()).unwrap();
    ferry
        .run(&["import", rootfs.to_str().unwrap(), "local/odd:1"])
        .ok();
    let exported = ferry.command(&["export", "local/odd:1"]).output().unwrap();
    assert!(
        exported.status.success(),
        "{}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let listing = tar_listing(&exported.stdout);
    // As tar extracts and docker applies a layer: the later entry wins.
    assert_eq!(listing["a"].2, b"two");
    // A parent the layer only implies, with a name over 100 bytes.
    assert_eq!(listing[&"d".repeat(120)].0, 'd', "{listing:?}");
    assert_eq!(listing[&long].2, b"x");
    // A sparse file (GNU tar --sparse) is refused by name, not flattened wrong.
    let dir = ferry.dir.path().join("sparse");
    std::fs::create_dir(&dir).unwrap();
    let file = std::fs::File::create(dir.join("holes")).unwrap();
    file.set_len(1 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&file, b"data", 500_000).unwrap();
    let sparse = ferry.dir.path().join("sparse.tar");
    run_ok(
        Command::new("tar")
            .arg("--sparse")
            .arg("-cf")
            .arg(&sparse)
            .arg("-C")
            .arg(&dir)
            .arg("holes"),
    );
    ferry
        .run(&["import", sparse.to_str().unwrap(), "local/sparse:1"])
        .ok();
    let refused = ferry
        .run(&[
            "export",
            "local/sparse:1",
            "-o",
            ferry.dir.path().join("s.tar").to_str().unwrap(),
        ])
        .expect_code(1);
    assert!(
        refused.stderr.contains("sparse file (holes)"),
        "{}",
        refused.stderr
    );
    assert!(!ferry.dir.path().join("s.tar").exists());
}
