//! Round trips with digests compared: skopeo pushes, ferry pulls and
//! pushes, skopeo reads ferry's store; multi-platform choices.

use crate::support::image::{self, Content, Entry};
use crate::support::registry::Registry;
use crate::support::{sha256, Ferry};

/// Two tags sharing a base layer, and a two-platform index.
pub struct Fixture {
    pub layout: tempfile::TempDir,
    pub app1: image::Image,
    pub app2: image::Image,
    pub multi: image::Index,
}

pub fn fixture() -> Fixture {
    let base = image::layer(&[
        Entry::Dir("etc"),
        Entry::File("etc/os-release", b"NAME=test\n".to_vec()),
        Entry::Symlink("etc/localtime", "/usr/share/zoneinfo/UTC"),
        Entry::File("bin/tool", image::random_bytes(200_000, 1)),
        Entry::Hardlink("bin/tool-link", "bin/tool"),
    ]);
    let app1 = image::image(
        vec![base.clone(), image::random_layer("app/one", 300_000, 2)],
        "amd64",
        "app1",
    );
    let app2 = image::image(
        vec![base.clone(), image::random_layer("app/two", 2_500_000, 3)],
        "amd64",
        "app2",
    );
    let amd64 = image::image(
        vec![base.clone(), image::random_layer("multi", 50_000, 4)],
        "amd64",
        "multi-amd64",
    );
    let arm64 = image::image(
        vec![image::random_layer("multi", 60_000, 5)],
        "arm64",
        "multi-arm64",
    );
    let multi = image::index(vec![("amd64".into(), amd64), ("arm64".into(), arm64)]);
    let layout = tempfile::tempdir().unwrap();
    image::write_layout(
        layout.path(),
        &[
            ("1.0", Content::Image(&app1)),
            ("2.0", Content::Image(&app2)),
            ("multi", Content::Index(&multi)),
        ],
    );
    Fixture {
        layout,
        app1,
        app2,
        multi,
    }
}

/// A registry seeded by skopeo with the fixture under `team/app`.
pub fn seeded() -> (Registry, Fixture) {
    let registry = Registry::start();
    let fixture = fixture();
    for tag in ["1.0", "2.0", "multi"] {
        registry.skopeo_push(fixture.layout.path(), tag, "team/app");
    }
    (registry, fixture)
}

#[test]
fn skopeo_push_ferry_pull_push_keeps_manifest_digest() {
    let (source, fixture) = seeded();
    let target = Registry::start();
    let ferry = Ferry::new();
    let image = format!("{}/team/app:1.0", source.host);
    let pulled = ferry.run(&["pull", &image]).ok();
    assert!(
        pulled
            .stdout
            .contains(&format!("Digest: {}", fixture.app1.digest())),
        "{}",
        pulled.stdout
    );
    let destination = format!("{}/mirror/app:1.0", target.host);
    ferry.run(&["push", &image, &destination]).ok();
    let raw = target.skopeo_raw("mirror/app:1.0");
    assert_eq!(sha256(&raw), fixture.app1.digest());
    assert_eq!(raw, fixture.app1.manifest);
}

#[test]
fn second_pull_shares_base_layer_and_reports_up_to_date() {
    let (source, fixture) = seeded();
    let ferry = Ferry::new();
    ferry
        .run(&["pull", &format!("{}/team/app:1.0", source.host)])
        .ok();
    let second = ferry
        .run(&["pull", &format!("{}/team/app:2.0", source.host)])
        .ok();
    // The base layer was already in the store: reported, not fetched again.
    assert!(
        second.stdout.contains("Downloaded newer image"),
        "{}",
        second.stdout
    );
    let base = &fixture.app1.layers[0].digest;
    source.clear_log();
    let again = ferry
        .run(&["pull", &format!("{}/team/app:2.0", source.host)])
        .ok();
    assert!(
        again.stdout.contains("Image is up to date"),
        "{}",
        again.stdout
    );
    assert_eq!(
        source.requests("GET", "/blobs/"),
        0,
        "an unchanged pull fetched blobs"
    );
    // 2 configs + 3 distinct layers + 2 manifests = 7 blobs, base stored once.
    assert_eq!(ferry.blob_files().len(), 7);
    assert!(ferry
        .store
        .join("blobs/sha256")
        .join(base.trim_start_matches("sha256:"))
        .exists());
}

#[test]
fn skopeo_reads_ferry_store_as_oci_layout() {
    let (source, fixture) = seeded();
    let ferry = Ferry::new();
    let image = format!("{}/team/app:1.0", source.host);
    ferry.run(&["pull", &image]).ok();
    let out = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new("skopeo");
    command
        .args(["copy", "-q"])
        .arg(format!("oci:{}:{image}", ferry.store.display()))
        .arg(format!("dir:{}", out.path().display()));
    crate::support::run_ok(&mut command);
    let manifest = std::fs::read(out.path().join("manifest.json")).unwrap();
    assert_eq!(sha256(&manifest), fixture.app1.digest());
}

#[test]
fn copy_keeps_index_digest_and_platform_subset_rebuilds_valid_index() {
    let (source, fixture) = seeded();
    let target = Registry::start();
    let ferry = Ferry::new();
    let from = format!("{}/team/app:multi", source.host);
    ferry
        .run(&["copy", &from, &format!("{}/copy/app:multi", target.host)])
        .ok();
    assert_eq!(
        sha256(&target.skopeo_raw("copy/app:multi")),
        fixture.multi.digest()
    );
    assert_eq!(
        sha256(&target.skopeo_raw(&format!("copy/app@{}", fixture.multi.images[1].1.digest()))),
        fixture.multi.images[1].1.digest()
    );

    ferry
        .run(&[
            "copy",
            "--platform",
            "linux/arm64",
            &from,
            &format!("{}/subset/app:arm", target.host),
        ])
        .ok();
    // One --platform means that platform's own manifest, the same digest
    // `pull --platform` stores (one meaning in every command).
    let arm64 = fixture.multi.images[1].1.digest();
    assert_eq!(sha256(&target.skopeo_raw("subset/app:arm")), arm64);
    let pulled = ferry
        .run(&["pull", "--platform", "linux/arm64", &from])
        .ok();
    assert!(pulled.stdout.contains(&arm64), "{}", pulled.stdout);
    // Several are a rebuilt, valid index of exactly those.
    ferry
        .run(&[
            "copy",
            "--platform",
            "linux/arm64",
            "--platform",
            "linux/amd64",
            &from,
            &format!("{}/both/app:both", target.host),
        ])
        .ok();
    let subset: serde_json::Value =
        serde_json::from_slice(&target.skopeo_raw("both/app:both")).unwrap();
    let manifests = subset["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2);
    assert!(manifests.iter().any(|m| m["digest"] == arm64), "{subset}");
    // The amd64 blobs were not copied into the subset repository.
    let amd64_layer = &fixture.multi.images[0].1.layers[1].digest;
    let check = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-I"])
        .arg(format!(
            "http://{}/v2/subset/app/blobs/{amd64_layer}",
            target.host
        ))
        .output();
    if let Ok(output) = check {
        assert_eq!(String::from_utf8_lossy(&output.stdout), "404");
    }
}

#[test]
fn pull_chooses_platforms() {
    let (source, fixture) = seeded();
    let ferry = Ferry::new();
    let image = format!("{}/team/app:multi", source.host);
    let arm = ferry
        .run(&["pull", "--platform", "linux/arm64", &image])
        .ok();
    assert!(
        arm.stdout.contains(&fixture.multi.images[1].1.digest()),
        "{}",
        arm.stdout
    );
    let all = ferry.run(&["pull", "--all-platforms", &image]).ok();
    assert!(
        all.stdout.contains(&fixture.multi.digest()),
        "{}",
        all.stdout
    );
    let missing = ferry
        .run(&["pull", "--platform", "linux/s390x", &image])
        .expect_code(1);
    assert!(
        missing.stderr.contains("linux/amd64, linux/arm64"),
        "{}",
        missing.stderr
    );
    // Every platform asked for must be there: one missing of two fails
    // (pull and copy), and nothing is stored or pushed.
    let fresh = Ferry::new();
    let two = ["--platform", "linux/s390x", "--platform", "linux/arm64"];
    let mut args = vec!["pull"];
    args.extend(two);
    args.push(&image);
    let refused = fresh.run(&args).expect_code(1);
    assert!(refused.stderr.contains("linux/s390x"), "{}", refused.stderr);
    assert!(!fresh.index_json().contains("multi"));
    let target = Registry::start();
    let to = format!("{}/copy/app:multi", target.host);
    let mut args = vec!["copy"];
    args.extend(two);
    args.extend([image.as_str(), to.as_str()]);
    let refused = fresh.run(&args).expect_code(1);
    assert!(refused.stderr.contains("linux/s390x"), "{}", refused.stderr);
    assert!(target.skopeo_raw_opt("copy/app:multi").is_none());
    // A single-platform image is not another platform asked for, as in
    // docker: pull, inspect, history and export refuse, naming what it is.
    let single = format!("{}/team/app:1.0", source.host);
    let refused = fresh
        .run(&["pull", "--platform", "linux/arm64", &single])
        .expect_code(1);
    assert!(
        refused.stderr.contains("only linux/amd64"),
        "{}",
        refused.stderr
    );
    fresh
        .run(&["pull", "--platform", "linux/amd64", &single])
        .ok();
    for command in ["inspect", "history", "export"] {
        let refused = fresh
            .run(&[command, "--platform", "linux/arm64", &single])
            .expect_code(1);
        assert!(
            refused.stderr.contains("only linux/amd64"),
            "{command}: {}",
            refused.stderr
        );
    }
    fresh
        .run(&["inspect", "--platform", "linux/amd64", &single])
        .ok();
}

#[test]
fn copy_all_tags_and_tags_listing() {
    let (source, _fixture) = seeded();
    let target = Registry::start();
    let ferry = Ferry::new();
    ferry
        .run(&[
            "copy",
            "--all-tags",
            &format!("{}/team/app", source.host),
            &format!("{}/all/app", target.host),
        ])
        .ok();
    let tags = ferry
        .run(&["tags", &format!("{}/all/app", target.host)])
        .ok();
    assert_eq!(
        tags.stdout.lines().collect::<Vec<_>>(),
        vec!["1.0", "2.0", "multi"]
    );
    // Inside one registry, blobs are mounted rather than uploaded again.
    let mounted = ferry
        .run(&[
            "copy",
            &format!("{}/all/app:2.0", target.host),
            &format!("{}/other/app:2.0", target.host),
        ])
        .ok();
    assert!(mounted.stdout.contains("3 mounted"), "{}", mounted.stdout);
}

#[test]
fn pull_all_tags_stores_every_tag() {
    let (source, fixture) = seeded();
    let ferry = Ferry::new();
    let run = ferry
        .run(&[
            "-q",
            "pull",
            "--all-tags",
            &format!("{}/team/app", source.host),
        ])
        .ok();
    assert_eq!(run.stdout.lines().count(), 3, "{}", run.stdout);
    let images: serde_json::Value =
        serde_json::from_str(&ferry.run(&["--json", "images"]).ok().stdout).unwrap();
    let digests: Vec<&str> = images
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["digest"].as_str().unwrap())
        .collect();
    assert!(
        digests.contains(&fixture.app1.digest().as_str())
            && digests.contains(&fixture.app2.digest().as_str())
    );
    let refused = ferry
        .run(&[
            "pull",
            "--all-tags",
            &format!("{}/team/app:1.0", source.host),
        ])
        .expect_code(2);
    assert!(refused.stderr.contains("without tag"), "{}", refused.stderr);
}
