//! Referrers in the store and in archives: a pull keeps an image's
//! signatures, attestations and SBOMs with it (not listed as images, shown
//! by `inspect`), push/save/load/`copy archive:`/backups carry them with
//! their digests, docker and podman still load the archives, and `rmi` +
//! `gc` leave nothing of a signed image behind.

use crate::referrers::{attest, listed, raw, seed, Signed};
use crate::support::registry::Registry;
use crate::support::{sha256, Ferry};

fn json(run: &crate::support::Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", run.stdout))
}

/// The digests `inspect` lists as referrers of `image`.
pub(crate) fn inspected_referrers(ferry: &Ferry, image: &str) -> Vec<String> {
    let inspected = json(&ferry.run(&["--json", "inspect", image]).ok());
    let mut digests: Vec<String> = inspected[0]["Referrers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Digest"].as_str().unwrap().to_owned())
        .collect();
    digests.sort();
    digests
}

fn all_referrers(signed: &Signed) -> Vec<String> {
    let mut all = vec![
        signed.sbom.clone(),
        signed.signature.clone(),
        signed.cosign.clone(),
    ];
    all.sort();
    all
}

/// Every referrer of the fixture is at `repository` in `registry`, digests kept.
fn assert_mirrored(registry: &Registry, repository: &str, signed: &Signed) {
    assert_eq!(
        listed(registry, repository, &signed.image),
        std::slice::from_ref(&signed.sbom)
    );
    assert_eq!(
        listed(registry, repository, &signed.sbom),
        std::slice::from_ref(&signed.signature)
    );
    for digest in [&signed.sbom, &signed.signature] {
        let bytes = raw(registry, &format!("{repository}@{digest}"));
        assert_eq!(bytes.map(|b| sha256(&b)).as_ref(), Some(digest));
    }
    let cosign_tag = format!(
        "{repository}:sha256-{}.sig",
        signed.image.trim_start_matches("sha256:")
    );
    assert_eq!(
        raw(registry, &cosign_tag).map(|b| sha256(&b)),
        Some(signed.cosign.clone())
    );
}

#[test]
fn pull_keeps_referrers_with_the_image_and_push_brings_them_back() {
    let source = Registry::start();
    let signed = seed(&source, "signed/app");
    let ferry = Ferry::new();
    let image = format!("{}/signed/app:1.0", source.host);
    ferry.run(&["pull", &image]).ok();
    // One image, not four: referrers are not images of their own.
    let images = json(&ferry.run(&["--json", "images"]).ok());
    let images = images.as_array().unwrap();
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(images[0]["kind"], "image");
    assert_eq!(
        images[0]["referrers"], 2,
        "the SBOM and the cosign signature"
    );
    assert_eq!(inspected_referrers(&ferry, &image), all_referrers(&signed));
    let inspected = json(&ferry.run(&["--json", "inspect", &image]).ok());
    let sbom = inspected[0]["Referrers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["Digest"] == signed.sbom.as_str())
        .unwrap()
        .clone();
    assert_eq!(sbom["ArtifactType"], "application/spdx+json");
    assert_eq!(sbom["Subject"], signed.image.as_str());
    assert_eq!(
        sbom["Annotations"]["org.opencontainers.image.created"],
        "2026-11-01T00:00:00Z"
    );
    let verified = json(&ferry.run(&["--json", "verify"]).ok());
    assert_eq!(verified["referrers"], 3, "{verified}");
    assert!(verified["problems"].as_array().unwrap().is_empty());
    // The store stays a layout skopeo reads.
    let layout = format!("oci:{}:{image}", ferry.store.display());
    crate::support::run_ok(
        std::process::Command::new("skopeo").args(["inspect", "--raw", &layout]),
    );
    // --no-referrers leaves them behind.
    let bare = Ferry::new();
    bare.run(&["pull", "--no-referrers", &image]).ok();
    assert!(inspected_referrers(&bare, &image).is_empty());
    // Push: to a registry without the referrers API (fallback tags) ...
    let target = Registry::start();
    ferry
        .run(&["push", &image, &format!("{}/mirror/app:1.0", target.host)])
        .ok();
    assert_mirrored(&target, "mirror/app", &signed);
    // ... and to one with it (the registry indexes them; no fallback tag).
    use crate::support::fake::{FakeRegistry, Faults};
    let filler = crate::support::image::image(
        vec![crate::support::image::random_layer("x", 10, 3)],
        "amd64",
        "x",
    );
    let api = FakeRegistry::start(
        &filler,
        "filler",
        Faults {
            referrers_api: true,
            ..Faults::default()
        },
    );
    ferry
        .run(&["push", &image, &format!("{}/app:1.0", api.host)])
        .ok();
    let log = api.log();
    let put = |reference: &str| {
        log.iter()
            .any(|l| l.starts_with(&format!("PUT /v2/app/manifests/{reference} ")))
    };
    assert!(put(&signed.sbom) && put(&signed.signature), "{log:?}");
    let hex = signed.image.trim_start_matches("sha256:");
    assert!(!put(&format!("sha256-{hex}")), "{log:?}");
    assert!(put(&format!("sha256-{hex}.sig")), "{log:?}");
}

#[test]
fn rmi_of_a_signed_image_leaves_nothing_behind_after_gc() {
    let source = Registry::start();
    seed(&source, "signed/app");
    let ferry = Ferry::new();
    let image = format!("{}/signed/app:1.0", source.host);
    ferry.run(&["pull", &image]).ok();
    assert!(ferry.index_json().contains("dev.ferry.referrer.subject"));
    ferry.run(&["rmi", &image]).ok();
    ferry.run(&["gc"]).ok();
    assert!(
        !ferry.index_json().contains("sha256:"),
        "{}",
        ferry.index_json()
    );
    assert!(ferry.blob_files().is_empty(), "{:?}", ferry.blob_files());
    // prune -a does the same.
    ferry.run(&["pull", &image]).ok();
    ferry.run(&["prune", "-a", "-f"]).ok();
    ferry.run(&["gc"]).ok();
    assert!(ferry.blob_files().is_empty(), "{:?}", ferry.blob_files());
}

#[test]
fn save_load_push_keeps_every_digest() {
    let source = Registry::start();
    let signed = seed(&source, "signed/app");
    let ferry = Ferry::new();
    let image = format!("{}/signed/app:1.0", source.host);
    ferry.run(&["pull", &image]).ok();
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("signed.tar");
    let saved = ferry
        .run(&["save", "-o", archive.to_str().unwrap(), &image])
        .ok();
    assert!(
        saved.stderr.contains("1 image with 3 referrers"),
        "{}",
        saved.stderr
    );
    // manifest.json lists the container image only.
    let listing = crate::support::run_ok(std::process::Command::new("tar").args([
        "-xOf",
        archive.to_str().unwrap(),
        "manifest.json",
    ]));
    let manifest: serde_json::Value = serde_json::from_str(&listing).unwrap();
    assert_eq!(manifest.as_array().unwrap().len(), 1, "{manifest}");
    let far = Ferry::new();
    let loaded = far.run(&["load", "-i", archive.to_str().unwrap()]).ok();
    assert!(
        loaded.stdout.contains("Loaded 3 referrers"),
        "{}",
        loaded.stdout
    );
    assert_eq!(inspected_referrers(&far, &image), all_referrers(&signed));
    let images = json(&far.run(&["--json", "images"]).ok());
    assert_eq!(images.as_array().unwrap().len(), 1);
    let target = Registry::start();
    far.run(&["push", &image, &format!("{}/mirror/app:1.0", target.host)])
        .ok();
    assert_eq!(sha256(&target.skopeo_raw("mirror/app:1.0")), signed.image);
    assert_mirrored(&target, "mirror/app", &signed);
}

#[test]
fn registry_to_archive_to_registry_carries_referrers() {
    let source = Registry::start();
    let signed = seed(&source, "signed/app");
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("remote.tar");
    let ferry = Ferry::new();
    let written = ferry
        .run(&[
            "copy",
            &format!("{}/signed/app:1.0", source.host),
            &format!("archive:{}", archive.display()),
        ])
        .ok();
    assert!(written.stdout.contains("3 referrers"), "{}", written.stdout);
    let target = Registry::start();
    ferry
        .run(&[
            "copy",
            &format!("archive:{}", archive.display()),
            &format!("{}/mirror", target.host),
        ])
        .ok();
    assert_mirrored(&target, "mirror/signed/app", &signed);
    // Left out on request.
    let bare = work.path().join("bare.tar");
    let written = ferry
        .run(&[
            "copy",
            "--no-referrers",
            &format!("{}/signed/app:1.0", source.host),
            &format!("archive:{}", bare.display()),
        ])
        .ok();
    assert!(!written.stdout.contains("referrers"), "{}", written.stdout);
}

#[test]
fn a_delta_backup_carries_new_referrers_of_old_images() {
    let source = Registry::start();
    let signed = seed(&source, "signed/app");
    let work = tempfile::tempdir().unwrap();
    let output = work.path().join("app-{run}.tar");
    let ferry = Ferry::new().with_config(&format!(
        "version = 1\n[[backup]]\nname = \"app\"\nimages = [\"{}/signed/app:1.0\"]\noutput = \"{}\"\nincremental = true\n",
        source.host,
        output.display()
    ));
    ferry.run(&["run"]).ok();
    // A new cosign attestation for the unchanged image.
    let hex = attest(&signed, &source);
    let delta_run = ferry.run(&["run"]).ok();
    assert!(delta_run.stdout.contains("delta"), "{}", delta_run.stdout);
    let full = work.path().join("app-1.tar");
    let delta = work.path().join("app-2.tar");
    let index = crate::support::run_ok(std::process::Command::new("tar").args([
        "-xOf",
        delta.to_str().unwrap(),
        "index.json",
    ]));
    assert!(index.contains(&format!("sha256-{hex}.att")), "{index}");
    let far = Ferry::new();
    far.run(&["load", "-i", full.to_str().unwrap()]).ok();
    far.run(&["load", "-i", delta.to_str().unwrap()]).ok();
    let inspected = json(
        &far.run(&[
            "--json",
            "inspect",
            &format!("{}/signed/app:1.0", source.host),
        ])
        .ok(),
    );
    let tags: Vec<&str> = inspected[0]["Referrers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["Tag"].as_str())
        .collect();
    assert!(
        tags.contains(&format!("sha256-{hex}.att").as_str()),
        "{tags:?}"
    );
}

#[test]
fn docker_and_podman_load_archives_with_referrers() {
    use crate::support::engines::{Docker, Podman};
    let source = Registry::start();
    seed(&source, "signed/app");
    let ferry = Ferry::new();
    let image = format!("{}/signed/app:1.0", source.host);
    ferry.run(&["pull", &image]).ok();
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("signed.tar");
    ferry
        .run(&["save", "-o", archive.to_str().unwrap(), &image])
        .ok();
    let podman = Podman::new();
    let loaded = podman.load(&archive);
    assert!(loaded.contains("signed/app:1.0"), "{loaded}");
    let docker = Docker::start();
    let loaded = docker.run(&["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains("signed/app:1.0"), "{loaded}");
    // skopeo reads the OCI part by name.
    let oci = format!("oci-archive:{}:1.0", archive.display());
    crate::support::run_ok(std::process::Command::new("skopeo").args(["inspect", "--raw", &oci]));
}

#[test]
fn an_archive_entry_that_lies_about_its_subject_is_refused() {
    let source = Registry::start();
    let signed = seed(&source, "signed/app");
    let ferry = Ferry::new();
    let image = format!("{}/signed/app:1.0", source.host);
    ferry.run(&["pull", &image]).ok();
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("signed.tar");
    ferry
        .run(&["save", "-o", archive.to_str().unwrap(), &image])
        .ok();
    // The signature's subject is the SBOM; this index.json says the image.
    let unpacked = work.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    crate::support::run_ok(
        std::process::Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&unpacked),
    );
    let index_path = unpacked.join("index.json");
    let text = std::fs::read_to_string(&index_path).unwrap();
    let mut index: serde_json::Value = serde_json::from_str(&text).unwrap();
    for entry in index["manifests"].as_array_mut().unwrap() {
        if entry["digest"] == signed.signature.as_str() {
            entry["annotations"]["dev.ferry.referrer.subject"] = signed.image.as_str().into();
        }
    }
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let lying = work.path().join("lying.tar");
    crate::support::tar_dir(&unpacked, &lying);
    let far = Ferry::new();
    let run = far
        .run(&["load", "-i", lying.to_str().unwrap()])
        .expect_code(1);
    assert!(
        run.stderr.contains("does not name that subject"),
        "{}",
        run.stderr
    );
    assert!(far.blob_files().is_empty(), "nothing stored");
}

#[test]
fn a_sync_into_the_store_keeps_signatures_and_notices_new_ones() {
    let source = Registry::start();
    let signed = seed(&source, "signed/app");
    let ferry = Ferry::new().with_config(&format!(
        "version = 1\n[[sync]]\nname = \"local\"\nsource = \"{}/signed/app\"\ntarget = \"store\"\ntags = {{ semver = \">=1.0\" }}\n",
        source.host
    ));
    ferry.run(&["run"]).ok();
    let images = json(&ferry.run(&["--json", "images"]).ok());
    assert_eq!(images.as_array().unwrap().len(), 1, "{images}");
    let name = images[0]["name"].as_str().unwrap().to_owned();
    assert_eq!(inspected_referrers(&ferry, &name), all_referrers(&signed));
    // A new attestation for the unchanged image reaches the store.
    let hex = attest(&signed, &source);
    let run = ferry.run(&["run"]).ok();
    assert!(run.stdout.contains("referrers"), "{}", run.stdout);
    let inspected = json(&ferry.run(&["--json", "inspect", &name]).ok());
    let tags: Vec<&str> = inspected[0]["Referrers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["Tag"].as_str())
        .collect();
    assert!(
        tags.contains(&format!("sha256-{hex}.att").as_str()),
        "{tags:?}"
    );
}
