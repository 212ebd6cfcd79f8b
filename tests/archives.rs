//! Archives: `ferry save` output read by skopeo as both `oci-archive:` and
//! `docker-archive:`; archives written by skopeo (docker-archive and
//! oci-archive) loaded by ferry; digests surviving registry → save → load →
//! push; delta archives; and bad archives that must change nothing.

use crate::round_trip::{fixture, seeded};
use crate::support::image::{self, Entry};
use crate::support::{run_ok, sha256, Ferry};
use std::path::Path;
use std::process::Command;

fn skopeo(args: &[&str]) -> String {
    run_ok(Command::new("skopeo").args(args))
}

fn loaded_names(run: &crate::support::Run) -> Vec<String> {
    run.stdout
        .lines()
        .filter_map(|l| l.strip_prefix("Loaded image: "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn save_is_read_by_skopeo_as_oci_and_docker_archive() {
    let (registry, fixture) = seeded();
    let ferry = Ferry::new();
    let one = format!("{}/team/app:1.0", registry.host);
    let two = format!("{}/team/app:2.0", registry.host);
    ferry.run(&["pull", &one]).ok();
    ferry.run(&["pull", &two]).ok();
    let archive = ferry.dir.path().join("out.tar");
    ferry
        .run(&["save", "-o", archive.to_str().unwrap(), &one, &two])
        .ok();
    // The shared base layer is in the archive once.
    let listing = run_ok(Command::new("tar").arg("-tf").arg(&archive));
    let base = fixture.app1.layers[0].digest.trim_start_matches("sha256:");
    assert_eq!(
        listing.lines().filter(|l| l.contains(base)).count(),
        1,
        "{listing}"
    );
    assert!(
        listing.starts_with("oci-layout\nindex.json\nmanifest.json\nrepositories\n"),
        "{listing}"
    );
    // skopeo's OCI reader finds each image by its ref.name (the tag, as Docker 25+ writes) and keeps the digest.
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("oci-dir");
    skopeo(&[
        "copy",
        "-q",
        &format!("oci-archive:{}:1.0", archive.display()),
        &format!("dir:{}", dir.display()),
    ]);
    assert_eq!(
        sha256(&std::fs::read(dir.join("manifest.json")).unwrap()),
        fixture.app1.digest()
    );
    // skopeo's docker-archive reader takes manifest.json's second item.
    let docker = out.path().join("docker-dir");
    skopeo(&[
        "copy",
        "-q",
        &format!("docker-archive:{}:@1", archive.display()),
        &format!("dir:{}", docker.display()),
    ]);
    let config = sha256(
        &std::fs::read(docker.join(fixture.app2.config_digest().trim_start_matches("sha256:")))
            .unwrap(),
    );
    assert_eq!(config, fixture.app2.config_digest());
}

#[test]
fn registry_pull_save_load_push_keeps_manifest_digest() {
    let (source, fixture) = seeded();
    let target = crate::support::registry::Registry::start();
    let first = Ferry::new();
    let image = format!("{}/team/app:multi", source.host);
    first.run(&["pull", "--all-platforms", &image]).ok();
    let archive = first.dir.path().join("multi.tar");
    first
        .run(&["save", "-o", archive.to_str().unwrap(), &image])
        .ok();

    let second = Ferry::new();
    let loaded = second.run(&["load", "-i", archive.to_str().unwrap()]).ok();
    assert_eq!(loaded_names(&loaded), vec![format!("{image}")]);
    second.run(&["verify", "--read-data"]).ok();
    second
        .run(&[
            "push",
            &image,
            &format!("{}/restored/app:multi", target.host),
        ])
        .ok();
    assert_eq!(
        sha256(&target.skopeo_raw("restored/app:multi")),
        fixture.multi.digest()
    );
}

#[test]
fn save_to_stdout_pipes_into_load_and_compressed_archives_load() {
    let (registry, fixture) = seeded();
    let ferry = Ferry::new();
    let image = format!("{}/team/app:1.0", registry.host);
    ferry.run(&["pull", &image]).ok();
    for compress in ["none", "gzip", "zstd"] {
        let saved = ferry
            .command(&["save", "--compress", compress, &image])
            .output()
            .unwrap();
        assert!(
            saved.status.success(),
            "{}",
            String::from_utf8_lossy(&saved.stderr)
        );
        let other = Ferry::new();
        let output = other.run_with_stdin(&["load"], &saved.stdout);
        assert_eq!(output.code, 0, "{compress}: {}", output.stderr);
        assert!(output.stdout.contains(&format!("Loaded image: {image}")));
        let inspect: serde_json::Value =
            serde_json::from_str(&other.run(&["inspect", &image]).ok().stdout).unwrap();
        assert_eq!(inspect[0]["Digest"], fixture.app1.digest());
    }
}

#[test]
fn an_archive_cut_short_by_a_closed_pipe_fails_and_a_listing_does_not() {
    let ferry = Ferry::new();
    // An image far larger than a pipe's buffer.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("big.bin"),
        crate::support::image::random_bytes(4 << 20, 77),
    )
    .unwrap();
    let rootfs = dir.path().join("rootfs.tar");
    crate::support::tar_dir(dir.path(), &rootfs);
    ferry
        .run(&["import", rootfs.to_str().unwrap(), "local/big:1"])
        .ok();
    let registry = crate::support::registry::Registry::start();
    let remote = format!("{}/team/big:1", registry.host);
    ferry.run(&["push", "local/big:1", &remote]).ok();
    for args in [
        vec!["save", "local/big:1"],
        vec!["export", "local/big:1"],
        vec!["copy", remote.as_str(), "archive:-"],
    ] {
        let mut child = ferry
            .command(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut head = [0u8; 100];
        use std::io::Read;
        child
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut head)
            .unwrap();
        drop(child.stdout.take()); // `| head -c 100`
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("cut short"), "{args:?}: {stderr}");
    }
    // A listing whose reader stops early is not an error.
    let mut child = ferry
        .command(&["images"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    assert!(child.wait().unwrap().success());
}

#[test]
fn looking_at_an_archive_creates_no_store_and_save_makes_no_directories() {
    let (registry, _fixture) = seeded();
    let ferry = Ferry::new();
    let image = format!("{}/team/app:1.0", registry.host);
    ferry.run(&["pull", &image]).ok();
    let archive = ferry.dir.path().join("app.tar");
    ferry
        .run(&["save", "-o", archive.to_str().unwrap(), &image])
        .ok();
    // `verify FILE` beside no store checks the archive and makes no store.
    let stranger = Ferry::new();
    let checked = stranger.run(&["verify", archive.to_str().unwrap()]).ok();
    assert!(
        checked.stdout.contains("1 image verified"),
        "{}",
        checked.stdout
    );
    assert!(!stranger.store.exists(), "verify created a store");
    // `save -o` into a directory that does not exist fails, like docker.
    let missing = ferry.dir.path().join("no/such/dir/app.tar");
    let refused = ferry
        .run(&["save", "-o", missing.to_str().unwrap(), &image])
        .expect_code(1);
    assert!(
        refused.stderr.contains("does not exist"),
        "{}",
        refused.stderr
    );
    assert!(!ferry.dir.path().join("no").exists());
}

#[test]
fn loads_skopeo_docker_archive_and_oci_archive() {
    let fixture = fixture();
    let work = tempfile::tempdir().unwrap();
    let docker_archive = work.path().join("docker.tar");
    let oci_archive = work.path().join("oci.tar");
    let layout = fixture.layout.path().display().to_string();
    skopeo(&[
        "copy",
        "-q",
        &format!("oci:{layout}:2.0"),
        &format!(
            "docker-archive:{}:example.com/team/app:2.0",
            docker_archive.display()
        ),
    ]);
    skopeo(&[
        "copy",
        "-q",
        &format!("oci:{layout}:1.0"),
        &format!(
            "oci-archive:{}:example.com/team/app:1.0",
            oci_archive.display()
        ),
    ]);
    let ferry = Ferry::new();
    let loaded = ferry
        .run(&["load", "-i", docker_archive.to_str().unwrap()])
        .ok();
    assert_eq!(loaded_names(&loaded), vec!["example.com/team/app:2.0"]);
    let inspect: serde_json::Value = serde_json::from_str(
        &ferry
            .run(&["inspect", "example.com/team/app:2.0"])
            .ok()
            .stdout,
    )
    .unwrap();
    // docker-archive keeps the config (the image ID) but not the manifest.
    assert_eq!(inspect[0]["Id"], fixture.app2.config_digest());
    let loaded = ferry
        .run(&["load", "-i", oci_archive.to_str().unwrap()])
        .ok();
    assert_eq!(loaded_names(&loaded), vec!["example.com/team/app:1.0"]);
    let inspect: serde_json::Value = serde_json::from_str(
        &ferry
            .run(&["inspect", "example.com/team/app:1.0"])
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(inspect[0]["Digest"], fixture.app1.digest());
    ferry.run(&["verify", "--read-data"]).ok();
}

#[test]
fn delta_archive_needs_the_older_blobs() {
    let (registry, fixture) = seeded();
    let ferry = Ferry::new();
    let one = format!("{}/team/app:1.0", registry.host);
    let two = format!("{}/team/app:2.0", registry.host);
    ferry.run(&["pull", &one]).ok();
    ferry.run(&["pull", &two]).ok();
    let full = ferry.dir.path().join("full.tar");
    let delta = ferry.dir.path().join("delta.tar");
    ferry
        .run(&["save", "-o", full.to_str().unwrap(), &one])
        .ok();
    ferry
        .run(&[
            "save",
            "--since",
            full.to_str().unwrap(),
            "-o",
            delta.to_str().unwrap(),
            &two,
        ])
        .ok();
    // --list counts what this image shares with the older archive: only
    // the base layer, not every blob the older archive holds.
    let listed = ferry
        .run(&["save", "--list", "--since", full.to_str().unwrap(), &two])
        .ok();
    assert!(
        listed.stdout.contains("(1 left out as already there)"),
        "{}",
        listed.stdout
    );
    let listing = run_ok(Command::new("tar").arg("-tf").arg(&delta));
    let base = fixture.app1.layers[0].digest.trim_start_matches("sha256:");
    assert!(
        !listing.contains(base),
        "the shared base layer should be left out"
    );
    // Into an empty store: a clear error naming the missing blob, nothing added.
    let empty = Ferry::new();
    let refused = empty
        .run(&["load", "-i", delta.to_str().unwrap()])
        .expect_code(1);
    assert!(
        refused.stderr.contains(&fixture.app1.layers[0].digest),
        "{}",
        refused.stderr
    );
    assert!(empty.blob_files().is_empty());
    // Onto a store whose copy of the left-out layer is corrupt: refused,
    // naming it, never loaded on top of the bad copy.
    let rotten = Ferry::new();
    rotten.run(&["load", "-i", full.to_str().unwrap()]).ok();
    let layer = rotten.store.join("blobs/sha256").join(base);
    let mut bytes = std::fs::read(&layer).unwrap();
    bytes[10] ^= 1;
    let mut permissions = std::fs::metadata(&layer).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    permissions.set_readonly(false);
    std::fs::set_permissions(&layer, permissions).unwrap();
    std::fs::write(&layer, &bytes).unwrap();
    let refused = rotten
        .run(&["load", "-i", delta.to_str().unwrap()])
        .expect_code(1);
    assert!(refused.stderr.contains(base), "{}", refused.stderr);
    assert!(!rotten.index_json().contains("team/app:2.0"));
    // After the full archive, the delta loads.
    empty.run(&["load", "-i", full.to_str().unwrap()]).ok();
    empty.run(&["load", "-i", delta.to_str().unwrap()]).ok();
    empty.run(&["verify", "--read-data"]).ok();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&empty.run(&["--json", "images"]).ok().stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

/// Write a tar of raw entries (name, bytes) without any name checks.
fn raw_tar(path: &Path, entries: &[(&str, &[u8])]) {
    let mut out = Vec::new();
    for (name, data) in entries {
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        header[100..108].copy_from_slice(b"0000644\0");
        header[108..116].copy_from_slice(b"0000000\0");
        header[116..124].copy_from_slice(b"0000000\0");
        header[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        header[136..148].copy_from_slice(b"00000000000\0");
        header[156] = b'0';
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    std::fs::write(path, out).unwrap();
}

/// A bad-archive case: label, raw entries, expected words in the error.
type Case<'a> = (&'a str, Vec<(&'a str, &'a [u8])>, &'a str);

#[test]
fn bad_archives_change_nothing() {
    let ferry = Ferry::new();
    ferry.init_store();
    let before = ferry.index_json();
    let dir = ferry.dir.path();
    let layer = image::layer(&[Entry::File("a", b"hello".to_vec())]);
    let good = image::image(vec![layer.clone()], "amd64", "bad");
    let manifest_json = format!(
        r#"[{{"Config":"config.json","RepoTags":["evil/app:1"],"Layers":["{}.tar.gz"]}}]"#,
        layer.digest.trim_start_matches("sha256:")
    );
    let layer_name = format!("{}.tar.gz", layer.digest.trim_start_matches("sha256:"));
    let mut corrupt_layer = layer.gzip.clone();
    let last = corrupt_layer.len() - 12;
    corrupt_layer[last] ^= 0xff;
    let wrong_blob_name = format!("blobs/sha256/{}", "a".repeat(64));
    let two_layers = format!(
        r#"[{{"Config":"config.json","RepoTags":["evil/app:1"],"Layers":["{layer_name}","{layer_name}"]}}]"#
    );
    let huge_manifest = vec![b' '; 17 << 20];
    let cases: Vec<Case> = vec![
        (
            "huge manifest.json",
            vec![("manifest.json", &huge_manifest)],
            "over the",
        ),
        (
            "count mismatch",
            vec![
                ("manifest.json", two_layers.as_bytes()),
                ("config.json", &good.config),
                (&layer_name, &layer.gzip),
            ],
            "2 layers but its config lists 1",
        ),
        ("dotdot", vec![("../escape", b"x")], ".."),
        (
            "control characters",
            vec![("evil\u{1b}[31m", b"x")],
            "control characters",
        ),
        ("absolute", vec![("/etc/passwd", b"x")], "absolute"),
        ("traversal", vec![("blobs/sha256/../../x", b"x")], ".."),
        (
            "duplicate",
            vec![("./manifest.json", b"[]"), ("manifest.json", b"[]")],
            "twice",
        ),
        (
            "wrong digest name",
            vec![(&wrong_blob_name, b"not that")],
            "does not match its name",
        ),
        (
            "not an image",
            vec![("hello.txt", b"hi")],
            "not an image archive",
        ),
        (
            "corrupt layer",
            vec![
                ("manifest.json", manifest_json.as_bytes()),
                ("config.json", &good.config),
                (&layer_name, &corrupt_layer),
            ],
            "layer 1",
        ),
    ];
    // `copy archive:` refuses the same archives (read in place, no store),
    // and the registry gets no tag.
    let target = crate::support::registry::Registry::start();
    let refused_by_copy = |path: &Path, expected: &str| {
        let run = ferry.run(&["copy", &format!("archive:{}", path.display()), &target.host]);
        assert_eq!(run.code, 1, "copy {}: {}", path.display(), run.stderr);
        assert!(
            run.stderr.contains(expected),
            "copy {}: {}",
            path.display(),
            run.stderr
        );
    };
    for (label, entries, expected) in cases {
        let path = dir.join(format!("{}.tar", label.replace(' ', "-")));
        raw_tar(&path, &entries);
        let run = ferry
            .run(&["load", "-i", path.to_str().unwrap()])
            .expect_code(1);
        assert!(run.stderr.contains(expected), "{label}: {}", run.stderr);
        assert!(
            !run.stderr.contains('\u{1b}'),
            "{label}: a control character reached stderr: {:?}",
            run.stderr
        );
        // Read in place, a blob's name is checked when an image uses it;
        // this archive has no image, and is refused for that.
        let expected_by_copy = match label {
            "wrong digest name" => "is not an image archive",
            _ => expected,
        };
        refused_by_copy(&path, expected_by_copy);
        assert_eq!(ferry.index_json(), before, "{label} changed the index");
        assert!(ferry.blob_files().is_empty(), "{label} added blobs");
        assert!(
            crate::support::list_files(&ferry.store.join("ingest")).is_empty(),
            "{label} left temp files"
        );
    }
    assert!(
        !dir.join("escape").exists() && !ferry.dir.path().parent().unwrap().join("escape").exists()
    );
    // A symlinked manifest.json that points outside the archive.
    let link = dir.join("link.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&link).unwrap());
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    builder
        .append_link(&mut header, "manifest.json", "../../etc/shadow")
        .unwrap();
    builder.finish().unwrap();
    drop(builder);
    let run = ferry
        .run(&["load", "-i", link.to_str().unwrap()])
        .expect_code(1);
    assert!(run.stderr.contains("links outside"), "{}", run.stderr);
    refused_by_copy(&link, "links outside");
    // A truncated archive.
    let (registry, _) = seeded();
    let source = Ferry::new();
    let image = format!("{}/team/app:2.0", registry.host);
    source.run(&["pull", &image]).ok();
    let full = source.dir.path().join("full.tar");
    source
        .run(&["save", "-o", full.to_str().unwrap(), &image])
        .ok();
    let bytes = std::fs::read(&full).unwrap();
    let truncated = dir.join("truncated.tar");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let run = ferry
        .run(&["load", "-i", truncated.to_str().unwrap()])
        .expect_code(1);
    assert!(
        run.stderr.contains("truncated") || run.stderr.contains("not in the archive"),
        "{}",
        run.stderr
    );
    assert!(ferry.blob_files().is_empty());
    let copied = ferry.run(&[
        "copy",
        &format!("archive:{}", truncated.display()),
        &target.host,
    ]);
    assert_eq!(copied.code, 1, "{}", copied.stderr);
    assert!(
        target.skopeo_raw_opt("team/app:2.0").is_none()
            && target.skopeo_raw_opt("evil/app:1").is_none(),
        "a refused archive left a tag"
    );
    // A gzip bomb: a small compressed archive that expands far beyond 200×.
    let bomb = dir.join("bomb.tar.gz");
    {
        // gzip members concatenate: one member for the tar header, then the
        // same 1 MiB-of-zeros member 768 times (about 1 KiB each).
        use std::io::Write;
        let gzip = |bytes: &[u8]| {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            encoder.write_all(bytes).unwrap();
            encoder.finish().unwrap()
        };
        let mut header = tar::Header::new_ustar();
        header.set_path("zeros").unwrap();
        header.set_size(768 << 20);
        header.set_mode(0o644);
        header.set_cksum();
        let mut file = std::fs::File::create(&bomb).unwrap();
        file.write_all(&gzip(header.as_bytes())).unwrap();
        let zeros = gzip(&vec![0u8; 1 << 20]);
        for _ in 0..768 {
            file.write_all(&zeros).unwrap();
        }
    }
    let run = ferry
        .run(&["load", "-i", bomb.to_str().unwrap()])
        .expect_code(1);
    assert!(run.stderr.contains("bomb"), "{}", run.stderr);
    assert!(ferry.blob_files().is_empty());
    assert!(crate::support::list_files(&ferry.store.join("ingest")).is_empty());
    assert_eq!(ferry.index_json(), before);
}

#[test]
fn load_dry_run_and_verify_file_list_without_adding() {
    let (registry, fixture) = seeded();
    let ferry = Ferry::new();
    let image = format!("{}/team/app:multi", registry.host);
    ferry.run(&["pull", "--all-platforms", &image]).ok();
    let archive = ferry.dir.path().join("multi.tar");
    ferry
        .run(&["save", "-o", archive.to_str().unwrap(), &image])
        .ok();
    let other = Ferry::new();
    let listed = other
        .run(&["load", "--dry-run", "-i", archive.to_str().unwrap()])
        .ok();
    assert!(
        listed.stdout.contains(&fixture.multi.digest()) && listed.stdout.contains("linux/arm64"),
        "{}",
        listed.stdout
    );
    let verified = other.run(&["verify", archive.to_str().unwrap()]).ok();
    assert!(
        verified.stdout.contains("1 image verified"),
        "{}",
        verified.stdout
    );
    assert!(other.blob_files().is_empty());
    // The size it lists is the one `images` shows once loaded (manifests
    // and blobs, each once).
    let images = ferry.run(&["images", "--json"]).ok();
    let images: serde_json::Value = serde_json::from_str(&images.stdout).unwrap();
    let size = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["digest"] == fixture.multi.digest())
        .map(|i| i["size"].as_u64().unwrap())
        .unwrap();
    let listed = other
        .run(&[
            "load",
            "--dry-run",
            "--json",
            "-i",
            archive.to_str().unwrap(),
        ])
        .ok();
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(listed[0]["size"].as_u64(), Some(size), "{listed}");
}

/// Build a tar from (name, bytes) entries with the tar crate.
fn tar_of(path: &Path, entries: &[(String, Vec<u8>)]) {
    let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, name, bytes.as_slice())
            .unwrap();
    }
    builder.finish().unwrap();
}

#[test]
fn loads_docker_25_and_crane_layouts() {
    // Docker 25+: uncompressed layers under blobs/ with an OCI manifest,
    // index.json naming the image, manifest.json with a short RepoTag.
    let tar_layer = {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_size(3);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "hi", &b"hi\n"[..])
            .unwrap();
        builder.into_inner().unwrap()
    };
    let diff_id = sha256(&tar_layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": diff_id, "size": tar_layer.len()}],
    }))
    .unwrap();
    let hex = |d: &str| d.trim_start_matches("sha256:").to_owned();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(&manifest), "size": manifest.len(),
        "annotations": {"io.containerd.image.name": "docker.io/library/busybox:latest", "org.opencontainers.image.ref.name": "latest"},
    }]});
    let docker_manifest = serde_json::json!([{
        "Config": format!("blobs/sha256/{}", hex(&sha256(&config))), "RepoTags": ["busybox:latest"],
        "Layers": [format!("blobs/sha256/{}", hex(&diff_id))],
    }]);
    let work = tempfile::tempdir().unwrap();
    let docker25 = work.path().join("docker25.tar");
    tar_of(
        &docker25,
        &[
            (
                "blobs/sha256/".to_owned() + &hex(&sha256(&config)),
                config.clone(),
            ),
            (
                "blobs/sha256/".to_owned() + &hex(&diff_id),
                tar_layer.clone(),
            ),
            (
                "blobs/sha256/".to_owned() + &hex(&sha256(&manifest)),
                manifest.clone(),
            ),
            ("index.json".to_owned(), serde_json::to_vec(&index).unwrap()),
            (
                "manifest.json".to_owned(),
                serde_json::to_vec(&docker_manifest).unwrap(),
            ),
            (
                "oci-layout".to_owned(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
        ],
    );
    let ferry = Ferry::new();
    let run = ferry.run(&["load", "-i", docker25.to_str().unwrap()]).ok();
    // docker prints the familiar name.
    assert_eq!(loaded_names(&run), vec!["busybox:latest"]);
    let inspect: serde_json::Value =
        serde_json::from_str(&ferry.run(&["inspect", "busybox"]).ok().stdout).unwrap();
    assert_eq!(
        inspect[0]["Digest"],
        sha256(&manifest),
        "the manifest digest survives"
    );

    // crane: config named sha256:<hex>, gzip layers named <hex>.tar.gz.
    let layer = image::layer(&[Entry::File("a", b"crane".to_vec())]);
    let crane_config = serde_json::to_vec(&serde_json::json!({
        "architecture": "arm64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
    }))
    .unwrap();
    let crane_manifest = serde_json::json!([{
        "Config": sha256(&crane_config), "RepoTags": ["example.com/crane/app:v1"],
        "Layers": [format!("{}.tar.gz", hex(&layer.digest))],
    }]);
    let crane = work.path().join("crane.tar");
    tar_of(
        &crane,
        &[
            (
                "manifest.json".to_owned(),
                serde_json::to_vec(&crane_manifest).unwrap(),
            ),
            (sha256(&crane_config), crane_config.clone()),
            (format!("{}.tar.gz", hex(&layer.digest)), layer.gzip.clone()),
        ],
    );
    let run = ferry.run(&["load", "-i", crane.to_str().unwrap()]).ok();
    assert_eq!(loaded_names(&run), vec!["example.com/crane/app:v1"]);
    let inspect: serde_json::Value = serde_json::from_str(
        &ferry
            .run(&["inspect", "example.com/crane/app:v1"])
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(inspect[0]["Id"], sha256(&crane_config));
    assert_eq!(inspect[0]["Manifest"]["layers"][0]["digest"], layer.digest);
    ferry.run(&["verify", "--read-data"]).ok();

    // copy archive: of both gives the manifest load + push gives.
    let target = crate::support::registry::Registry::start();
    for (archive, name, repository) in [
        (&docker25, "busybox", "library/busybox:latest"),
        (&crane, "example.com/crane/app:v1", "crane/app:v1"),
    ] {
        ferry
            .run(&[
                "push",
                name,
                &format!("{}/pushed/{repository}", target.host),
            ])
            .ok();
        Ferry::new()
            .run(&[
                "copy",
                &format!("archive:{}", archive.display()),
                &format!("{}/copied", target.host),
            ])
            .ok();
        assert_eq!(
            target.skopeo_raw(&format!("copied/{repository}")),
            target.skopeo_raw(&format!("pushed/{repository}")),
            "{}",
            archive.display()
        );
    }
}

#[test]
fn pax_size_mismatches_and_zstd_bombs_are_refused() {
    let ferry = Ferry::new();
    ferry.init_store();
    let before = ferry.index_json();
    let dir = ferry.dir.path();
    // A PAX header claiming 2048 bytes before a ustar header saying 16.
    let pax = dir.join("pax.tar");
    {
        let mut builder = tar::Builder::new(std::fs::File::create(&pax).unwrap());
        let record = "13 size=2048\n";
        let mut pax_header = tar::Header::new_ustar();
        pax_header.set_path("PaxHeaders/layer").unwrap();
        pax_header.set_entry_type(tar::EntryType::XHeader);
        pax_header.set_size(record.len() as u64);
        pax_header.set_cksum();
        builder.append(&pax_header, record.as_bytes()).unwrap();
        let mut header = tar::Header::new_ustar();
        header.set_path("layer.tar").unwrap();
        header.set_size(16);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append(&header, &[0u8; 2048][..]).unwrap();
        builder.finish().unwrap();
    }
    let run = ferry
        .run(&["load", "-i", pax.to_str().unwrap()])
        .expect_code(1);
    assert!(run.stderr.contains("disagree"), "{}", run.stderr);
    // A zstd bomb: 768 MiB of zeros in a few KiB.
    let bomb = dir.join("bomb.tar.zst");
    {
        use std::io::Write;
        let mut encoder =
            zstd::stream::write::Encoder::new(std::fs::File::create(&bomb).unwrap(), 19).unwrap();
        let mut header = tar::Header::new_ustar();
        header.set_path("zeros").unwrap();
        header.set_size(768 << 20);
        header.set_mode(0o644);
        header.set_cksum();
        encoder.write_all(header.as_bytes()).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..768 {
            encoder.write_all(&zeros).unwrap();
        }
        encoder.finish().unwrap();
    }
    assert!(std::fs::metadata(&bomb).unwrap().len() < 1 << 20);
    let run = ferry
        .run(&["load", "-i", bomb.to_str().unwrap()])
        .expect_code(1);
    assert!(run.stderr.contains("bomb"), "{}", run.stderr);
    assert!(ferry.blob_files().is_empty());
    assert!(crate::support::list_files(&ferry.store.join("ingest")).is_empty());
    assert_eq!(ferry.index_json(), before);
}
