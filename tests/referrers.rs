//! Signatures, attestations and SBOMs travel with their images between
//! registries: OCI 1.1 referrers through the fallback tag schema (the real
//! registry has no referrers API), referrers of referrers, and cosign's
//! `.sig` tags; `--no-referrers` leaves them; a sync with a tag filter
//! brings them; the destination's fallback index keeps entries it had.

use crate::support::image::{self, Content};
use crate::support::registry::Registry;
use crate::support::{sha256, Ferry};

const EMPTY: &[u8] = b"{}";
const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// What the fixture holds.
pub(crate) struct Signed {
    /// The store the fixture was loaded into (every tag under example.com/signed/app).
    pub store: Ferry,
    pub image: String,
    pub sbom: String,
    pub signature: String,
    pub cosign: String,
    pub repository: String,
}

/// Write an OCI layout with an image, an SPDX SBOM referring to it, a
/// signature referring to the SBOM, their fallback indexes, and a cosign
/// `.sig` tag; load it into a store and push every tag to `registry`.
pub(crate) fn seed(registry: &Registry, repository: &str) -> Signed {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let built = image::image(
        vec![image::random_layer("signed", 2_000, 21)],
        "amd64",
        "signed",
    );
    image::write_layout(&layout, &[("1.0", Content::Image(&built))]);
    let blob = |bytes: &[u8]| {
        let digest = sha256(bytes);
        let path = layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        std::fs::write(path, bytes).unwrap();
        digest
    };
    let descriptor = |media: &str, bytes: &[u8]| serde_json::json!({"mediaType": media, "digest": sha256(bytes), "size": bytes.len()});
    let artifact = |artifact_type: &str, payload: &[u8], subject: serde_json::Value| {
        blob(EMPTY);
        blob(payload);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": MANIFEST, "artifactType": artifact_type,
            "config": {"mediaType": EMPTY_TYPE, "digest": sha256(EMPTY), "size": 2},
            "layers": [descriptor(artifact_type, payload)],
            "subject": subject,
            "annotations": {"org.opencontainers.image.created": "2026-11-01T00:00:00Z"},
        }))
        .unwrap();
        blob(&manifest);
        manifest
    };
    let image_descriptor = descriptor(MANIFEST, &built.manifest);
    let sbom = artifact(
        "application/spdx+json",
        br#"{"spdxVersion":"SPDX-2.3"}"#,
        image_descriptor,
    );
    let signature = artifact(
        "application/vnd.cncf.notary.signature",
        b"signature-bytes",
        descriptor(MANIFEST, &sbom),
    );
    let fallback = |listed: &[u8], artifact_type: &str| {
        let mut entry = descriptor(MANIFEST, listed);
        entry["artifactType"] = artifact_type.into();
        let index = serde_json::to_vec(
            &serde_json::json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": [entry]}),
        )
        .unwrap();
        blob(&index);
        index
    };
    let image_index = fallback(&sbom, "application/spdx+json");
    let sbom_index = fallback(&signature, "application/vnd.cncf.notary.signature");
    // cosign: a simple-signing payload layer with the signature in an annotation.
    let payload = serde_json::to_vec(&serde_json::json!({"critical": {"image": {"docker-manifest-digest": built.digest()}, "type": "cosign container image signature"}})).unwrap();
    blob(&payload);
    // As cosign writes it: the payload (uncompressed) is its own diffID.
    let cosign_config = serde_json::to_vec(&serde_json::json!({"architecture": "", "os": "", "config": {}, "rootfs": {"type": "layers", "diff_ids": [sha256(&payload)]}})).unwrap();
    let cosign_config = cosign_config.as_slice();
    blob(cosign_config);
    let cosign = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", cosign_config),
        "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": sha256(&payload), "size": payload.len(),
            "annotations": {"dev.cosignproject.cosign/signature": "MEUCIQ=="}}],
    }))
    .unwrap();
    blob(&cosign);
    let hex = |d: &str| d.trim_start_matches("sha256:").to_owned();
    let name = "example.com/signed/app";
    let tags: Vec<(String, &str, Vec<u8>)> = vec![
        ("1.0".into(), MANIFEST, built.manifest.clone()),
        (
            format!("sha256-{}", hex(&built.digest())),
            INDEX,
            image_index,
        ),
        (format!("sha256-{}", hex(&sha256(&sbom))), INDEX, sbom_index),
        (
            format!("sha256-{}.sig", hex(&built.digest())),
            MANIFEST,
            cosign.clone(),
        ),
    ];
    let entries: Vec<serde_json::Value> = tags
        .iter()
        .map(|(tag, media, bytes)| {
            let mut entry = descriptor(media, bytes);
            entry["annotations"] = serde_json::json!({"io.containerd.image.name": format!("{name}:{tag}"), "org.opencontainers.image.ref.name": tag});
            entry
        })
        .collect();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": entries})).unwrap(),
    )
    .unwrap();
    let archive = work.path().join("signed.tar");
    crate::support::tar_dir(&layout, &archive);
    let ferry = Ferry::new();
    ferry.run(&["load", "-i", archive.to_str().unwrap()]).ok();
    for (tag, _, _) in &tags {
        ferry
            .run(&[
                "push",
                &format!("{name}:{tag}"),
                &format!("{}/{repository}:{tag}", registry.host),
            ])
            .ok();
    }
    Signed {
        store: ferry,
        image: built.digest(),
        sbom: sha256(&sbom),
        signature: sha256(&signature),
        cosign: sha256(&cosign),
        repository: repository.to_owned(),
    }
}

/// Attach a new cosign attestation (`sha256-<hex>.att`) to the fixture's
/// image at `registry`, as a re-signing would; returns the image's hex.
pub(crate) fn attest(signed: &Signed, registry: &Registry) -> String {
    let hex = signed.image.trim_start_matches("sha256:").to_owned();
    let store_name = |suffix: &str| format!("example.com/signed/app:sha256-{hex}{suffix}");
    signed
        .store
        .run(&["tag", &store_name(".sig"), &store_name(".att")])
        .ok();
    signed
        .store
        .run(&[
            "push",
            &store_name(".att"),
            &format!("{}/signed/app:sha256-{hex}.att", registry.host),
        ])
        .ok();
    hex
}

pub(crate) fn raw(registry: &Registry, reference: &str) -> Option<Vec<u8>> {
    registry.skopeo_raw_opt(reference)
}

/// The digests a fallback index at `repository:sha256-<hex of subject>` lists.
pub(crate) fn listed(registry: &Registry, repository: &str, subject: &str) -> Vec<String> {
    let tag = format!("sha256-{}", subject.trim_start_matches("sha256:"));
    let Some(bytes) = raw(registry, &format!("{repository}:{tag}")) else {
        return Vec::new();
    };
    let index: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn copy_brings_referrers_referrers_of_referrers_and_cosign_tags() {
    let source = Registry::start();
    let signed = seed(&source, "signed/app");
    let target = Registry::start();
    let ferry = Ferry::new();
    let from = format!("{}/{}:1.0", source.host, signed.repository);
    // Without referrers: the image alone.
    ferry
        .run(&[
            "copy",
            "--no-referrers",
            &from,
            &format!("{}/bare/app:1.0", target.host),
        ])
        .ok();
    assert!(listed(&target, "bare/app", &signed.image).is_empty());
    // A referrer someone else attached at the destination stays listed.
    let other = Registry::start();
    let elsewhere = seed(&other, "other/app");
    assert_eq!(elsewhere.image, signed.image, "same image, same digest");
    let run = ferry
        .run(&["copy", &from, &format!("{}/mirror/app:1.0", target.host)])
        .ok();
    assert!(run.stdout.contains("digest"), "{}", run.stdout);
    assert_eq!(
        listed(&target, "mirror/app", &signed.image),
        std::slice::from_ref(&signed.sbom)
    );
    assert!(raw(&target, &format!("mirror/app@{}", signed.sbom)).is_some());
    assert_eq!(
        listed(&target, "mirror/app", &signed.sbom),
        std::slice::from_ref(&signed.signature)
    );
    assert_eq!(
        raw(&target, &format!("mirror/app@{}", signed.signature)).map(|b| sha256(&b)),
        Some(signed.signature.clone())
    );
    let cosign_tag = format!(
        "mirror/app:sha256-{}.sig",
        signed.image.trim_start_matches("sha256:")
    );
    assert_eq!(
        raw(&target, &cosign_tag).map(|b| sha256(&b)),
        Some(signed.cosign.clone())
    );
    // Copying again changes nothing and duplicates no entry.
    ferry
        .run(&["copy", &from, &format!("{}/mirror/app:1.0", target.host)])
        .ok();
    assert_eq!(
        listed(&target, "mirror/app", &signed.image),
        std::slice::from_ref(&signed.sbom)
    );
}

#[test]
fn all_tags_never_copies_a_referrer_tag_as_an_image() {
    // One tag-listing rule: `-a` and an unfiltered sync take the image tag
    // (1.0); the cosign and fallback tags travel as referrers, or not at
    // all without referrers.
    let source = Registry::start();
    let signed = seed(&source, "signed/app");
    let target = Registry::start();
    let tags = |repository: &str| {
        let listed = Ferry::new()
            .run(&["tags", &format!("{}/{repository}", target.host)])
            .ok();
        listed.stdout.lines().map(str::to_owned).collect::<Vec<_>>()
    };
    let ferry = Ferry::new().with_config(&format!(
        "version = 1\n[[sync]]\nname = \"bare\"\nsource = \"{}/signed/app\"\ntarget = \"{}/synced/app\"\nreferrers = false\n",
        source.host, target.host
    ));
    let from = format!("{}/{}", source.host, signed.repository);
    let copied = ferry
        .run(&[
            "copy",
            "-a",
            "--no-referrers",
            &from,
            &format!("{}/bare/app", target.host),
        ])
        .ok();
    assert_eq!(tags("bare/app"), ["1.0"], "{}", copied.stdout);
    let run = ferry.run(&["run"]).ok();
    assert_eq!(tags("synced/app"), ["1.0"], "{}", run.stdout);
    // With referrers, the cosign tag arrives once, as the image's referrer.
    let copied = ferry
        .run(&["copy", "-a", &from, &format!("{}/mirror/app", target.host)])
        .ok();
    let cosign_tag = format!("sha256-{}.sig", signed.image.trim_start_matches("sha256:"));
    assert!(
        tags("mirror/app").contains(&cosign_tag),
        "{}",
        copied.stdout
    );
    assert!(!copied.stdout.contains(&cosign_tag), "{}", copied.stdout);
}

#[test]
fn a_sync_with_a_tag_filter_brings_the_selected_images_signatures() {
    let source = Registry::start();
    let signed = seed(&source, "signed/app");
    let target = Registry::start();
    let ferry = Ferry::new().with_config(&format!(
        "version = 1\n[[sync]]\nname = \"mirror\"\nsource = \"{}/signed/app\"\ntarget = \"{}/mirror/app\"\ntags = {{ semver = \">=1.0\" }}\n[[sync]]\nname = \"bare\"\nsource = \"{}/signed/app\"\ntarget = \"{}/bare/app\"\ntags = {{ semver = \">=1.0\" }}\nreferrers = false\n[[sync]]\nname = \"sboms\"\nsource = \"{}/signed/app\"\ntarget = \"{}/sboms/app\"\ntags = {{ semver = \">=1.0\" }}\nreferrers = {{ artifact_types = [\"application/spdx+json\"] }}\n",
        source.host, target.host, source.host, target.host, source.host, target.host
    ));
    ferry.run(&["run"]).ok();
    // The filter selected 1.0 only, yet its SBOM, the SBOM's signature and
    // the cosign signature came along.
    assert_eq!(
        listed(&target, "mirror/app", &signed.image),
        std::slice::from_ref(&signed.sbom)
    );
    assert_eq!(
        listed(&target, "mirror/app", &signed.sbom),
        std::slice::from_ref(&signed.signature)
    );
    let cosign_tag = format!(
        "mirror/app:sha256-{}.sig",
        signed.image.trim_start_matches("sha256:")
    );
    assert!(raw(&target, &cosign_tag).is_some());
    assert!(listed(&target, "bare/app", &signed.image).is_empty());
    // Narrowed to SPDX: the SBOM travels; its signature and cosign's do not.
    assert_eq!(
        listed(&target, "sboms/app", &signed.image),
        std::slice::from_ref(&signed.sbom)
    );
    assert!(
        listed(&target, "sboms/app", &signed.sbom).is_empty(),
        "{:?}",
        Ferry::new()
            .run(&["tags", &format!("{}/sboms/app", target.host)])
            .stdout
    );
    let cosign_tag = format!(
        "sboms/app:sha256-{}.sig",
        signed.image.trim_start_matches("sha256:")
    );
    assert!(raw(&target, &cosign_tag).is_none());
}

#[test]
fn a_referrers_index_that_lies_is_a_note_and_the_image_still_copies() {
    let source = Registry::start();
    let signed = seed(&source, "signed/app");
    let hex = |d: &str| d.trim_start_matches("sha256:").to_owned();
    // In `lying/app`, the image's fallback index lists the signature, whose
    // subject is the SBOM, not the image.
    for (from, to) in [
        ("1.0".to_owned(), "1.0".to_owned()),
        (
            format!("sha256-{}", hex(&signed.sbom)),
            format!("sha256-{}", hex(&signed.image)),
        ),
    ] {
        signed
            .store
            .run(&[
                "push",
                &format!("example.com/signed/app:{from}"),
                &format!("{}/lying/app:{to}", source.host),
            ])
            .ok();
    }
    let target = Registry::start();
    let run = Ferry::new()
        .run(&[
            "copy",
            &format!("{}/lying/app:1.0", source.host),
            &format!("{}/mirror/app:1.0", target.host),
        ])
        .ok();
    assert!(
        run.stderr.contains("does not name it as its subject"),
        "{}",
        run.stderr
    );
    assert_eq!(sha256(&target.skopeo_raw("mirror/app:1.0")), signed.image);
    assert!(listed(&target, "mirror/app", &signed.image).is_empty());
    assert!(raw(&target, &format!("mirror/app@{}", signed.signature)).is_none());
}

/// An artifact manifest referring to `subject` (manifest bytes), with its blobs.
pub(crate) fn artifact_on(
    subject: &[u8],
    artifact_type: &str,
    payload: &[u8],
) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": MANIFEST, "artifactType": artifact_type,
        "config": {"mediaType": EMPTY_TYPE, "digest": sha256(EMPTY), "size": 2},
        "layers": [{"mediaType": artifact_type, "digest": sha256(payload), "size": payload.len()}],
        "subject": {"mediaType": MANIFEST, "digest": sha256(subject), "size": subject.len()},
    }))
    .unwrap();
    let blobs = vec![
        (sha256(EMPTY), EMPTY.to_vec()),
        (sha256(payload), payload.to_vec()),
    ];
    (manifest, blobs)
}

#[test]
fn from_a_registry_with_the_referrers_api_to_one_without_it() {
    use crate::support::fake::{FakeRegistry, Faults};
    let built = image::image(vec![image::random_layer("api", 3_000, 31)], "amd64", "api");
    let kinds = [
        ("application/spdx+json", b"spdx".as_slice()),
        ("application/vnd.in-toto+json", b"in-toto".as_slice()),
        (
            "application/vnd.cncf.notary.signature",
            b"notary".as_slice(),
        ),
    ];
    let mut faults = Faults {
        referrers_api: true,
        ..Faults::default()
    };
    let mut expected = Vec::new();
    for (artifact_type, payload) in kinds {
        let (manifest, blobs) = artifact_on(&built.manifest, artifact_type, payload);
        expected.push(sha256(&manifest));
        faults
            .extra_manifests
            .push((sha256(&manifest), MANIFEST.into(), manifest));
        faults.extra_blobs.extend(blobs);
    }
    expected.sort();
    // Three referrers, two per page: the second page must be followed.
    let source = FakeRegistry::start(&built, "1.0", faults);
    let target = Registry::start();
    Ferry::new()
        .run(&[
            "copy",
            &format!("{}/app:1.0", source.host),
            &format!("{}/mirror/app:1.0", target.host),
        ])
        .ok();
    assert!(
        source.count("GET", "/referrers/") >= 2,
        "{:?}",
        source.log()
    );
    let mut listed = listed(&target, "mirror/app", &built.digest());
    listed.sort();
    assert_eq!(listed, expected);
    for digest in &expected {
        assert!(raw(&target, &format!("mirror/app@{digest}")).is_some());
    }
}

#[test]
fn to_a_registry_with_the_referrers_api_no_fallback_tag_is_written() {
    use crate::support::fake::{FakeRegistry, Faults};
    let source = Registry::start();
    let signed = seed(&source, "signed/app");
    let filler = image::image(vec![image::random_layer("x", 10, 3)], "amd64", "x");
    let target = FakeRegistry::start(
        &filler,
        "filler",
        Faults {
            referrers_api: true,
            ..Faults::default()
        },
    );
    Ferry::new()
        .run(&[
            "copy",
            &format!("{}/signed/app:1.0", source.host),
            &format!("{}/app:1.0", target.host),
        ])
        .ok();
    let log = target.log();
    let put = |reference: &str| {
        log.iter()
            .any(|l| l.starts_with(&format!("PUT /v2/app/manifests/{reference} ")))
    };
    let hex = |d: &str| d.trim_start_matches("sha256:").to_owned();
    assert!(put(&signed.sbom), "{log:?}");
    assert!(put(&signed.signature), "{log:?}");
    // The registry indexed the subjects itself (OCI-Subject): no fallback tags.
    assert!(!put(&format!("sha256-{}", hex(&signed.image))), "{log:?}");
    assert!(!put(&format!("sha256-{}", hex(&signed.sbom))), "{log:?}");
    // cosign signatures are tags, on every registry.
    assert!(
        put(&format!("sha256-{}.sig", hex(&signed.image))),
        "{log:?}"
    );
}

#[test]
fn a_resync_notices_new_signatures_of_an_unchanged_image_with_heads_only() {
    let source = Registry::start();
    let signed = seed(&source, "signed/app");
    let target = Registry::start();
    let ferry = Ferry::new().with_config(&format!(
        "version = 1\n[[sync]]\nname = \"mirror\"\nsource = \"{}/signed/app\"\ntarget = \"{}/mirror/app\"\ntags = {{ semver = \">=1.0\" }}\n",
        source.host, target.host
    ));
    ferry.run(&["run"]).ok();
    // Unchanged image, unchanged referrers: HEADs and one tag list, no GETs
    // of manifests or blobs.
    source.clear_log();
    let quiet = ferry.run(&["run"]).ok();
    assert!(quiet.stdout.contains("0 changes"), "{}", quiet.stdout);
    assert_eq!(source.requests("GET", "/manifests/"), 0);
    assert_eq!(source.requests("GET", "/blobs/"), 0);
    // Per signed tag: the tag's HEAD (as before), the fallback tag's HEAD and
    // one HEAD per cosign tag; one referrers-API probe per registry per run.
    assert_eq!(source.requests("HEAD", "/manifests/"), 3);
    assert_eq!(source.requests("GET", "/referrers/"), 1);
    // A new cosign attestation arrives for the unchanged image.
    let hex = attest(&signed, &source);
    let run = ferry.run(&["run"]).ok();
    assert!(run.stdout.contains("referrers"), "{}", run.stdout);
    assert!(raw(&target, &format!("mirror/app:sha256-{hex}.att")).is_some());
    // And then it is quiet again.
    let again = ferry.run(&["run"]).ok();
    assert!(again.stdout.contains("0 changes"), "{}", again.stdout);
}
