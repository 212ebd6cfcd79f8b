//! Referrer listings that are broken or hostile: a fallback tag that is not
//! an index, one listing more than the cap, one naming manifests that do
//! not exist, and a listing that loops back. Each becomes a warning; the
//! image itself is still copied (by `copy` and by a sync job), and nothing
//! unverified is written.

use crate::referrers::artifact_on;
use crate::support::fake::{FakeRegistry, Faults};
use crate::support::image;
use crate::support::registry::Registry;
use crate::support::{sha256, Ferry};

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn fallback(digest: &str) -> String {
    format!("sha256-{}", digest.trim_start_matches("sha256:"))
}

fn index_of(entries: Vec<serde_json::Value>) -> Vec<u8> {
    serde_json::to_vec(
        &serde_json::json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": entries}),
    )
    .unwrap()
}

fn descriptor(digest: &str, size: usize) -> serde_json::Value {
    serde_json::json!({"mediaType": MANIFEST, "digest": digest, "size": size, "artifactType": "application/spdx+json"})
}

/// Copy `app:1.0` from a fake serving `extra` manifests; the image must
/// arrive and stderr must carry `warning`.
fn copies_with_warning(built: &image::Image, faults: Faults, warning: &str) {
    let source = FakeRegistry::start(built, "1.0", faults);
    let target = Registry::start();
    let run = Ferry::new()
        .run(&[
            "copy",
            &format!("{}/app:1.0", source.host),
            &format!("{}/mirror/app:1.0", target.host),
        ])
        .ok();
    assert!(run.stderr.contains(warning), "{}", run.stderr);
    assert_eq!(sha256(&target.skopeo_raw("mirror/app:1.0")), built.digest());
    assert!(
        target
            .skopeo_raw_opt(&format!("mirror/app:{}", fallback(&built.digest())))
            .is_none(),
        "no fallback index was written for referrers that were not copied"
    );
}

fn built() -> image::Image {
    image::image(vec![image::random_layer("bad", 1_000, 41)], "amd64", "bad")
}

/// A fake whose fallback tag for the image holds an image manifest (the
/// image itself, re-tagged), not an index.
fn not_an_index(built: &image::Image) -> Faults {
    Faults {
        extra_manifests: vec![(
            fallback(&built.digest()),
            MANIFEST.into(),
            built.manifest.clone(),
        )],
        ..Faults::default()
    }
}

#[test]
fn a_fallback_tag_that_is_not_an_index_is_a_warning() {
    let built = built();
    copies_with_warning(&built, not_an_index(&built), "not copied");
}

#[test]
fn a_listing_over_the_cap_is_a_warning() {
    let built = built();
    let entries = (0..1_001)
        .map(|i| descriptor(&sha256(format!("referrer {i}").as_bytes()), 500))
        .collect();
    let faults = Faults {
        extra_manifests: vec![(fallback(&built.digest()), INDEX.into(), index_of(entries))],
        ..Faults::default()
    };
    copies_with_warning(&built, faults, "more than 1000");
}

#[test]
fn listed_manifests_that_do_not_exist_are_a_warning() {
    let built = built();
    let missing = sha256(b"nobody pushed this");
    let faults = Faults {
        extra_manifests: vec![(
            fallback(&built.digest()),
            INDEX.into(),
            index_of(vec![descriptor(&missing, 321)]),
        )],
        ..Faults::default()
    };
    copies_with_warning(&built, faults, &missing);
}

#[test]
fn a_listing_that_loops_back_ends_and_copies_each_referrer_once() {
    let built = built();
    let (sbom, blobs) = artifact_on(&built.manifest, "application/spdx+json", b"spdx");
    let sbom_digest = sha256(&sbom);
    // image → SBOM (true); SBOM → image and SBOM → itself (a loop; neither
    // names the SBOM as its subject).
    let faults = Faults {
        extra_manifests: vec![
            (sbom_digest.clone(), MANIFEST.into(), sbom.clone()),
            (
                fallback(&built.digest()),
                INDEX.into(),
                index_of(vec![descriptor(&sbom_digest, sbom.len())]),
            ),
            (
                fallback(&sbom_digest),
                INDEX.into(),
                index_of(vec![
                    descriptor(&built.digest(), built.manifest.len()),
                    descriptor(&sbom_digest, sbom.len()),
                ]),
            ),
        ],
        extra_blobs: blobs,
        ..Faults::default()
    };
    let source = FakeRegistry::start(&built, "1.0", faults);
    let target = Registry::start();
    let run = Ferry::new()
        .run(&[
            "--json",
            "copy",
            &format!("{}/app:1.0", source.host),
            &format!("{}/mirror/app:1.0", target.host),
        ])
        .ok();
    let outcome: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let outcome = if outcome.is_array() {
        outcome[0].clone()
    } else {
        outcome
    };
    // The image's own digest, listed again, is not walked a second time.
    assert_eq!(outcome["referrers_copied"], 1, "{outcome}");
    assert_eq!(
        target
            .skopeo_raw_opt(&format!("mirror/app@{sbom_digest}"))
            .map(|b| sha256(&b)),
        Some(sbom_digest)
    );
}

#[test]
fn a_sync_goes_on_when_a_referrers_listing_is_broken() {
    let built = built();
    let source = FakeRegistry::start(&built, "1.0", not_an_index(&built));
    let target = Registry::start();
    let ferry = Ferry::new().with_config(&format!(
        "version = 1\n[[sync]]\nname = \"mirror\"\nsource = \"{}/app\"\ntarget = \"{}/mirror/app\"\ntags = {{ include = [\"1.0\"] }}\n",
        source.host, target.host
    ));
    ferry.run(&["run"]).ok();
    assert_eq!(sha256(&target.skopeo_raw("mirror/app:1.0")), built.digest());
    // And an unchanged re-run stays quiet.
    let again = ferry.run(&["run"]).ok();
    assert!(again.stdout.contains("0 changes"), "{}", again.stdout);
}
