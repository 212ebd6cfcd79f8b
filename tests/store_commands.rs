//! Docker semantics of the local commands: `images`, `tag`, `rmi` (shared
//! IDs need -f, shared layers stay), dangling images when a tag moves,
//! `prune` with `until=` from ferry's first-seen time, `df`, `inspect`,
//! `history`, `gc` and `verify`.

use crate::round_trip::seeded;
use crate::support::Ferry;

fn json(run: &crate::support::Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", run.stdout))
}

#[test]
fn images_lists_docker_columns_and_tag_shares_the_id() {
    let (registry, fixture) = seeded();
    let ferry = Ferry::new();
    let image = format!("{}/team/app:1.0", registry.host);
    ferry.run(&["pull", &image]).ok();
    ferry.run(&["tag", &image, "local/app:stable"]).ok();
    let listing = ferry.run(&["images"]).ok();
    let header = listing.stdout.lines().next().unwrap();
    assert!(
        header.starts_with("REPOSITORY")
            && header.contains("TAG")
            && header.contains("IMAGE ID")
            && header.contains("CREATED")
            && header.contains("SIZE")
            && header.ends_with("KIND"),
        "{header}"
    );
    let row = listing.stdout.lines().nth(1).unwrap();
    assert!(row.ends_with(" image"), "{row}");
    let id = &fixture.app1.config_digest()["sha256:".len()..][..12];
    assert_eq!(listing.stdout.matches(id).count(), 2, "{}", listing.stdout);
    assert!(listing.stdout.contains("local/app") && listing.stdout.contains("stable"));
    // As docker: -q prints the short ID, --no-trunc the full one.
    let ids = ferry.run(&["images", "-q"]).ok();
    assert_eq!(ids.stdout.trim(), id);
    let ids = ferry.run(&["images", "-q", "--no-trunc"]).ok();
    assert_eq!(ids.stdout.trim(), fixture.app1.config_digest());
    let filtered = json(
        &ferry
            .run(&["--json", "images", "--filter", "reference=local/*"])
            .ok(),
    );
    assert_eq!(filtered.as_array().unwrap().len(), 1);
    // As docker, a positional pattern filters the same way.
    let positional = json(&ferry.run(&["--json", "images", "local/*"]).ok());
    assert_eq!(positional.as_array().unwrap().len(), 1);
    // history --json gives the config's timestamps, not ages.
    let history = json(&ferry.run(&["--json", "history", &image]).ok());
    assert_eq!(history[0]["created"], "2026-01-01T00:00:00Z", "{history}");
}

#[test]
fn rmi_of_shared_id_needs_force_and_shared_layers_stay() {
    let (registry, fixture) = seeded();
    let ferry = Ferry::new();
    let one = format!("{}/team/app:1.0", registry.host);
    let two = format!("{}/team/app:2.0", registry.host);
    ferry.run(&["pull", &one]).ok();
    ferry.run(&["pull", &two]).ok();
    ferry.run(&["tag", &one, "local/app:one"]).ok();
    let id = fixture.app1.config_digest()["sha256:".len()..][..12].to_owned();
    let refused = ferry.run(&["rmi", &id]).expect_code(1);
    assert!(
        refused.stderr.contains("must be forced"),
        "{}",
        refused.stderr
    );
    // Untagging one name keeps the image and its blobs.
    let untag = ferry.run(&["rmi", "local/app:one"]).ok();
    assert!(
        untag.stdout.contains("Untagged: docker.io/local/app:one")
            && !untag.stdout.contains("Deleted"),
        "{}",
        untag.stdout
    );
    let blobs_before = ferry.blob_files().len();
    let removed = ferry.run(&["rmi", &one]).ok();
    assert!(removed.stdout.contains("Deleted:"), "{}", removed.stdout);
    // app1's own layer, config and manifest are gone; the shared base stays for 2.0.
    assert_eq!(ferry.blob_files().len(), blobs_before - 3);
    let base = fixture.app1.layers[0].digest.trim_start_matches("sha256:");
    assert!(ferry.store.join("blobs/sha256").join(base).exists());
    ferry.run(&["verify", "--read-data"]).ok();
    // Like docker, each argument on its own: a missing one is an error
    // line and exit 1, and the others are still removed, in either order.
    ferry.run(&["tag", &two, "local/app:x"]).ok();
    ferry.run(&["tag", &two, "local/app:y"]).ok();
    for (first, second) in [
        ("local/app:missing", "local/app:x"),
        ("local/app:y", "local/app:missing"),
    ] {
        let mixed = ferry.run(&["rmi", first, second]).expect_code(1);
        assert!(
            mixed.stdout.contains("Untagged: docker.io/local/app:"),
            "{}",
            mixed.stdout
        );
        assert_eq!(
            mixed.stderr.matches("error:").count(),
            1,
            "{}",
            mixed.stderr
        );
        assert!(
            mixed.stderr.contains("local/app:missing"),
            "{}",
            mixed.stderr
        );
    }
    let left = ferry.run(&["images"]).ok().stdout;
    assert!(!left.contains(" x ") && !left.contains(" y "), "{left}");
    // -f removes every name of an ID.
    ferry.run(&["tag", &two, "local/app:a"]).ok();
    ferry.run(&["tag", &two, "local/app:b"]).ok();
    let id2 = &fixture.app2.config_digest()["sha256:".len()..][..12];
    ferry.run(&["rmi", "-f", id2]).ok();
    assert_eq!(ferry.run(&["images", "-q"]).stdout.trim(), "");
    assert_eq!(ferry.blob_files().len(), 0);
}

#[test]
fn moved_tag_leaves_dangling_image_that_prune_removes() {
    let (registry, fixture) = seeded();
    let ferry = Ferry::new();
    ferry
        .run(&["pull", &format!("{}/team/app:1.0", registry.host)])
        .ok();
    ferry
        .run(&[
            "tag",
            &format!("{}/team/app:1.0", registry.host),
            "local/app:latest",
        ])
        .ok();
    ferry
        .run(&["pull", &format!("{}/team/app:2.0", registry.host)])
        .ok();
    ferry
        .run(&[
            "tag",
            &format!("{}/team/app:2.0", registry.host),
            "local/app:latest",
        ])
        .ok();
    // app1 is still tagged as team/app:1.0, so not dangling yet.
    assert!(json(
        &ferry
            .run(&["--json", "images", "--filter", "dangling=true"])
            .ok()
    )
    .as_array()
    .unwrap()
    .is_empty());
    ferry
        .run(&["rmi", &format!("{}/team/app:1.0", registry.host)])
        .ok();
    ferry
        .run(&["pull", &format!("{}/team/app:1.0", registry.host)])
        .ok();
    ferry
        .run(&[
            "tag",
            &format!("{}/team/app:2.0", registry.host),
            &format!("{}/team/app:1.0", registry.host),
        ])
        .ok();
    let dangling = json(
        &ferry
            .run(&["--json", "images", "--filter", "dangling=true"])
            .ok(),
    );
    assert_eq!(dangling.as_array().unwrap().len(), 1);
    assert_eq!(dangling[0]["digest"], fixture.app1.digest());
    let table = ferry.run(&["images"]).ok();
    assert!(
        table.stdout.lines().any(|l| l.starts_with("<none>")),
        "{}",
        table.stdout
    );
    // A dry run removes nothing; the real prune removes only the dangling image.
    let dry = ferry.run(&["prune", "--dry-run"]).ok();
    // It names the image ID `images` shows, and says it would (not did).
    let id = fixture.app1.config_digest();
    assert!(
        dry.stdout.contains(&format!("would delete: {id}")),
        "{}",
        dry.stdout
    );
    assert!(
        table.stdout.contains(&id["sha256:".len()..][..12]),
        "{}",
        table.stdout
    );
    assert!(!dry.stdout.contains("deleted:"), "{}", dry.stdout);
    // Three names on app2 plus the dangling app1.
    assert_eq!(
        json(&ferry.run(&["--json", "images"]).ok())
            .as_array()
            .unwrap()
            .len(),
        4
    );
    ferry.run(&["prune", "-f"]).ok();
    assert_eq!(
        json(&ferry.run(&["--json", "images"]).ok())
            .as_array()
            .unwrap()
            .len(),
        3
    );
    ferry.run(&["verify", "--read-data"]).ok();
}

#[test]
fn prune_until_uses_first_seen_time_not_created() {
    let (registry, _fixture) = seeded();
    let ferry = Ferry::new();
    ferry
        .run(&["pull", &format!("{}/team/app:1.0", registry.host)])
        .ok();
    ferry
        .run(&["pull", &format!("{}/team/app:2.0", registry.host)])
        .ok();
    // The configs say "created 2026-01-01", long ago; ferry saw them just now.
    let kept = ferry
        .run(&["prune", "-a", "-f", "--filter", "until=1h"])
        .ok();
    assert!(
        kept.stdout.contains("Total reclaimed space: 0B"),
        "{}",
        kept.stdout
    );
    assert_eq!(
        json(&ferry.run(&["--json", "images"]).ok())
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Age the 1.0 image's first-seen time by editing ferry's metadata.
    let path = ferry.store.join("ferry/images.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let one = ferry
        .run(&[
            "--json",
            "inspect",
            &format!("{}/team/app:1.0", registry.host),
        ])
        .ok();
    let digest = json(&one)[0]["Digest"].as_str().unwrap().to_owned();
    let id = json(&one)[0]["Id"].as_str().unwrap().to_owned();
    meta["images"][&digest]["first_seen"] = serde_json::json!(1_000);
    std::fs::write(&path, serde_json::to_vec(&meta).unwrap()).unwrap();
    let pruned = ferry
        .run(&["prune", "-a", "-f", "--filter", "until=24h"])
        .ok();
    assert!(
        pruned.stdout.contains(&format!("deleted: {id}")),
        "{}",
        pruned.stdout
    );
    let left = json(&ferry.run(&["--json", "images"]).ok());
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert!(left[0]["name"].as_str().unwrap().ends_with(":2.0"));
    let refused = ferry
        .run(&["prune", "--filter", "until=soon"])
        .expect_code(2);
    assert!(refused.stderr.contains("bad duration"));
}

#[test]
fn df_inspect_history_gc_and_verify() {
    let (registry, fixture) = seeded();
    let ferry = Ferry::new();
    ferry
        .run(&["pull", &format!("{}/team/app:1.0", registry.host)])
        .ok();
    ferry
        .run(&["pull", &format!("{}/team/app:2.0", registry.host)])
        .ok();
    let usage = json(&ferry.run(&["--json", "df"]).ok());
    let base_size = fixture.app1.layers[0].gzip.len() as u64;
    for image in usage["per_image"].as_array().unwrap() {
        assert_eq!(image["shared"].as_u64().unwrap(), base_size, "{image}");
    }
    let table = ferry.run(&["df", "-v"]).ok();
    assert!(table.stdout.contains("SHARED SIZE") && table.stdout.contains("UNIQUE SIZE"));

    let inspect = json(
        &ferry
            .run(&["inspect", &format!("{}/team/app:1.0", registry.host)])
            .ok(),
    );
    assert_eq!(inspect[0]["Id"], fixture.app1.config_digest());
    assert_eq!(inspect[0]["Config"]["config"]["Labels"]["test"], "app1");
    let history = ferry
        .run(&["history", &format!("{}/team/app:2.0", registry.host)])
        .ok();
    assert!(
        history.stdout.contains("layer 1 of app2") && history.stdout.contains("CMD [\"sh\"]"),
        "{}",
        history.stdout
    );

    // An orphan blob is garbage: verify reports it, gc removes it.
    let orphan = ferry.store.join("blobs/sha256").join("0".repeat(64));
    std::fs::write(&orphan, b"junk").unwrap();
    let report = json(&ferry.run(&["--json", "verify"]).ok());
    assert_eq!(report["unreferenced"], 1);
    let gc = ferry.run(&["gc"]).ok();
    assert!(
        gc.stdout.contains("Removed 1 unreferenced blob"),
        "{}",
        gc.stdout
    );
    assert!(!orphan.exists());

    // A flipped byte in a referenced blob is found by --read-data.
    let layer = fixture.app2.layers[1].digest.trim_start_matches("sha256:");
    let path = ferry.store.join("blobs/sha256").join(layer);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0xff;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&path, bytes).unwrap();
    ferry.run(&["verify"]).ok();
    let bad = ferry.run(&["verify", "--read-data"]).expect_code(1);
    assert!(bad.stdout.contains(layer), "{}", bad.stdout);
}

/// Flip one byte in the middle of a stored blob (same size: only a re-hash
/// tells).
fn rot(ferry: &Ferry, digest: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = ferry
        .store
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_corrupt_store_blob_is_named_not_retried_and_repaired_by_pull_and_load() {
    let (registry, fixture) = seeded();
    let ferry = Ferry::new();
    let image = format!("{}/team/app:1.0", registry.host);
    ferry.run(&["pull", &image]).ok();
    let layer = fixture.app1.layers[0].digest.clone();
    let path = rot(&ferry, &layer);
    // Plain verify says it did not read the data; --read-data finds the
    // rot, names the file and the image, and says how to repair.
    let plain = ferry.run(&["verify"]).ok();
    assert!(plain.stdout.contains("data not read"), "{}", plain.stdout);
    let deep = ferry.run(&["verify", "--read-data"]).expect_code(1);
    for words in [
        path.to_str().unwrap(),
        "is corrupt",
        "team/app:1.0",
        "pull or load",
    ] {
        assert!(deep.stdout.contains(words), "{words}: {}", deep.stdout);
    }
    // A push of it blames the store, not the registry, and is not retried.
    let push = ferry
        .run(&["push", &image, &format!("{}/other/app:1.0", registry.host)])
        .expect_code(1);
    assert!(
        push.stderr.contains(path.to_str().unwrap())
            && push.stderr.contains("its copy stopped there"),
        "{}",
        push.stderr
    );
    assert!(!push.stderr.contains("registry served"), "{}", push.stderr);
    assert!(
        !push.stderr.to_lowercase().contains("retry"),
        "{}",
        push.stderr
    );
    // A pull re-checks the blob it finds and replaces the bad copy.
    let pull = ferry.run(&["pull", &image]).ok();
    assert!(pull.stderr.contains("is corrupt"), "{}", pull.stderr);
    ferry.run(&["verify", "--read-data"]).ok();
    // So does a load of an archive that has it.
    let archive = ferry.dir.path().join("app.tar");
    ferry
        .run(&["save", "-o", archive.to_str().unwrap(), &image])
        .ok();
    rot(&ferry, &layer);
    ferry.run(&["load", "-i", archive.to_str().unwrap()]).ok();
    ferry.run(&["verify", "--read-data"]).ok();
}

#[test]
fn images_are_ordered_and_filtered_by_created_time_as_docker() {
    use crate::support::image::{self, Content};
    let work = tempfile::tempdir().unwrap();
    let layer = image::random_layer("a", 1_000, 3);
    // Three images built within one second, and one built a year before;
    // all loaded at once, so ferry sees them in the same second.
    let made = |label: &str, created: &str| {
        image::image(vec![layer.clone()], "amd64", label).with_created(created)
    };
    let old = made("old", "2025-06-01T00:00:00Z");
    let first = made("first", "2026-03-01T10:00:00.100Z");
    let second = made("second", "2026-03-01T10:00:00.500Z");
    let third = made("third", "2026-03-01T10:00:00.900000001Z");
    let layout = work.path().join("layout");
    let entries = [
        ("second", Content::Image(&second)),
        ("old", Content::Image(&old)),
        ("third", Content::Image(&third)),
        ("first", Content::Image(&first)),
    ];
    image::write_layout(&layout, &entries);
    let manifests: Vec<serde_json::Value> = [&second, &old, &third, &first]
        .iter()
        .zip(["second", "old", "third", "first"])
        .map(|(image, tag)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": image.digest(), "size": image.manifest.len(),
            "annotations": {"io.containerd.image.name": format!("local/app:{tag}"), "org.opencontainers.image.ref.name": tag},
        }))
        .collect();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": manifests}))
            .unwrap(),
    )
    .unwrap();
    let archive = work.path().join("app.tar");
    crate::support::tar_dir(&layout, &archive);
    let ferry = Ferry::new();
    ferry.run(&["load", "-i", archive.to_str().unwrap()]).ok();
    let tags = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["--json", "images"];
        all.extend_from_slice(args);
        json(&ferry.run(&all).ok())
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                s["name"]
                    .as_str()
                    .unwrap()
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    // Newest first by the image's created time, finer than a second.
    assert_eq!(tags(&[]), ["third", "second", "first", "old"]);
    // since/before compare created times, as docker.
    assert_eq!(
        tags(&["--filter", "since=local/app:first"]),
        ["third", "second"]
    );
    assert_eq!(
        tags(&["--filter", "before=local/app:second"]),
        ["first", "old"]
    );
    assert!(tags(&["--filter", "since=local/app:third"]).is_empty());
    // The table view keeps the same order.
    let table = ferry.run(&["images"]).ok().stdout;
    let order: Vec<&str> = table
        .lines()
        .skip(1)
        .map(|row| row.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(order, ["third", "second", "first", "old"], "{table}");
}

#[test]
fn inspect_prints_what_it_found_and_rmi_finishes_when_its_reader_goes_away() {
    let (registry, _fixture) = seeded();
    let ferry = Ferry::new();
    let image = format!("{}/team/app:1.0", registry.host);
    ferry.run(&["pull", &image]).ok();
    // As docker: the found image is printed, the missing one is an error.
    let run = ferry.run(&["inspect", &image, "nosuch:1"]).expect_code(1);
    assert_eq!(json(&run).as_array().unwrap().len(), 1, "{}", run.stdout);
    assert!(run.stderr.contains("nosuch"), "{}", run.stderr);
    // rmi with its output closed still removes every name it was given.
    let names: Vec<String> = (0..40).map(|i| format!("local/many:{i}")).collect();
    for name in &names {
        ferry.run(&["tag", &image, name]).ok();
    }
    let mut args = vec!["rmi"];
    args.extend(names.iter().map(String::as_str));
    let mut child = ferry
        .command(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let left = ferry.index_json();
    assert!(!left.contains("local/many"), "{left}");
    assert!(left.contains("team/app:1.0"));
}

#[test]
fn a_corrupt_index_says_how_to_recover_not_to_run_the_command_that_failed() {
    let (registry, _fixture) = seeded();
    let ferry = Ferry::new();
    ferry
        .run(&["pull", &format!("{}/team/app:1.0", registry.host)])
        .ok();
    std::fs::write(ferry.store.join("index.json"), b"{\"manifests\": [tru").unwrap();
    let run = ferry.run(&["verify"]).expect_code(1);
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(said.contains("index.json is corrupt"), "{said}");
    assert!(!said.contains("run `ferry verify`"), "{said}");
    assert!(said.contains("restore it"), "{said}");
}

#[test]
fn prune_says_deleted_once_per_image_after_its_names() {
    let (registry, fixture) = seeded();
    let ferry = Ferry::new();
    let image = format!("{}/team/app:1.0", registry.host);
    ferry.run(&["pull", &image]).ok();
    ferry.run(&["tag", &image, "local/a:1"]).ok();
    ferry.run(&["tag", &image, "local/b:1"]).ok();
    let pruned = ferry.run(&["prune", "-a", "-f"]).ok();
    let id = fixture.app1.config_digest();
    assert_eq!(
        pruned.stdout.matches("untagged: ").count(),
        3,
        "{}",
        pruned.stdout
    );
    assert_eq!(
        pruned.stdout.matches(&format!("deleted: {id}")).count(),
        1,
        "{}",
        pruned.stdout
    );
    let last_untag = pruned.stdout.rfind("untagged: ").unwrap();
    assert!(
        pruned.stdout.find("deleted: ").unwrap() > last_untag,
        "{}",
        pruned.stdout
    );
}

#[test]
fn a_large_image_config_is_read_for_its_platform_not_called_corrupt() {
    use crate::support::image;
    // A config of 6 MiB (a large label, as some build tools write; the
    // label is in its history too): over the old 4 MiB read limit, under
    // the 16 MiB every door accepts.
    let built = image::image(
        vec![image::random_layer("x", 1000, 3)],
        "amd64",
        &"l".repeat(3 << 20),
    );
    assert!(built.config.len() > 6 << 20);
    let work = tempfile::tempdir().unwrap();
    let archive = image::named_archive(work.path(), "big.tar", &built, "example.com/big:1");
    let ferry = Ferry::new();
    ferry.run(&["load", "-i", archive.to_str().unwrap()]).ok();
    let found = ferry
        .run(&["inspect", "--platform", "linux/amd64", "example.com/big:1"])
        .ok();
    assert!(found.stdout.contains("amd64"), "{}", found.stdout);
    let other = ferry
        .run(&["inspect", "--platform", "linux/arm64", "example.com/big:1"])
        .expect_code(1);
    assert!(
        other.stderr.contains("arm64") && !other.stderr.contains("corrupt"),
        "{}",
        other.stderr
    );
}

#[test]
fn a_missing_archive_and_a_reset_with_no_store_make_no_store() {
    let ferry = Ferry::new().with_config(
        "version = 1\n[[backup]]\nname = \"b\"\nimages = [\"localhost:1/a:1\"]\noutput = \"/tmp/never-{run}.tar\"\n",
    );
    let missing = ferry.dir.path().join("missing.tar");
    let load = ferry
        .run(&["load", "-i", missing.to_str().unwrap()])
        .expect_code(1);
    assert!(load.stderr.contains("missing.tar"), "{}", load.stderr);
    let reset = ferry.run(&["jobs", "--reset", "b"]).ok();
    assert!(reset.stdout.contains("no saved state"), "{}", reset.stdout);
    assert!(
        !ferry.store.exists(),
        "a store was made at {}",
        ferry.store.display()
    );
}
