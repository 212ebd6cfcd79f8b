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
            "passwd",
            "top.txt"
        ]
    );
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
}
