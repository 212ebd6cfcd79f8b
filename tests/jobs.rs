//! Config-driven jobs end to end against the real registry: sync (tag
//! selection, HEAD-only re-sync, backup of overwritten tags, delete_extra),
//! retag (the semver alias table, no blob moved, never backwards), prune
//! (shared digests spared, never everything), backup (rotation, deltas,
//! restore), the daemon (catch-up, SIGTERM) and config errors.

use crate::support::image::{self, Content};
use crate::support::registry::Registry;
use crate::support::Ferry;
use std::collections::BTreeMap;

/// Push one distinct small image per tag to `repository`; returns tag → digest.
fn seed_tags(registry: &Registry, repository: &str, tags: &[&str]) -> BTreeMap<String, String> {
    let layout = tempfile::tempdir().unwrap();
    let images: Vec<(String, image::Image)> = tags
        .iter()
        .enumerate()
        .map(|(i, tag)| {
            (
                tag.to_string(),
                image::image(
                    vec![image::random_layer("f", 1000 + i, 100 + i as u64)],
                    "amd64",
                    tag,
                ),
            )
        })
        .collect();
    let entries: Vec<(&str, Content)> = images
        .iter()
        .map(|(tag, image)| (tag.as_str(), Content::Image(image)))
        .collect();
    image::write_layout(layout.path(), &entries);
    for tag in tags {
        registry.skopeo_push(layout.path(), tag, repository);
    }
    images
        .into_iter()
        .map(|(tag, image)| (tag, image.digest()))
        .collect()
}

/// The digest a registry tag points at, via `ferry --json inspect` after a pull would be heavy: use skopeo.
fn digest_of(registry: &Registry, reference: &str) -> Option<String> {
    let output = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/{reference}", registry.host))
        .output()
        .unwrap();
    output
        .status
        .success()
        .then(|| crate::support::sha256(&output.stdout))
}

fn tags_of(registry: &Registry, repository: &str, ferry: &Ferry) -> Vec<String> {
    let run = ferry.run(&["tags", &format!("{}/{repository}", registry.host)]);
    run.stdout.lines().map(str::to_owned).collect()
}

#[test]
fn sync_selects_tags_resyncs_with_heads_only_and_deletes_extras() {
    let source = Registry::start();
    let target = Registry::start();
    let digests = seed_tags(
        &source,
        "lib/app",
        &[
            "1.24.0",
            "1.25.0",
            "1.25.1",
            "1.26.0-rc1",
            "1.26.0",
            "2.0.0",
            "latest",
        ],
    );
    let config = format!(
        "version = 1\n[[sync]]\nname = \"mirror\"\nsource = \"{src}/lib/app\"\ntarget = \"{dst}/mirror/app\"\ntags = {{ include = [\"^1\\\\.\"], exclude = [\"-rc\"], semver = \">=1.25\", keep_latest = 2 }}\nbackup_overwritten = \"{{tag}}-old\"\ndelete_extra = true\n",
        src = source.host,
        dst = target.host
    );
    let ferry = Ferry::new().with_config(&config);
    let first = ferry.run(&["run"]).ok();
    assert!(
        first.stdout.contains("mirror (sync): ok, 2 changes"),
        "{}",
        first.stdout
    );
    assert_eq!(
        tags_of(&target, "mirror/app", &ferry),
        vec!["1.25.1", "1.26.0"]
    );
    assert_eq!(
        digest_of(&target, "mirror/app:1.26.0").unwrap(),
        digests["1.26.0"]
    );

    // Unchanged: only HEADs (and the tag list), no manifest or blob GETs.
    source.clear_log();
    let again = ferry.run(&["run", "mirror"]).ok();
    assert!(again.stdout.contains("0 changes"), "{}", again.stdout);
    assert_eq!(source.requests("GET", "/manifests/"), 0);
    assert_eq!(source.requests("GET", "/blobs/"), 0);
    assert!(source.requests("HEAD", "/manifests/") >= 2);

    // A moved tag is backed up before it is overwritten; a tag that left
    // the selection is deleted from the target.
    let layout = tempfile::tempdir().unwrap();
    let moved = image::image(vec![image::random_layer("g", 777, 999)], "amd64", "moved");
    image::write_layout(
        layout.path(),
        &[
            ("1.26.0", Content::Image(&moved)),
            ("1.27.0", Content::Image(&moved)),
        ],
    );
    source.skopeo_push(layout.path(), "1.26.0", "lib/app");
    source.skopeo_push(layout.path(), "1.27.0", "lib/app");
    let third = ferry.run(&["--json", "run"]).ok();
    let report: serde_json::Value = serde_json::from_str(&third.stdout).unwrap();
    let changes = report[0]["changes"].to_string();
    assert!(
        changes.contains("1.26.0-old") && changes.contains("deleted"),
        "{changes}"
    );
    assert_eq!(
        tags_of(&target, "mirror/app", &ferry),
        vec!["1.26.0", "1.26.0-old", "1.27.0"]
    );
    assert_eq!(
        digest_of(&target, "mirror/app:1.26.0-old").unwrap(),
        digests["1.26.0"]
    );
    assert_eq!(
        digest_of(&target, "mirror/app:1.26.0").unwrap(),
        moved.digest()
    );

    // Dry run changes nothing.
    let dry = Ferry::new().with_config(&config.replace("mirror/app", "dry/app"));
    let run = dry.run(&["run", "--dry-run"]).ok();
    assert!(run.stdout.contains("would copy"), "{}", run.stdout);
    assert!(tags_of(&target, "dry/app", &dry).is_empty());
    // Nor is it remembered as a run: no state, no LAST RUN, and where no
    // store was, none is made (it reads as empty).
    assert!(
        !dry.store.exists(),
        "a dry run created {}",
        dry.store.display()
    );
    assert!(run.stderr.contains("no store at"), "{}", run.stderr);
    let jobs = dry.run(&["jobs"]).ok();
    assert!(!jobs.stdout.contains(" ok"), "{}", jobs.stdout);
}

#[test]
fn retag_keeps_semver_aliases_without_moving_blobs() {
    let registry = Registry::start();
    let digests = seed_tags(
        &registry,
        "team/app",
        &[
            "1.9.0",
            "2.0.0",
            "2.1.0",
            "2.1.10",
            "2.2.0-rc1",
            "2.1.10-alpine",
        ],
    );
    let ferry = Ferry::new().with_config(&format!(
        "version = 1\n[[retag]]\nname = \"aliases\"\nrepository = \"{}/team/app\"\naliases = [\"minor\", \"major\", \"latest\"]\n",
        registry.host
    ));
    registry.clear_log();
    ferry.run(&["run"]).ok();
    assert_eq!(
        registry.requests("POST", "/blobs/uploads"),
        0,
        "retag uploaded blobs"
    );
    assert_eq!(registry.requests("PATCH", "/blobs/"), 0);
    for (alias, tag) in [
        ("2", "2.1.10"),
        ("2.1", "2.1.10"),
        ("latest", "2.1.10"),
        ("2.1-alpine", "2.1.10-alpine"),
        ("1", "1.9.0"),
        ("2.0", "2.0.0"),
    ] {
        assert_eq!(
            digest_of(&registry, &format!("team/app:{alias}")).unwrap(),
            digests[tag],
            "{alias}"
        );
    }
    assert!(
        digest_of(&registry, "team/app:2.2").is_none(),
        "a pre-release moved an alias"
    );
    // A second run changes nothing.
    let again = ferry.run(&["run"]).ok();
    assert!(again.stdout.contains("0 changes"), "{}", again.stdout);
}

#[test]
fn retag_in_the_store_never_moves_an_alias_backwards() {
    let registry = Registry::start();
    let digests = seed_tags(&registry, "team/app", &["2.1.0", "2.1.10"]);
    let ferry = Ferry::new().with_config(&format!(
        "version = 1\n[[retag]]\nname = \"aliases\"\nrepository = \"store/{}/team/app\"\naliases = [\"minor\"]\n",
        registry.host
    ));
    ferry
        .run(&["pull", "--all-tags", &format!("{}/team/app", registry.host)])
        .ok();
    ferry.run(&["run"]).ok();
    let alias = format!("{}/team/app:2.1", registry.host);
    let id = |f: &Ferry| {
        serde_json::from_str::<serde_json::Value>(&f.run(&["inspect", &alias]).ok().stdout).unwrap()
            [0]["Digest"]
            .clone()
    };
    assert_eq!(id(&ferry), digests["2.1.10"]);
    // 2.1.10's own tag goes away; the alias must not fall back to 2.1.0.
    ferry
        .run(&["rmi", &format!("{}/team/app:2.1.10", registry.host)])
        .ok();
    let run = ferry.run(&["run"]).ok();
    assert!(run.stdout.contains("backwards"), "{}", run.stdout);
    assert_eq!(id(&ferry), digests["2.1.10"]);
}

#[test]
fn prune_spares_shared_digests_and_refuses_to_empty_a_repository() {
    let registry = Registry::start();
    let digests = seed_tags(&registry, "ci/app", &["1.0.0", "1.1.0", "1.2.0"]);
    // `stable` shares 1.0.0's digest.
    let ferry = Ferry::new();
    ferry
        .run(&[
            "copy",
            &format!("{}/ci/app:1.0.0", registry.host),
            &format!("{}/ci/app:stable", registry.host),
        ])
        .ok();
    let ferry = ferry.with_config(&format!(
        "version = 1\n[[prune]]\nname = \"old\"\nrepository = \"{host}/ci/app\"\ntags = {{ include = [\"^1\\\\.\"] }}\nkeep_latest = 1\n[[prune]]\nname = \"aged\"\nrepository = \"{host}/ci/app\"\nolder_than = \"30d\"\n[[prune]]\nname = \"everything\"\nrepository = \"{host}/ci/app\"\ntags = {{ include = [\"^[0-9a-z]\"] }}\n",
        host = registry.host
    ));
    let aged = ferry.run(&["run", "aged"]).ok();
    assert!(
        aged.stdout.contains("0 changes"),
        "first seen now: nothing is 30 days old\n{}",
        aged.stdout
    );
    let dry = ferry.run(&["run", "old", "--dry-run"]).ok();
    assert!(
        dry.stdout.contains("would delete") && dry.stdout.contains("1.1.0"),
        "{}",
        dry.stdout
    );
    assert_eq!(tags_of(&registry, "ci/app", &ferry).len(), 4);
    let run = ferry.run(&["run", "old"]).ok();
    assert!(
        run.stdout
            .contains("1.0.0 kept: its digest is shared with kept tag stable"),
        "{}",
        run.stdout
    );
    assert_eq!(
        tags_of(&registry, "ci/app", &ferry),
        vec!["1.0.0", "1.2.0", "stable"]
    );
    assert_eq!(
        digest_of(&registry, "ci/app:stable").unwrap(),
        digests["1.0.0"]
    );
    let refused = ferry.run(&["run", "everything"]).expect_code(1);
    assert!(refused.stdout.contains("allow_empty"), "{}", refused.stdout);
    assert_eq!(tags_of(&registry, "ci/app", &ferry).len(), 3);
}

#[test]
fn backup_rotates_keeps_chains_and_restores() {
    let registry = Registry::start();
    seed_tags(&registry, "team/app", &["1.0", "2.0"]);
    let ferry = Ferry::new();
    let out = ferry.dir.path().join("backups");
    let ferry = ferry.with_config(&format!(
        "version = 1\n[[backup]]\nname = \"nightly\"\nimages = [\"{host}/team/app:*\"]\noutput = \"{out}/{{job}}-{{run}}.tar\"\nkeep = 3\nincremental = true\nfull_every = 2\n",
        host = registry.host,
        out = out.display()
    ));
    for _ in 0..5 {
        ferry.run(&["run"]).ok();
    }
    // Runs: 1 full, 2 delta, 3 full, 4 delta, 5 full. keep = 3 removes the
    // oldest whole chain (1, 2) once three archives remain without it.
    let files = file_names(&out);
    assert_eq!(
        files,
        vec!["nightly-3.tar", "nightly-4.tar", "nightly-5.tar"]
    );
    // Restore: load the chain (full, then delta) into a fresh store and push.
    let restored = Ferry::new();
    restored
        .run(&["load", "-i", out.join("nightly-3.tar").to_str().unwrap()])
        .ok();
    restored
        .run(&["load", "-i", out.join("nightly-4.tar").to_str().unwrap()])
        .ok();
    pushes_back_whole(&restored, &registry, "2.0");
    let jobs = ferry.run(&["jobs"]).ok();
    assert!(
        jobs.stdout.contains("nightly") && jobs.stdout.contains("ok"),
        "{}",
        jobs.stdout
    );
}

#[test]
fn daemon_catches_up_once_and_stops_on_sigterm() {
    let registry = Registry::start();
    seed_tags(&registry, "team/app", &["1.0"]);
    let ferry = Ferry::new().with_config(&format!(
        "version = 1\n[[sync]]\nname = \"yearly\"\nschedule = \"0 0 1 1 *\"\nsource = \"{host}/team/app\"\ntarget = \"store\"\n",
        host = registry.host
    ));
    // Pretend the job last ran long ago: one catch-up run is due now.
    let jobs_dir = ferry.store.join("ferry/jobs");
    std::fs::create_dir_all(&jobs_dir).unwrap();
    std::fs::write(jobs_dir.join("yearly.json"), r#"{"last_run": 1000000000}"#).unwrap();
    let mut daemon = ferry
        .command(&["daemon"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = daemon.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let report = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.starts_with("yearly"))
        .expect("one catch-up run");
    assert!(report.contains("ok, 1 change"), "{report}");
    std::process::Command::new("kill")
        .arg(daemon.id().to_string())
        .status()
        .unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(daemon.wait().unwrap().success());
    assert!(
        rest.iter().all(|l| !l.starts_with("yearly")),
        "ran more than once: {rest:?}"
    );
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(jobs_dir.join("yearly.json")).unwrap()).unwrap();
    assert!(state["last_run"].as_i64().unwrap() > 1_000_000_000);
}

#[test]
fn a_sync_or_backup_of_a_repository_that_is_not_there_fails_naming_it() {
    let registry = Registry::start();
    seed_tags(&registry, "team/app", &["1.0"]);
    let out = tempfile::tempdir().unwrap();
    let ferry = Ferry::new().with_config(&format!(
        "version = 1\n[[sync]]\nname = \"gone\"\nsource = \"{host}/team/nothere\"\ntarget = \"store\"\n[[backup]]\nname = \"lost\"\nimages = [\"{host}/team/nothere:*\"]\noutput = \"{}/b.tar\"\n",
        out.path().display(),
        host = registry.host
    ));
    for job in ["gone", "lost"] {
        let run = ferry.run(&["run", job]).expect_code(1);
        let text = format!("{}{}", run.stdout, run.stderr);
        assert!(text.contains("team/nothere"), "{job}: {text}");
        assert!(!text.contains(": ok"), "{job}: {text}");
    }
}

#[test]
fn a_job_never_overlaps_itself() {
    let registry = Registry::start();
    seed_tags(&registry, "team/app", &["1.0"]);
    let ferry = Ferry::new().with_config(&format!(
        "version = 1\n[[sync]]\nname = \"busy\"\nsource = \"{}/team/app\"\ntarget = \"store\"\n",
        registry.host
    ));
    ferry.init_store();
    let jobs_dir = ferry.store.join("ferry/jobs");
    std::fs::create_dir_all(&jobs_dir).unwrap();
    // Another run holds the job's lock.
    let held = std::fs::File::create(jobs_dir.join("busy.lock")).unwrap();
    held.lock().unwrap();
    // Skipped is not done: exit 3, and the summary counts it as skipped.
    let run = ferry.run(&["run"]).expect_code(3);
    assert!(
        run.stdout.contains("1 job: 0 ok, 0 failed, 1 skipped"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("busy (sync): skipped"),
        "{}",
        run.stdout
    );
    assert!(!ferry.index_json().contains("team/app"));
    drop(held);
    let run = ferry.run(&["run"]).ok();
    assert!(
        run.stdout.contains("busy (sync): ok, 1 change"),
        "{}",
        run.stdout
    );
}

#[test]
fn config_check_names_line_and_column() {
    let cases = [
        ("[[sync]]\nname = \"a\"\nsource = \"r.example/app\"\ntarget = \"store\"\ntags = { include = [\"(\"] }\n", ":6:", "bad regex"),
        ("[[sync]]\nname = \"a\"\nsource = \"r.example/app\"\ntarget = \"store\"\ntags = { semver = \">=x\" }\n", ":6:", "bad semver"),
        ("[[prune]]\nname = \"p\"\nschedule = \"61 * * * *\"\nrepository = \"store\"\nkeep_latest = 3\n", ":4:", "outside"),
        ("[[retag]]\nname = \"x\"\nrepository = \"r.example/app\"\naliases = [\"minor\"]\n[[retag]]\nname = \"x\"\nrepository = \"r.example/app\"\naliases = [\"major\"]\n", ":7:", "second job"),
        ("[[backup]]\nname = \"b\"\nimages = [\"r.example/app:*\"]\noutput = \"/b.tar\"\nkeep = 2\n", ":5:", "overwrite"),
        ("[[sync]]\nname = \"a\"\nsorce = \"x\"\n", ":4:", "sorce"),
        ("[[backup]]\nname = \"b\"\nimages = [\"r.example/app:*\"]\noutput = \"s3://backups/a#{run}.tar\"\n", ":5:", "key may not"),
        ("[state]\nurl = \"s3://state\"\nlocking = \"optimistic\"\n", ":4:", "shards-only"),
        ("[object_store]\npart_size = \"1MiB\"\n", ":3:", "5 MiB minimum"),
        // An include every tag passes narrows nothing.
        ("[[prune]]\nname = \"p\"\nrepository = \"store\"\ntags = { include = [\".*\"] }\nkeep_latest = 0\n", ":6:", "every tag"),
    ];
    for (body, position, words) in cases {
        let ferry = Ferry::new().with_config(&format!("version = 1\n{body}"));
        let run = ferry.run(&["config", "check"]).expect_code(2);
        assert!(
            run.stderr.contains(&format!("ferry.toml{position}")) && run.stderr.contains(words),
            "{body}\n{}",
            run.stderr
        );
    }
    let good = Ferry::new().with_config("version = 1\n[[prune]]\nname = \"p\"\nrepository = \"store\"\nkeep_latest = 3\nschedule = \"@daily\"\n");
    assert!(good
        .run(&["config", "check"])
        .ok()
        .stdout
        .contains("OK, 1 job: p (prune)"));
}

#[test]
fn sync_defers_below_the_rate_limit_floor_without_pulling() {
    let fixture = crate::round_trip::fixture();
    let fake = crate::support::fake::FakeRegistry::start(
        &fixture.app1,
        "1.0",
        crate::support::fake::Faults {
            rate_limit_remaining: Some(3),
            ..Default::default()
        },
    );
    let ferry = Ferry::new().with_config(&format!(
        "version = 1\n[[sync]]\nname = \"hub\"\nsource = \"{}/app\"\ntarget = \"store\"\nrate_limit_floor = 5\n",
        fake.host
    ));
    let run = ferry.run(&["--json", "run"]).expect_code(3);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report[0]["status"], "deferred", "{}", run.stdout);
    assert!(
        report[0]["notes"].to_string().contains("rate limit has 3"),
        "{}",
        run.stdout
    );
    assert_eq!(fake.count("GET", "/manifests/"), 0, "no pull was spent");
    assert!(!ferry.index_json().contains("app:1.0"));
}

#[test]
fn a_corrupt_job_state_file_is_an_error_not_an_empty_state() {
    let ferry = Ferry::new().with_config(
        "version = 1\n[[prune]]\nname = \"tidy\"\nrepository = \"store\"\nolder_than = \"30d\"\n",
    );
    let jobs_dir = ferry.store.join("ferry/jobs");
    std::fs::create_dir_all(&jobs_dir).unwrap();
    let state = jobs_dir.join("tidy.json");
    std::fs::write(&state, b"{\"backups\": [trunc").unwrap();
    let run = ferry.run(&["run", "tidy"]).expect_code(1);
    let output = format!("{}{}", run.stdout, run.stderr);
    assert!(
        output.contains("tidy.json") && output.contains("ferry jobs --reset tidy"),
        "{output}"
    );
    // The file is left for the user to look at, not overwritten.
    assert_eq!(std::fs::read(&state).unwrap(), b"{\"backups\": [trunc");
    let listed = ferry.run(&["jobs"]).ok();
    assert!(
        listed.stdout.contains("state-unreadable"),
        "{}",
        listed.stdout
    );
    ferry.run(&["jobs", "--reset", "tidy"]).ok();
    assert!(!state.exists());
    ferry.run(&["run", "tidy"]).ok();
}

/// The same sync/prune job tables against a registry and the store: one
/// repository interface serves both, so both must behave alike.
#[test]
fn sync_with_delete_extra_and_prune_behave_alike_in_a_registry_and_the_store() {
    let source = Registry::start();
    seed_tags(&source, "team/app", &["1.0.0", "1.1.0", "2.0.0"]);
    let target = Registry::start();
    for (label, destination, store_prefix) in [
        ("registry", format!("{}/mirror/app", target.host), ""),
        ("store", "store".to_owned(), "store/"),
    ] {
        let ferry = Ferry::new();
        let write = |semver: &str| {
            format!(
                "version = 1\n[[sync]]\nname = \"mirror\"\nsource = \"{src}/team/app\"\ntarget = \"{destination}\"\ntags = {{ semver = \"{semver}\" }}\ndelete_extra = true\n[[prune]]\nname = \"tidy\"\nrepository = \"{prune}\"\nkeep_latest = 1\n",
                src = source.host,
                prune = if store_prefix.is_empty() {
                    destination.clone()
                } else {
                    format!("store/{}/team/app", source.host)
                },
            )
        };
        let ferry = ferry.with_config(&write(">=1.0"));
        ferry.run(&["run", "mirror"]).ok();
        let listed = |ferry: &Ferry| -> Vec<String> {
            if store_prefix.is_empty() {
                tags_of(&target, "mirror/app", ferry)
            } else {
                let json: serde_json::Value =
                    serde_json::from_str(&ferry.run(&["--json", "images"]).ok().stdout).unwrap();
                let mut tags: Vec<String> = json
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|i| i["name"].as_str())
                    .filter_map(|n| n.rsplit_once(':').map(|(_, tag)| tag.to_owned()))
                    .collect();
                tags.sort();
                tags
            }
        };
        assert_eq!(listed(&ferry), ["1.0.0", "1.1.0", "2.0.0"], "{label}");
        // The selection narrows: the tag that left it is deleted.
        let ferry = ferry.with_config(&write(">=1.1"));
        let run = ferry.run(&["run", "mirror"]).ok();
        assert!(run.stdout.contains("deleted"), "{label}: {}", run.stdout);
        assert_eq!(listed(&ferry), ["1.1.0", "2.0.0"], "{label}");
        // Prune keeps the newest version only.
        ferry.run(&["run", "tidy"]).ok();
        assert_eq!(listed(&ferry), ["2.0.0"], "{label}");
    }
}

/// A restored store verifies and pushes `team/app:TAG` with its digest kept.
fn pushes_back_whole(restored: &Ferry, registry: &Registry, tag: &str) {
    restored.run(&["verify", "--read-data"]).ok();
    let target = Registry::start();
    restored
        .run(&[
            "push",
            &format!("{}/team/app:{tag}", registry.host),
            &format!("{}/restored/app:{tag}", target.host),
        ])
        .ok();
    assert_eq!(
        digest_of(&target, &format!("restored/app:{tag}")),
        digest_of(registry, &format!("team/app:{tag}"))
    );
}

/// The names in a directory, sorted.
fn file_names(dir: &std::path::Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    files
}

/// The blob files an archive holds.
fn archive_blobs(path: &std::path::Path) -> Vec<String> {
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .filter(|p| p.starts_with("blobs/sha256/") && p.len() > "blobs/sha256/".len())
        .collect()
}

#[test]
fn a_delta_leaves_out_the_whole_chain_and_a_reset_chain_still_rotates() {
    let registry = Registry::start();
    seed_tags(&registry, "team/app", &["1.0", "2.0"]);
    let ferry = Ferry::new();
    let out = ferry.dir.path().join("backups");
    std::fs::create_dir(&out).unwrap();
    let ferry = ferry.with_config(&format!(
        "version = 1\n[[backup]]\nname = \"nightly\"\nimages = [\"{host}/team/app:*\"]\noutput = \"{out}/{{job}}-{{run}}.tar\"\nkeep = 2\nincremental = true\nfull_every = 10\n",
        host = registry.host,
        out = out.display()
    ));
    ferry.run(&["run"]).ok();
    let full = archive_blobs(&out.join("nightly-1.tar"));
    assert_eq!(full.len(), 6, "two images of three blobs: {full:?}");
    // Unchanged runs: each delta holds no blob the chain has.
    ferry.run(&["run"]).ok();
    ferry.run(&["run"]).ok();
    assert_eq!(
        archive_blobs(&out.join("nightly-2.tar")),
        Vec::<String>::new()
    );
    assert_eq!(
        archive_blobs(&out.join("nightly-3.tar")),
        Vec::<String>::new()
    );
    // A new tag sharing 1.0's layer: only its config and manifest are new.
    seed_tags(&registry, "team/app", &["3.0"]);
    let run = ferry.run(&["run"]).ok();
    assert!(run.stdout.contains("delta"), "{}", run.stdout);
    assert_eq!(archive_blobs(&out.join("nightly-4.tar")).len(), 2);
    // Restore: the chain in order into a fresh store has every image whole.
    let restored = Ferry::new();
    for n in 1..=4 {
        let path = out.join(format!("nightly-{n}.tar"));
        restored.run(&["load", "-i", path.to_str().unwrap()]).ok();
    }
    pushes_back_whole(&restored, &registry, "3.0");
    // A reset starts a new chain, says the archives stay, and the old
    // chain still rotates whole: no delta outlives the archives it needs.
    let reset = ferry.run(&["jobs", "--reset", "nightly"]).ok();
    assert!(
        reset.stdout.contains("archives stay") && reset.stdout.contains("keep = 2"),
        "{}",
        reset.stdout
    );
    let run = ferry.run(&["run"]).ok();
    assert!(run.stdout.contains("full archive"), "{}", run.stdout);
    // Run numbers go on after the old archives (none is overwritten), and
    // the old chain stays while fewer than `keep` archives follow it.
    let files = file_names(&out);
    let old_chain = [
        "nightly-1.tar",
        "nightly-2.tar",
        "nightly-3.tar",
        "nightly-4.tar",
    ];
    assert_eq!(
        files,
        [&old_chain[..], &["nightly-5.tar"]].concat(),
        "{}",
        run.stdout
    );
    let run = ferry.run(&["run"]).ok();
    assert!(run.stdout.contains("delta"), "{}", run.stdout);
    assert_eq!(
        file_names(&out),
        ["nightly-5.tar", "nightly-6.tar"],
        "{}",
        run.stdout
    );
}

#[test]
fn a_changed_output_starts_a_new_chain_where_it_points() {
    let registry = Registry::start();
    seed_tags(&registry, "team/app", &["1.0"]);
    let ferry = Ferry::new();
    let root = ferry.dir.path().to_owned();
    let config = |dir: &str| {
        format!(
            "version = 1\n[[backup]]\nname = \"nightly\"\nimages = [\"{host}/team/app:*\"]\noutput = \"{out}/{dir}/{{job}}-{{run}}.tar\"\nincremental = true\n",
            host = registry.host,
            out = root.display()
        )
    };
    let ferry = ferry.with_config(&config("a"));
    ferry.run(&["run"]).ok();
    let ferry = ferry.with_config(&config("b"));
    let run = ferry.run(&["run"]).ok();
    assert!(
        run.stdout.contains("full archive") && run.stdout.contains("output changed"),
        "{}",
        run.stdout
    );
    // The new directory's archive restores alone.
    let files = file_names(&root.join("b"));
    assert_eq!(files, ["nightly-2.tar"]);
    assert_eq!(archive_blobs(&root.join("b").join(&files[0])).len(), 3);
}

#[test]
fn a_prune_of_the_whole_store_matches_tag_filters_against_tags() {
    let registry = Registry::start();
    seed_tags(&registry, "team/app", &["1.0.0", "1.1.0", "2.0.0"]);
    let ferry = Ferry::new().with_config(
        "version = 1\n[[prune]]\nname = \"old-ones\"\nrepository = \"store\"\ntags = { include = [\"^1\\\\.\"] }\nkeep_latest = 0\n",
    );
    ferry
        .run(&["pull", "-a", &format!("{}/team/app", registry.host)])
        .ok();
    let run = ferry.run(&["run", "old-ones"]).ok();
    assert!(run.stdout.contains("2 changes"), "{}", run.stdout);
    let index = ferry.index_json();
    assert!(
        !index.contains("app:1.0.0") && !index.contains("app:1.1.0") && index.contains("app:2.0.0"),
        "{index}"
    );
}

#[test]
fn parallel_images_of_one_run_never_say_another_ferry_holds_the_store() {
    let registry = Registry::start();
    let tags = ["1", "2", "3", "4", "5", "6", "7", "8"];
    seed_tags(&registry, "team/app", &tags);
    let ferry = Ferry::new().with_config(&format!(
        "version = 1\n[defaults]\nparallel_images = 8\n[[sync]]\nname = \"all\"\nsource = \"{}/team/app\"\ntarget = \"store\"\n",
        registry.host
    ));
    let run = ferry.run(&["run"]).ok();
    assert!(run.stdout.contains("8 changes"), "{}", run.stdout);
    assert!(!run.stderr.contains("another ferry"), "{}", run.stderr);
}

#[test]
fn a_delta_never_replaces_an_archive_of_its_own_chain() {
    let registry = Registry::start();
    seed_tags(&registry, "team/app", &["1.0", "2.0"]);
    let ferry = Ferry::new();
    let out = ferry.dir.path().join("backups");
    let ferry = ferry.with_config(&format!(
        "version = 1\n[[backup]]\nname = \"daily\"\nimages = [\"{host}/team/app:*\"]\noutput = \"{out}/{{job}}-{{date}}.tar\"\nincremental = true\n",
        host = registry.host,
        out = out.display()
    ));
    ferry.run(&["run"]).ok();
    // The same day again: the file is the chain's base, so a full archive.
    let run = ferry.run(&["run"]).ok();
    assert!(run.stdout.contains("full archive"), "{}", run.stdout);
    let files = file_names(&out);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(archive_blobs(&out.join(&files[0])).len(), 6);
}

#[test]
fn a_configured_platform_takes_a_single_platform_image_as_it_is() {
    // A job's `platforms` of one is preferred, not insisted on: an amd64
    // image under `platforms = ["linux/arm64"]` is copied as it is, with
    // its digest, and the jobs succeed (only a flag refuses it).
    let source = Registry::start();
    let digests = seed_tags(&source, "team/app", &["1.0"]);
    let target = Registry::start();
    let ferry = Ferry::new();
    let out = ferry.dir.path().join("bk");
    let ferry = ferry.with_config(&format!(
        "version = 1\n[[sync]]\nname = \"arm\"\nsource = \"{src}/team/app\"\ntarget = \"{dst}/arm/app\"\nplatforms = [\"linux/arm64\"]\n[[backup]]\nname = \"bk\"\nimages = [\"{src}/team/app:*\"]\noutput = \"{out}-{{run}}.tar\"\nplatforms = [\"linux/arm64\"]\n",
        src = source.host,
        dst = target.host,
        out = out.display()
    ));
    let run = ferry.run(&["run"]).ok();
    assert!(run.stdout.contains("2 jobs: 2 ok"), "{}", run.stdout);
    assert_eq!(
        digest_of(&target, "arm/app:1.0").as_ref(),
        Some(&digests["1.0"])
    );
    // A flag insists: the same image with --platform linux/arm64 is refused.
    let copy = ferry
        .run(&[
            "copy",
            "--platform",
            "linux/arm64",
            &format!("{}/team/app:1.0", source.host),
            &format!("{}/flag/app:1.0", target.host),
        ])
        .expect_code(1);
    assert!(copy.stderr.contains("linux/amd64"), "{}", copy.stderr);
}

#[test]
fn archives_a_lost_state_forgot_rotate_together_so_no_delta_loses_its_base() {
    let registry = Registry::start();
    seed_tags(&registry, "team/app", &["1.0"]);
    let ferry = Ferry::new();
    let out = ferry.dir.path().join("backups");
    std::fs::create_dir(&out).unwrap();
    let ferry = ferry.with_config(&format!(
        "version = 1\n[[backup]]\nname = \"bk\"\nimages = [\"{host}/team/app:*\"]\noutput = \"{out}/bk-{{run}}.tar\"\nkeep = 2\nincremental = true\n",
        host = registry.host,
        out = out.display()
    ));
    ferry.run(&["run"]).ok();
    ferry.run(&["run"]).ok();
    // The state is lost (deleted by hand): bk-1 (full) and bk-2 (its
    // delta) are archives nobody remembers.
    std::fs::remove_file(ferry.store.join("ferry/jobs/bk.json")).unwrap();
    let run = ferry.run(&["run"]).ok();
    assert!(run.stdout.contains("full archive"), "{}", run.stdout);
    assert_eq!(
        file_names(&out),
        ["bk-1.tar", "bk-2.tar", "bk-3.tar"],
        "a full archive went while a delta that may need it stayed: {}",
        run.stdout
    );
    // Once `keep` archives follow them, the two go together.
    let run = ferry.run(&["run"]).ok();
    assert_eq!(file_names(&out), ["bk-3.tar", "bk-4.tar"], "{}", run.stdout);
}

#[test]
fn a_chain_archive_cut_short_is_no_deltas_base() {
    let registry = Registry::start();
    seed_tags(&registry, "team/app", &["1.0"]);
    let ferry = Ferry::new();
    let out = ferry.dir.path().join("backups");
    std::fs::create_dir(&out).unwrap();
    let ferry = ferry.with_config(&format!(
        "version = 1\n[[backup]]\nname = \"bk\"\nimages = [\"{host}/team/app:*\"]\noutput = \"{out}/bk-{{run}}.tar\"\nincremental = true\n",
        host = registry.host,
        out = out.display()
    ));
    ferry.run(&["run"]).ok();
    let base = out.join("bk-1.tar");
    let size = std::fs::metadata(&base).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(&base)
        .unwrap()
        .set_len(size / 2)
        .unwrap();
    let run = ferry.run(&["run"]).ok();
    assert!(
        run.stdout.contains("full archive") && run.stdout.contains("cut short"),
        "{}",
        run.stdout
    );
    assert_eq!(archive_blobs(&out.join("bk-2.tar")).len(), 3);
}
