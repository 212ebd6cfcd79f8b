//! Sync at scale: images in parallel (never more than `parallel_images`,
//! never more requests to a host than `max_connections`), one failing tag
//! reported while the others are synced, repository wildcards through the
//! `_catalog`, a stop on SIGTERM with images in flight, and catalogs that
//! loop, overflow or list invalid names.

use crate::round_trip::fixture;
use crate::support::fake::{Catalog, FakeRegistry, Faults};
use crate::support::image;
use crate::support::registry::Registry;
use crate::support::{sha256, Ferry};

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// The job reports of `ferry --json run` (any exit code).
fn run_reports(ferry: &Ferry, extra: &[&str]) -> (i32, Vec<serde_json::Value>) {
    let mut args = vec!["--json", "run"];
    args.extend_from_slice(extra);
    let run = ferry.run(&args);
    let reports: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", run.stdout, run.stderr));
    (run.code, reports.as_array().unwrap().clone())
}

/// `image → result` of one report's per-image entries.
fn results(report: &serde_json::Value) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = report["images"]
        .as_array()
        .map(|images| {
            images
                .iter()
                .map(|i| {
                    (
                        i["image"].as_str().unwrap().to_owned(),
                        i["result"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    all.sort();
    all
}

/// An image and `tags` that all name it, served by a fake with `faults`.
fn fake_with_tags(tags: &[&str], mut faults: Faults) -> (FakeRegistry, image::Image) {
    let built = image::image(
        vec![image::random_layer("scale", 300_000, 51)],
        "amd64",
        "scale",
    );
    for tag in tags {
        faults
            .extra_manifests
            .push(((*tag).to_owned(), MANIFEST.into(), built.manifest.clone()));
    }
    (FakeRegistry::start(&built, "1.0", faults), built)
}

#[test]
fn one_failing_tag_is_reported_and_the_rest_are_synced() {
    // 2.0's manifest names a config the registry does not have.
    let broken = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(b"gone"), "size": 4},
        "layers": [],
    }))
    .unwrap();
    let (fake, built) = fake_with_tags(
        &[],
        Faults {
            extra_manifests: vec![("2.0".into(), MANIFEST.into(), broken)],
            ..Faults::default()
        },
    );
    let fixture = fixture();
    let real = Registry::start();
    real.skopeo_push(fixture.layout.path(), "1.0", "team/tool");
    let target = Registry::start();
    let ferry = Ferry::new().with_config(&format!(
        "version = 1\n[[sync]]\nname = \"many\"\nsource = [\"{}/app\", \"{}/team/tool\"]\ntarget = \"{}/mirror\"\n",
        fake.host, real.host, target.host
    ));
    let (code, reports) = run_reports(&ferry, &[]);
    assert_eq!(code, 1);
    let report = &reports[0];
    assert_eq!(report["status"], "failed");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("app:2.0") && error.contains("1 of 3"),
        "{error}"
    );
    let sorted = |mut pairs: Vec<(String, String)>| {
        pairs.sort();
        pairs
    };
    assert_eq!(
        results(report),
        sorted(vec![
            (format!("{}/app:1.0", fake.host), "copied".to_owned()),
            (format!("{}/app:2.0", fake.host), "failed".to_owned()),
            (format!("{}/team/tool:1.0", real.host), "copied".to_owned()),
        ])
    );
    assert_eq!(sha256(&target.skopeo_raw("mirror/app:1.0")), built.digest());
    assert_eq!(
        sha256(&target.skopeo_raw("mirror/tool:1.0")),
        fixture.app1.digest()
    );
    // The next run retries the failed tag only: the others are HEADs.
    let gets_before = fake.count("GET", "/manifests/1.0");
    let (code, reports) = run_reports(&ferry, &[]);
    assert_eq!(code, 1);
    assert_eq!(
        results(&reports[0]),
        sorted(vec![
            (format!("{}/app:1.0", fake.host), "unchanged".to_owned()),
            (format!("{}/app:2.0", fake.host), "failed".to_owned()),
            (
                format!("{}/team/tool:1.0", real.host),
                "unchanged".to_owned()
            ),
        ])
    );
    assert_eq!(fake.count("GET", "/manifests/1.0"), gets_before);
    assert!(fake.count("GET", "/manifests/2.0") >= 2);
}

#[test]
fn wildcards_mirror_every_repository_under_a_prefix() {
    let fixture = fixture();
    let source = Registry::start();
    for repository in [
        "team/a/app",
        "team/b/app",
        "team/b/deep/app",
        "team/solo",
        "other/x",
    ] {
        source.skopeo_push(fixture.layout.path(), "1.0", repository);
    }
    let target = Registry::start();
    let ferry = Ferry::new().with_config(&format!(
        "version = 1\n[[sync]]\nname = \"deep\"\nsource = \"{src}/team/**\"\ntarget = \"{dst}/mirror/team\"\nrepositories = {{ exclude = [\"^team/b/deep\"] }}\n[[sync]]\nname = \"one-level\"\nsource = \"{src}/team/*\"\ntarget = \"{dst}/one\"\n",
        src = source.host,
        dst = target.host
    ));
    ferry.run(&["run"]).ok();
    for present in [
        "mirror/team/a/app",
        "mirror/team/b/app",
        "mirror/team/solo",
        "one/solo",
    ] {
        assert_eq!(
            sha256(&target.skopeo_raw(&format!("{present}:1.0"))),
            fixture.app1.digest(),
            "{present}"
        );
    }
    for absent in [
        "mirror/team/b/deep/app",
        "mirror/other/x",
        "one/a/app",
        "one/app",
    ] {
        assert!(
            target.skopeo_raw_opt(&format!("{absent}:1.0")).is_none(),
            "{absent}"
        );
    }
    // Listed sources that would land on one target path are refused.
    let clash = Ferry::new().with_config(&format!(
        "version = 1\n[[sync]]\nname = \"clash\"\nsource = [\"{src}/team/a/app\", \"{src}/team/b/app\"]\ntarget = \"{dst}/m\"\n",
        src = source.host,
        dst = target.host
    ));
    let refused = clash.run(&["config", "check"]).expect_code(2);
    assert!(
        refused.stderr.contains("team/a/app") && refused.stderr.contains("team/b/app"),
        "{}",
        refused.stderr
    );
}

#[test]
fn images_in_parallel_stay_within_both_limits() {
    let tags = ["t1", "t2", "t3", "t4", "t5", "t6"];
    let delay = Some(std::time::Duration::from_millis(40));
    // One sync of the six tags from a fresh slow fake to a fresh registry;
    // `extra` adds config (given the fake's host), `args` follow `run`.
    let sync = |extra: &dyn Fn(&str) -> String, args: &[&str]| {
        let (fake, _) = fake_with_tags(
            &tags,
            Faults {
                delay,
                ..Faults::default()
            },
        );
        let target = Registry::start();
        let config = format!(
            "version = 1\n{}[[sync]]\nname = \"wide\"\nsource = \"{}/app\"\ntarget = \"{}/mirror/app\"\n",
            extra(&fake.host),
            fake.host,
            target.host
        );
        let mut run = vec!["run"];
        run.extend_from_slice(args);
        Ferry::new().with_config(&config).run(&run).ok();
        (fake, target)
    };
    // parallel_images = 2: never more than two images (manifest requests) at once.
    let (fake, _) = sync(&|_| String::new(), &["--parallel-images", "2"]);
    let (_, manifests) = fake.most_in_flight();
    assert!(
        (1..=2).contains(&manifests),
        "{manifests} manifest requests at once"
    );
    // parallel_images = 6 really overlaps images.
    let (fake, _) = sync(&|_| "[defaults]\nparallel_images = 6\n".into(), &[]);
    let (_, manifests) = fake.most_in_flight();
    assert!(manifests >= 2, "images did not overlap: {manifests}");
    // max_connections caps every request to the host, whatever the parallelism.
    let (fake, target) = sync(
        &|host| format!("[registries.\"{host}\"]\nmax_connections = 3\n"),
        &["--parallel-images", "8"],
    );
    let (all, _) = fake.most_in_flight();
    assert!(all <= 3, "{all} requests at once");
    for tag in tags {
        assert!(
            target
                .skopeo_raw_opt(&format!("mirror/app:{tag}"))
                .is_some(),
            "{tag}"
        );
    }
}

#[test]
fn sigterm_with_images_in_flight_stops_cleanly() {
    let tags = ["t1", "t2", "t3", "t4", "t5", "t6"];
    let built = image::image(
        vec![image::random_layer("big", 3_000_000, 52)],
        "amd64",
        "big",
    );
    let mut faults = Faults {
        stall_once: Some(built.layers[0].digest.clone()),
        ..Faults::default()
    };
    for tag in tags {
        faults
            .extra_manifests
            .push((tag.to_owned(), MANIFEST.into(), built.manifest.clone()));
    }
    let fake = FakeRegistry::start(&built, "1.0", faults);
    let target = Registry::start();
    let ferry = Ferry::new().with_config(&format!(
        "version = 1\n[defaults]\nstall_timeout = \"1s\"\n[[sync]]\nname = \"stop\"\nsource = \"{}/app\"\ntarget = \"{}/mirror/app\"\n",
        fake.host, target.host
    ));
    let child = ferry
        .command(&["--json", "run", "--parallel-images", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    fake.stalled
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("an image is in flight");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let output = child.wait_with_output().unwrap();
    // Stopped is not done: exit 3, and stderr says a stop was asked for.
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("stopping at the next safe point"),
        "{output:?}"
    );
    let reports: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let report = &reports[0];
    assert_eq!(report["status"], "stopped", "{report}");
    let results = results(report);
    assert!(
        results.iter().any(|(_, r)| r == "skipped"),
        "images not started are skipped: {results:?}"
    );
    // Whatever tag exists at the target is complete.
    for tag in ["1.0", "t1", "t2", "t3", "t4", "t5", "t6"] {
        if target
            .skopeo_raw_opt(&format!("mirror/app:{tag}"))
            .is_some()
        {
            Ferry::new()
                .run(&["pull", &format!("{}/mirror/app:{tag}", target.host)])
                .ok();
        }
    }
}

#[test]
fn catalogs_that_loop_overflow_or_list_bad_names() {
    let target = Registry::start();
    let job = |fake: &FakeRegistry| {
        Ferry::new().with_config(&format!(
            "version = 1\n[[sync]]\nname = \"all\"\nsource = \"{}/*\"\ntarget = \"{}/mirror\"\n",
            fake.host, target.host
        ))
    };
    let (looping, _) = fake_with_tags(
        &[],
        Faults {
            catalog: Some(Catalog::LinkLoop),
            ..Faults::default()
        },
    );
    let run = job(&looping).run(&["run"]).expect_code(1);
    assert!(
        run.stdout.contains("loops") || run.stderr.contains("loops"),
        "{}{}",
        run.stdout,
        run.stderr
    );
    let names: Vec<String> = (0..60_000).map(|i| format!("repo{i}")).collect();
    let (huge, _) = fake_with_tags(
        &[],
        Faults {
            catalog: Some(Catalog::Names(names)),
            ..Faults::default()
        },
    );
    let run = job(&huge).run(&["run"]).expect_code(1);
    assert!(
        run.stdout.contains("more than 50000") || run.stderr.contains("more than 50000"),
        "{}{}",
        run.stdout,
        run.stderr
    );
    let (odd, built) = fake_with_tags(
        &[],
        Faults {
            catalog: Some(Catalog::Names(vec![
                "app".into(),
                "Bad_Name".into(),
                "a..b".into(),
            ])),
            ..Faults::default()
        },
    );
    let ferry = job(&odd);
    let (code, reports) = run_reports(&ferry, &[]);
    assert_eq!(code, 0, "{reports:?}");
    let results = results(&reports[0]);
    assert!(
        results.contains(&(format!("{}/app:1.0", odd.host), "copied".to_owned())),
        "{results:?}"
    );
    assert_eq!(
        results.iter().filter(|(_, r)| r == "skipped").count(),
        2,
        "{results:?}"
    );
    assert_eq!(sha256(&target.skopeo_raw("mirror/app:1.0")), built.digest());
}

#[test]
fn a_backup_of_a_whole_prefix_keeps_going_past_a_missing_image() {
    let fixture = fixture();
    let source = Registry::start();
    for repository in ["team/a/app", "team/b/app"] {
        source.skopeo_push(fixture.layout.path(), "1.0", repository);
        source.skopeo_push(fixture.layout.path(), "2.0", repository);
    }
    let ferry = Ferry::new();
    let output = ferry.dir.path().join("team.tar");
    let ferry = ferry.with_config(&format!(
        "version = 1\n[[backup]]\nname = \"team\"\nimages = [\"{src}/team/**:*\", \"{src}/gone/app:1.0\"]\ntags = {{ include = [\"^1\\\\.\"] }}\noutput = \"{}\"\n",
        output.display(),
        src = source.host
    ));
    let (code, reports) = run_reports(&ferry, &[]);
    assert_eq!(code, 1);
    assert_eq!(
        results(&reports[0]),
        [
            (format!("{}/gone/app:1.0", source.host), "failed".to_owned()),
            (
                format!("{}/team/a/app:1.0", source.host),
                "copied".to_owned()
            ),
            (
                format!("{}/team/b/app:1.0", source.host),
                "copied".to_owned()
            ),
        ]
    );
    let far = Ferry::new();
    let loaded = far.run(&["load", "-i", output.to_str().unwrap()]).ok();
    for repository in ["team/a/app", "team/b/app"] {
        assert!(
            loaded
                .stdout
                .contains(&format!("{}/{repository}:1.0", source.host)),
            "{}",
            loaded.stdout
        );
    }
    assert!(!loaded.stdout.contains(":2.0"), "{}", loaded.stdout);
}

#[test]
fn shards_split_jobs_and_repositories_so_each_runs_once() {
    let fixture = fixture();
    let source = Registry::start();
    let repositories: Vec<String> = (0..6).map(|i| format!("team/r{i}")).collect();
    for repository in &repositories {
        source.skopeo_push(fixture.layout.path(), "1.0", repository);
    }
    let target = Registry::start();
    let mut config = String::from("version = 1\n");
    for i in 0..8 {
        config.push_str(&format!(
            "[[prune]]\nname = \"tidy-{i}\"\nrepository = \"store\"\ntags = {{ include = [\"-never-{i}$\"] }}\n"
        ));
    }
    config.push_str(&format!(
        "[[sync]]\nname = \"everything\"\nsource = \"{}/team/*\"\ntarget = \"{}/mirror\"\nsplit = \"repositories\"\n",
        source.host, target.host
    ));
    let ferry = Ferry::new().with_config(&config);
    let mut ran: Vec<String> = Vec::new();
    let mut synced: Vec<String> = Vec::new();
    for index in 0..4 {
        let mut worker = Ferry::new().with_config(&config);
        worker
            .envs
            .push(("JOB_COMPLETION_INDEX".into(), index.to_string()));
        let (code, reports) = run_reports(&worker, &["--shards", "4"]);
        assert_eq!(code, 0);
        for report in &reports {
            let name = report["name"].as_str().unwrap().to_owned();
            if name == "everything" {
                synced.extend(results(report).into_iter().map(|(image, _)| image));
            } else {
                ran.push(name);
            }
        }
    }
    // Every job exactly once over the four workers ...
    ran.sort();
    let mut expected: Vec<String> = (0..8).map(|i| format!("tidy-{i}")).collect();
    expected.sort();
    assert_eq!(ran, expected);
    // ... and the split job's repositories each on exactly one of them.
    synced.sort();
    let mut all: Vec<String> = repositories
        .iter()
        .map(|r| format!("{}/{r}:1.0", source.host))
        .collect();
    all.sort();
    assert_eq!(synced, all);
    for repository in &repositories {
        let name = repository.trim_start_matches("team/");
        assert!(
            target
                .skopeo_raw_opt(&format!("mirror/{name}:1.0"))
                .is_some(),
            "{name}"
        );
    }
    // `ferry jobs --shards 4` shows the same assignment.
    let listed: serde_json::Value =
        serde_json::from_str(&ferry.run(&["--json", "jobs", "--shards", "4"]).ok().stdout).unwrap();
    for job in listed.as_array().unwrap() {
        let name = job["name"].as_str().unwrap();
        let shard = job["shard"].as_str().unwrap();
        if name == "everything" {
            assert_eq!(shard, "all (by repository)");
        } else {
            let mine = Ferry::new().with_config(&config);
            let (_, reports) = run_reports(&mine, &["--shard", &format!("{shard}/4"), name]);
            assert_eq!(reports.len(), 1, "{name} runs on shard {shard}");
        }
    }
    let refused = Ferry::new()
        .with_config(&config)
        .run(&["run", "--shard", "4/4"])
        .expect_code(2);
    assert!(refused.stderr.contains("4/4"), "{}", refused.stderr);
}
