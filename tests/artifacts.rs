//! OCI artifacts that are not container images (a Helm chart; an index
//! whose entries name no platform) travel with their digests: load, save,
//! push, pull, copy archive:. Commands that need a container image refuse
//! them by name.

use crate::support::image::{self, Content};
use crate::support::registry::Registry;
use crate::support::{run_ok, sha256, Ferry};
use std::process::Command;

const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";

/// A Helm chart manifest and an index over it without platforms, written
/// as an OCI-layout tar naming both. Returns (chart digest, index digest, tar).
fn helm_archive(dir: &std::path::Path) -> (String, String, std::path::PathBuf) {
    let layout = dir.join("layout");
    // Reuse the image writer for the layout's directories, then add ours.
    let filler = image::image(vec![image::random_layer("f", 10, 1)], "amd64", "filler");
    image::write_layout(&layout, &[("filler", Content::Image(&filler))]);
    let blob = |bytes: &[u8]| {
        let digest = sha256(bytes);
        std::fs::write(
            layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
            bytes,
        )
        .unwrap();
        digest
    };
    let config = br#"{"name":"demo","version":"1.0.0","apiVersion":"v2"}"#;
    let chart = image::random_bytes(4_000, 5);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": HELM_CONFIG, "digest": blob(config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "digest": blob(&chart), "size": chart.len()}],
    }))
    .unwrap();
    let chart_digest = blob(&manifest);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": chart_digest, "size": manifest.len(), "artifactType": HELM_CONFIG}],
    }))
    .unwrap();
    let index_digest = blob(&index);
    let entry = |media: &str, digest: &str, size: usize, name: &str, tag: &str| {
        serde_json::json!({"mediaType": media, "digest": digest, "size": size,
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag}})
    };
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [
        entry("application/vnd.oci.image.manifest.v1+json", &chart_digest, manifest.len(), "example.com/charts/demo:1.0.0", "1.0.0"),
        entry("application/vnd.oci.image.index.v1+json", &index_digest, index.len(), "example.com/charts/demo:bundle", "bundle"),
    ]});
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    let archive = dir.join("helm.tar");
    crate::support::tar_dir(&layout, &archive);
    (chart_digest, index_digest, archive)
}

#[test]
fn helm_charts_and_platformless_indexes_travel_with_their_digests() {
    let work = tempfile::tempdir().unwrap();
    let (chart, index, archive) = helm_archive(work.path());
    let ferry = Ferry::new();
    ferry.run(&["load", "-i", archive.to_str().unwrap()]).ok();
    ferry.run(&["verify", "--read-data"]).ok();
    // `images` says what each is.
    let images: serde_json::Value =
        serde_json::from_str(&ferry.run(&["--json", "images"]).ok().stdout).unwrap();
    let kind = |tag: &str| {
        images
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"].as_str().is_some_and(|n| n.ends_with(tag)))
            .map(|i| i["kind"].as_str().unwrap().to_owned())
    };
    assert_eq!(kind("demo:1.0.0").as_deref(), Some("helm chart"));
    assert_eq!(kind("demo:bundle").as_deref(), Some("index"));
    let table = ferry.run(&["images"]).ok().stdout;
    assert!(table.contains("helm chart"), "{table}");
    // Commands that need a container image say what this is instead.
    for args in [
        ["history", "example.com/charts/demo:1.0.0"],
        ["export", "example.com/charts/demo:1.0.0"],
    ] {
        let run = ferry.run(&args).expect_code(1);
        assert!(
            run.stderr.contains("OCI artifact"),
            "{args:?}: {}",
            run.stderr
        );
    }
    // save → load into an empty store keeps both digests; manifest.json
    // lists container images only, so it lists neither.
    let saved = ferry.dir.path().join("saved.tar");
    ferry
        .run(&[
            "save",
            "-o",
            saved.to_str().unwrap(),
            "example.com/charts/demo:1.0.0",
            "example.com/charts/demo:bundle",
        ])
        .ok();
    let listing = run_ok(
        Command::new("tar")
            .arg("-xOf")
            .arg(&saved)
            .arg("manifest.json"),
    );
    assert_eq!(listing.trim(), "[]");
    let other = Ferry::new();
    other.run(&["load", "-i", saved.to_str().unwrap()]).ok();
    let inspect: serde_json::Value = serde_json::from_str(
        &other
            .run(&["inspect", "example.com/charts/demo:bundle"])
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(inspect[0]["Digest"], index);
    // push, then pull the platformless index back whole (no platform to choose).
    let registry = Registry::start();
    other
        .run(&[
            "push",
            "example.com/charts/demo:1.0.0",
            &format!("{}/charts/demo:1.0.0", registry.host),
        ])
        .ok();
    other
        .run(&[
            "push",
            "example.com/charts/demo:bundle",
            &format!("{}/charts/demo:bundle", registry.host),
        ])
        .ok();
    assert_eq!(sha256(&registry.skopeo_raw("charts/demo:1.0.0")), chart);
    let pulled = Ferry::new();
    let run = pulled
        .run(&["pull", &format!("{}/charts/demo:bundle", registry.host)])
        .ok();
    assert!(run.stdout.contains(&index), "{}", run.stdout);
    // copy archive: straight to a registry keeps them too.
    let target = Registry::start();
    Ferry::new()
        .run(&[
            "copy",
            &format!("archive:{}", archive.display()),
            &target.host,
        ])
        .ok();
    assert_eq!(sha256(&target.skopeo_raw("charts/demo:bundle")), index);
}

/// An image, a signature of it whose config is `{}` under the OCI image
/// config type (as several signers write), and an artifact whose config is
/// tar-typed, in one OCI-layout tar. Returns (image, signature, artifact
/// manifest digests, tar).
fn signed_archive(dir: &std::path::Path) -> (String, String, String, std::path::PathBuf) {
    let layout = dir.join("layout");
    let app = image::image(vec![image::random_layer("a", 2_000, 71)], "amd64", "app");
    image::write_layout(&layout, &[("app", Content::Image(&app))]);
    let blob = |bytes: &[u8]| {
        let digest = sha256(bytes);
        let path = layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        std::fs::write(path, bytes).unwrap();
        digest
    };
    let manifest = |config_type: &str, config: &[u8], layer_type: &str, layer: &[u8]| {
        let bytes = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": config_type, "digest": blob(config), "size": config.len()},
            "layers": [{"mediaType": layer_type, "digest": blob(layer), "size": layer.len()}],
        }))
        .unwrap();
        (blob(&bytes), bytes.len())
    };
    let payload = format!(
        r#"{{"critical":{{"image":{{"docker-manifest-digest":"{}"}},"type":"cosign container image signature"}}}}"#,
        app.digest()
    );
    let (signature, signature_size) = manifest(
        "application/vnd.oci.image.config.v1+json",
        b"{}",
        "application/vnd.dev.cosign.simplesigning.v1+json",
        payload.as_bytes(),
    );
    let (artifact, artifact_size) = manifest(
        "application/vnd.oci.image.layer.v1.tar",
        &image::random_bytes(512, 72),
        "application/octet-stream",
        b"payload",
    );
    let entry = |digest: &str, size: usize, name: &str| {
        serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size,
            "annotations": {"io.containerd.image.name": name}})
    };
    let sig_tag = format!(
        "example.com/team/app:{}.sig",
        app.digest().replace(':', "-")
    );
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [
        entry(&app.digest(), app.manifest.len(), "example.com/team/app:1"),
        entry(&signature, signature_size, &sig_tag),
        entry(&artifact, artifact_size, "example.com/team/blob:1"),
    ]});
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    let archive = dir.join("signed.tar");
    crate::support::tar_dir(&layout, &archive);
    (app.digest(), signature, artifact, archive)
}

#[test]
fn a_signature_with_an_empty_config_and_a_tar_typed_config_load_back() {
    let work = tempfile::tempdir().unwrap();
    let (app, signature, artifact, archive) = signed_archive(work.path());
    let has = |ferry: &Ferry, digest: &str| {
        ferry
            .store
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
            .is_file()
    };
    // diffIDs are demanded of container images only: both load.
    let ferry = Ferry::new();
    let run = ferry.run(&["load", "-i", archive.to_str().unwrap()]).ok();
    assert!(
        run.stdout.contains("example.com/team/app:1"),
        "{}",
        run.stdout
    );
    ferry.run(&["verify", "--read-data"]).ok();
    for digest in [&app, &signature, &artifact] {
        assert!(has(&ferry, digest), "{digest} loaded");
    }
    // The signature is no filesystem: export refuses it by name.
    let run = ferry
        .run(&["export", &format!("example.com/team/app@{signature}")])
        .expect_code(1);
    assert!(run.stderr.contains("OCI artifact"), "{}", run.stderr);
    // What ferry saves, ferry loads back, digests kept.
    let saved = work.path().join("saved.tar");
    let sig_tag = format!("example.com/team/app:{}.sig", app.replace(':', "-"));
    ferry
        .run(&[
            "save",
            "-o",
            saved.to_str().unwrap(),
            "example.com/team/app:1",
            &sig_tag,
            "example.com/team/blob:1",
        ])
        .ok();
    let again = Ferry::new();
    again.run(&["load", "-i", saved.to_str().unwrap()]).ok();
    again.run(&["verify", "--read-data"]).ok();
    for digest in [&app, &signature, &artifact] {
        assert!(has(&again, digest), "{digest} came back");
    }
}
