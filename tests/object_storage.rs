//! Archives and job state on object storage, against a real Garage cluster
//! (three nodes on loopback) and, for conditional writes Garage does not
//! enforce, the in-test server that follows the S3 rules for them: backups
//! rotated by listing and restored with `copy archive:s3://`, a node killed
//! mid-upload, four sharded workers over one state bucket, leases, and the
//! bad input of the issue (missing bucket, wrong key, not an archive, an
//! object replaced while read, a dead worker's lease).

use crate::support::fake::{FakeRegistry, Faults};
use crate::support::fake_s3::FakeS3;
use crate::support::garage::Garage;
use crate::support::image::{self, Content};
use crate::support::proxy::Proxy;
use crate::support::registry::Registry;
use crate::support::Ferry;

/// Push one image per `(tag, layer size)` to `repository`.
fn seed(registry: &Registry, repository: &str, tags: &[(&str, usize)]) {
    let layout = tempfile::tempdir().unwrap();
    let images: Vec<(String, image::Image)> = tags
        .iter()
        .enumerate()
        .map(|(i, (tag, size))| {
            let layer = image::random_layer("f", *size, 900 + i as u64);
            (tag.to_string(), image::image(vec![layer], "amd64", tag))
        })
        .collect();
    let entries: Vec<(&str, Content)> = images
        .iter()
        .map(|(tag, image)| (tag.as_str(), Content::Image(image)))
        .collect();
    image::write_layout(layout.path(), &entries);
    for (tag, _) in tags {
        registry.skopeo_push(layout.path(), tag, repository);
    }
}

fn digest_of(registry: &Registry, reference: &str) -> Option<String> {
    registry
        .skopeo_raw_opt(reference)
        .map(|raw| crate::support::sha256(&raw))
}

fn with_env(mut ferry: Ferry, env: Vec<(&'static str, String)>) -> Ferry {
    ferry
        .envs
        .extend(env.into_iter().map(|(k, v)| (k.to_owned(), v)));
    ferry
}

/// The archives under `prefix`. Garage's listing can still show a key for
/// a moment after it was deleted, so each listed key is confirmed with a
/// HEAD (which is read-after-write consistent).
fn archives(garage: &Garage, bucket: &str, prefix: &str) -> Vec<String> {
    garage
        .keys(bucket, prefix)
        .into_iter()
        .filter(|k| k.ends_with(".tar") && garage.exists(bucket, k))
        .collect()
}

#[test]
fn backups_on_a_garage_cluster_rotate_by_listing_and_restore_with_copy() {
    let garage = Garage::start(3);
    garage.bucket("backups");
    let registry = Registry::start();
    seed(&registry, "team/app", &[("1.0", 3000), ("2.0", 4000)]);
    let ferry = with_env(
        Ferry::new().with_config(&format!(
            "version = 1\n[[backup]]\nname = \"nightly\"\nimages = [\"{}/team/app:*\"]\noutput = \"s3://backups/ferry/{{job}}-{{run}}.tar\"\nkeep = 3\nincremental = true\nfull_every = 2\n",
            registry.host
        )),
        garage.env(),
    );
    for _ in 0..5 {
        ferry.run(&["run"]).ok();
    }
    // 1 full, 2 delta, 3 full, 4 delta, 5 full: the oldest chain (1, 2)
    // goes once three archives remain without it.
    assert_eq!(
        archives(&garage, "backups", "ferry/"),
        [
            "ferry/nightly-3.tar",
            "ferry/nightly-4.tar",
            "ferry/nightly-5.tar"
        ]
    );
    assert!(
        garage.keys("backups", "ferry/.ferry-uploads/").is_empty(),
        "no upload marker is left behind"
    );
    // The next delta is made from the newest archive's blob list, kept in
    // the job's state, not by downloading that archive again.
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(ferry.store.join("ferry/jobs/nightly.json")).unwrap(),
    )
    .unwrap();
    let backups = state["backups"].as_array().unwrap();
    let (newest, older) = backups.split_last().unwrap();
    assert_eq!(newest["blobs"].as_array().map(Vec::len), Some(6), "{state}");
    assert!(older.iter().all(|b| b.get("blobs").is_none()), "{state}");
    // Restore the chain (full, then delta) straight into a new registry.
    let target = Registry::start();
    for run in [3, 4] {
        ferry
            .run(&[
                "copy",
                &format!("archive:s3://backups/ferry/nightly-{run}.tar"),
                &format!("{}/restored", target.host),
            ])
            .ok();
    }
    for tag in ["1.0", "2.0"] {
        assert_eq!(
            digest_of(&target, &format!("restored/team/app:{tag}")),
            digest_of(&registry, &format!("team/app:{tag}"))
        );
    }
    // load and verify read the bucket too.
    let verified = ferry
        .run(&["verify", "s3://backups/ferry/nightly-5.tar"])
        .ok();
    assert!(
        verified.stdout.contains("2 images verified"),
        "{}",
        verified.stdout
    );
    let restored = with_env(Ferry::new(), garage.env());
    restored
        .run(&["load", "-i", "s3://backups/ferry/nightly-5.tar"])
        .ok();
    restored.run(&["verify", "--read-data"]).ok();
    let images = restored.run(&["images"]).ok();
    assert!(images.stdout.contains("2.0"), "{}", images.stdout);
    // save -o and save --since work against the bucket as against files.
    let one = format!("{}/team/app:1.0", registry.host);
    restored
        .run(&["save", "-o", "s3://backups/manual/all.tar", &one])
        .ok();
    let listed = restored
        .run(&[
            "save",
            "--list",
            "--since",
            "s3://backups/manual/all.tar",
            &one,
        ])
        .ok();
    assert!(listed.stdout.contains("0 blobs"), "{}", listed.stdout);
    // copy IMAGE archive:s3://… streams a registry image straight there.
    ferry
        .run(&["copy", &one, "archive:s3://backups/copied/app.tar"])
        .ok();
    let copied = ferry.run(&["verify", "s3://backups/copied/app.tar"]).ok();
    assert!(
        copied.stdout.contains("1 image verified"),
        "{}",
        copied.stdout
    );
}

#[test]
fn a_node_killed_mid_upload_never_leaves_a_partial_archive() {
    let garage = Garage::start(3);
    garage.bucket("backups");
    let registry = Registry::start();
    // 14 MiB of layer in 5 MiB parts: the upload has three parts.
    seed(&registry, "team/big", &[("1.0", 14 << 20)]);
    let victim = garage.pid(2);
    let proxy = Proxy::start(
        garage.endpoint.trim_start_matches("http://"),
        b"partNumber=2&",
        Box::new(move || {
            let _ = std::process::Command::new("kill")
                .args(["-9", &victim.to_string()])
                .status();
        }),
    );
    let ferry = with_env(
        Ferry::new().with_config(&format!(
            "version = 1\n[object_store]\nendpoint = \"http://{}\"\nallow_http = true\nregion = \"garage\"\npart_size = \"5MiB\"\n[[backup]]\nname = \"big\"\nimages = [\"{}/team/big:1.0\"]\noutput = \"s3://backups/k/{{job}}-{{run}}.tar\"\nkeep = 2\n",
            proxy.addr, registry.host
        )),
        garage
            .env()
            .into_iter()
            .filter(|(k, _)| k.starts_with("AWS_ACCESS") || k.starts_with("AWS_SECRET"))
            .collect(),
    );
    let first = ferry.run(&["run"]);
    assert!(proxy.fired(), "the node was killed during the upload");
    assert!(first.code == 0 || first.code == 1, "{}", first.stderr);
    // Whatever the outcome, every archive the bucket shows is whole.
    let check = |ferry: &Ferry| {
        for key in archives(&garage, "backups", "k/") {
            ferry.run(&["verify", &format!("s3://backups/{key}")]).ok();
        }
    };
    check(&ferry);
    // Later runs (two nodes of three still up) rotate to exactly `keep`.
    for _ in 0..3 {
        ferry.run(&["run"]).ok();
    }
    let kept = archives(&garage, "backups", "k/");
    assert_eq!(kept.len(), 2, "{kept:?}");
    check(&ferry);
    assert!(garage.keys("backups", "k/.ferry-uploads/").is_empty());
}

#[test]
fn four_shards_share_one_state_bucket_and_run_each_job_once_per_round() {
    let garage = Garage::start(1);
    garage.bucket("fleet");
    let registry = Registry::start();
    seed(&registry, "team/app", &[("1.0", 2000)]);
    let mut config = String::from(
        "version = 1\n[state]\nurl = \"s3://fleet/state\"\nlocking = \"shards-only\"\n",
    );
    let jobs: Vec<String> = (0..8).map(|i| format!("backup-{i}")).collect();
    for job in &jobs {
        config.push_str(&format!(
            "[[backup]]\nname = \"{job}\"\nimages = [\"{}/team/app:1.0\"]\noutput = \"s3://fleet/out/{{job}}-{{run}}.tar\"\n",
            registry.host
        ));
    }
    // Four pods: each its own store (no shared disk), one state bucket.
    let workers: Vec<Ferry> = (0..4)
        .map(|_| with_env(Ferry::new().with_config(&config), garage.env()))
        .collect();
    for _round in 0..2 {
        let running: Vec<_> = workers
            .iter()
            .enumerate()
            .map(|(index, ferry)| {
                ferry
                    .command(&["run", "--shard", &format!("{index}/4")])
                    .output()
                    .unwrap()
            })
            .collect();
        for output in running {
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
    // Each job ran exactly once per round: two archives each, numbered by
    // the shared state, and its state is in the bucket.
    let mut expected: Vec<String> = jobs
        .iter()
        .flat_map(|job| [format!("out/{job}-1.tar"), format!("out/{job}-2.tar")])
        .collect();
    expected.sort();
    assert_eq!(archives(&garage, "fleet", "out/"), expected);
    for job in &jobs {
        assert!(garage
            .keys("fleet", "state/")
            .contains(&format!("state/{job}.json")));
    }
    // A new worker (a new pod) sees every job's last run.
    let listing = workers[0].run(&["jobs"]).ok();
    assert_eq!(
        listing.stdout.matches(" ok ").count(),
        8,
        "{}",
        listing.stdout
    );
}

#[test]
fn the_probe_refuses_leases_on_garage_which_ignores_conditional_writes() {
    let garage = Garage::start(1);
    garage.bucket("state");
    let config = "version = 1\n[state]\nurl = \"s3://state/ferry\"\n[[prune]]\nname = \"tidy\"\nrepository = \"store\"\nkeep_latest = 1\n";
    let ferry = with_env(Ferry::new().with_config(config), garage.env());
    let refused = ferry.run(&["run"]);
    assert_ne!(refused.code, 0);
    assert!(
        refused
            .stderr
            .contains("does not enforce conditional writes")
            && refused.stderr.contains("shards-only"),
        "{}",
        refused.stderr
    );
    assert!(!garage
        .keys("state", "ferry/")
        .iter()
        .any(|k| k.ends_with(".json")));
    // Listing only reads: it warns instead.
    let listed = ferry.run(&["jobs"]).ok();
    assert!(
        listed.stderr.contains("will refuse leases"),
        "{}",
        listed.stderr
    );
    let shards_only = with_env(
        Ferry::new().with_config(&config.replace(
            "url = \"s3://state/ferry\"",
            "url = \"s3://state/ferry\"\nlocking = \"shards-only\"",
        )),
        garage.env(),
    );
    let ran = shards_only.run(&["run"]).ok();
    assert!(
        ran.stderr.contains("relying on shards alone"),
        "{}",
        ran.stderr
    );
    assert!(garage
        .keys("state", "ferry/")
        .contains(&"ferry/tidy.json".to_owned()));
}

#[test]
fn leases_keep_runs_apart_where_conditional_writes_are_enforced() {
    let s3 = FakeS3::start("locks");
    let source = Registry::start();
    let target = Registry::start();
    seed(&source, "team/app", &[("1.0", 1500)]);
    let ferry = with_env(
        Ferry::new().with_config(&format!(
            "version = 1\n[state]\nurl = \"s3://locks/state\"\n[[sync]]\nname = \"mirror\"\nsource = \"{}/team/app\"\ntarget = \"{}/team/app\"\n",
            source.host, target.host
        )),
        s3.env(),
    );
    // Taken by creating the lease, released with If-Match.
    ferry.run(&["run"]).ok();
    let log = s3.log();
    assert!(
        log.iter().any(
            |l| l.starts_with("PUT /locks/state/mirror.lease if-none-match=*")
                && l.ends_with("200")
        ),
        "{log:#?}"
    );
    let release = log
        .iter()
        .rev()
        .find(|l| l.starts_with("PUT /locks/state/mirror.lease"))
        .unwrap();
    assert!(release.contains("if-match="), "{release}");
    let state = String::from_utf8(s3.get("state/mirror.json").unwrap()).unwrap();
    assert!(state.contains("team/app:1.0"), "{state}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // A live holder: the run is skipped and names it; state untouched.
    s3.put(
        "state/mirror.lease",
        format!("{{\"holder\":\"pod-7:1:beef\",\"expires\":{}}}", now + 600).as_bytes(),
    );
    let skipped = ferry.run(&["run"]).expect_code(3);
    assert!(
        skipped.stdout.contains("pod-7:1:beef") && skipped.stdout.contains("skipped"),
        "{}",
        skipped.stdout
    );
    assert_eq!(
        String::from_utf8(s3.get("state/mirror.json").unwrap()).unwrap(),
        state
    );
    // A dead worker's lease past its expiry is taken over (If-Match).
    s3.put(
        "state/mirror.lease",
        format!("{{\"holder\":\"pod-dead:1:0\",\"expires\":{}}}", now - 5).as_bytes(),
    );
    ferry.run(&["run"]).ok();
    assert!(s3
        .log()
        .iter()
        .any(|l| l.starts_with("PUT /locks/state/mirror.lease if-match=") && l.ends_with("200")));
    // Another worker writes the state during this run: the compare-and-swap
    // refuses to overwrite it, and the run says so.
    s3.interfere("state/mirror.json", b"{\"last_run\": 1}");
    let raced = ferry.run(&["run"]);
    assert_ne!(raced.code, 0);
    assert!(
        raced.stdout.contains("changed since this run read it"),
        "{}",
        raced.stdout
    );
    assert_eq!(s3.get("state/mirror.json").unwrap(), b"{\"last_run\": 1}");
}

#[test]
fn a_run_that_loses_its_lease_stops_and_saves_no_state() {
    let s3 = FakeS3::start("locks");
    // The lease is created, then every renewal is refused: another worker
    // has it now.
    s3.refuse_after("state/slow.lease", 1);
    let image = image::image(vec![image::random_layer("f", 2000, 5)], "amd64", "x");
    // Every request takes 700 ms, so the run outlasts the first renewal
    // (a third of the 3 s lease).
    let source = FakeRegistry::start(
        &image,
        "1.0",
        Faults {
            delay: Some(std::time::Duration::from_millis(700)),
            ..Faults::default()
        },
    );
    let target = Registry::start();
    let ferry = with_env(
        Ferry::new().with_config(&format!(
            "version = 1\n[state]\nurl = \"s3://locks/state\"\nlease = \"3s\"\n[[sync]]\nname = \"slow\"\nsource = \"{}/app\"\ntarget = \"{}/app\"\n",
            source.host, target.host
        )),
        s3.env(),
    );
    let run = ferry.run(&["run"]).expect_code(1);
    assert!(
        run.stdout.contains("lost the job's lease"),
        "{}",
        run.stdout
    );
    assert!(
        s3.get("state/slow.json").is_none(),
        "a run without its lease saves no state"
    );
}

#[test]
fn credentials_come_from_the_instance_profile_only_when_asked() {
    let s3 = FakeS3::start("state");
    let imds = crate::support::fake_s3::start_imds("ASIAINSTANCEPROFILE");
    let config = |extra: &str| {
        format!(
            "version = 1\n[object_store]\nendpoint = \"{}\"\nallow_http = true\n{extra}[state]\nurl = \"s3://state/ferry\"\n[[prune]]\nname = \"tidy\"\nrepository = \"store\"\nkeep_latest = 1\n",
            s3.endpoint
        )
    };
    // No key anywhere: a clear error, and no request to any metadata service.
    let keyless = Ferry::new().with_config(&config(""));
    let refused = keyless.run(&["run"]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("no credentials for object storage")
            && refused.stderr.contains("instance_credentials"),
        "{}",
        refused.stderr
    );
    // Asked for: the role's temporary key signs every request.
    let mut instance = Ferry::new().with_config(&config("instance_credentials = true\n"));
    instance
        .envs
        .push(("AWS_EC2_METADATA_SERVICE_ENDPOINT".into(), imds));
    instance.run(&["run"]).ok();
    let keys = s3.key_ids();
    assert!(
        !keys.is_empty() && keys.iter().all(|k| k == "ASIAINSTANCEPROFILE"),
        "{keys:?}"
    );
}

#[test]
fn object_storage_bad_input_is_named_and_loses_nothing() {
    let garage = Garage::start(1);
    garage.bucket("backups");
    let registry = Registry::start();
    seed(&registry, "team/app", &[("1.0", 300_000)]);
    let ferry = with_env(Ferry::new(), garage.env());
    let image = format!("{}/team/app:1.0", registry.host);
    ferry.run(&["pull", &image]).ok();
    let before = ferry.index_json();
    // A bucket that does not exist.
    let missing = ferry.run(&["save", "-o", "s3://no-such-bucket/a.tar", &image]);
    assert!(
        missing
            .stderr
            .contains("bucket no-such-bucket does not exist"),
        "{}",
        missing.stderr
    );
    // Wrong credentials.
    let mut wrong = with_env(Ferry::new(), garage.env());
    wrong
        .envs
        .push(("AWS_SECRET_ACCESS_KEY".into(), "not-the-secret".into()));
    let denied = wrong.run(&["load", "-i", "s3://backups/a.tar"]);
    assert!(denied.stderr.contains("access denied"), "{}", denied.stderr);
    assert!(!denied.stderr.contains(crate::support::garage::SECRET));
    // Plain HTTP must be asked for.
    let mut plain = with_env(Ferry::new(), garage.env());
    plain.envs.retain(|(k, _)| k != "AWS_ALLOW_HTTP");
    let refused = plain.run(&["verify", "s3://backups/a.tar"]);
    assert!(refused.stderr.contains("allow_http"), "{}", refused.stderr);
    // A key that is not an archive: refused, the store unchanged.
    garage.put(
        "backups",
        "notes.txt",
        b"these are not the images you are looking for",
    );
    let not_archive = ferry.run(&["load", "-i", "s3://backups/notes.txt"]);
    assert_ne!(not_archive.code, 0);
    assert!(
        not_archive.stderr.contains("s3://backups/notes.txt"),
        "{}",
        not_archive.stderr
    );
    assert_eq!(ferry.index_json(), before);
    // An archive replaced while it is read: the read stops, nothing loads.
    // (Written with every log level on: the secret never shows.)
    let mut loud = with_env(Ferry::new(), garage.env());
    loud.store = ferry.store.clone();
    loud.envs.push(("FERRY_LOG".into(), "trace".into()));
    let saved = loud
        .run(&["-vv", "save", "-o", "s3://backups/app.tar", &image])
        .ok();
    let said = format!("{}{}", saved.stdout, saved.stderr);
    assert!(!said.contains(crate::support::garage::SECRET), "{said}");
    let replacement = {
        let client = garage.client("backups");
        move || {
            let write = ferry::objects::conditional::Write::Overwrite;
            let replaced = client.put_small("app.tar", vec![0; 200_000], write);
            crate::support::garage::block_on(replaced).unwrap();
        }
    };
    let proxy = Proxy::start(
        garage.endpoint.trim_start_matches("http://"),
        b"bytes=65536-",
        Box::new(replacement),
    );
    let mut reader = with_env(Ferry::new(), garage.env());
    reader
        .envs
        .push(("AWS_ENDPOINT".into(), format!("http://{}", proxy.addr)));
    reader
        .envs
        .push(("FERRY_OBJECT_READ_RANGE".into(), "65536".into()));
    let changed = reader.run(&["load", "-i", "s3://backups/app.tar"]);
    assert!(proxy.fired());
    assert!(
        changed.stderr.contains("changed while it was being read"),
        "{}",
        changed.stderr
    );
    let images = reader.run(&["images", "-q"]).ok();
    assert!(images.stdout.trim().is_empty(), "{}", images.stdout);
    // A failed backup to a missing bucket: failed, named, nothing written.
    let job = with_env(
        Ferry::new().with_config(&format!(
            "version = 1\n[[backup]]\nname = \"b\"\nimages = [\"{image}\"]\noutput = \"s3://no-such-bucket/{{job}}-{{run}}.tar\"\n"
        )),
        garage.env(),
    );
    let failed = job.run(&["run"]);
    assert_ne!(failed.code, 0);
    assert!(
        failed.stdout.contains("no-such-bucket"),
        "{}",
        failed.stdout
    );
}
