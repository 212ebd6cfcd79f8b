//! Archives as engine endpoints: `copy archive:FILE DEST` for every format
//! ferry loads gives the digests `load` + `push` gives, from a file or a
//! pipe, with names rebased under DEST; `copy IMAGE archive:FILE` writes an
//! archive docker, podman and skopeo read; neither touches the store; bad
//! archives and killed copies leave no tag; backups go registry → archive.

use crate::round_trip::seeded;
use crate::support::engines::Podman;
use crate::support::registry::Registry;
use crate::support::{run_ok, sha256, Ferry};
use std::process::Command;

/// The digest of `reference` in `registry`, if the tag exists.
fn remote_digest(registry: &Registry, reference: &str) -> Option<String> {
    let output = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/{reference}", registry.host))
        .output()
        .unwrap();
    output.status.success().then(|| sha256(&output.stdout))
}

/// Archives in every format: ferry's own (plain and gzip), skopeo's
/// docker-archive and oci-archive. Returns (file, name in the archive).
fn archives(dir: &std::path::Path) -> Vec<(std::path::PathBuf, String)> {
    let (registry, fixture) = seeded();
    let ferry = Ferry::new();
    let multi = format!("{}/team/app:multi", registry.host);
    ferry.run(&["pull", "--all-platforms", &multi]).ok();
    let own = dir.join("ferry.tar");
    ferry
        .run(&["save", "-o", own.to_str().unwrap(), &multi])
        .ok();
    let gzip = dir.join("ferry.tar.gz");
    ferry
        .run(&[
            "save",
            "--compress",
            "gzip",
            "-o",
            gzip.to_str().unwrap(),
            &multi,
        ])
        .ok();
    let layout = fixture.layout.path().display().to_string();
    let docker_archive = dir.join("docker.tar");
    let oci_archive = dir.join("oci.tar");
    run_ok(Command::new("skopeo").args([
        "copy",
        "-q",
        &format!("oci:{layout}:2.0"),
        &format!(
            "docker-archive:{}:example.com/team/app:2.0",
            docker_archive.display()
        ),
    ]));
    run_ok(Command::new("skopeo").args([
        "copy",
        "-q",
        &format!("oci:{layout}:1.0"),
        &format!(
            "oci-archive:{}:example.com/team/app:1.0",
            oci_archive.display()
        ),
    ]));
    vec![
        (own, multi.clone()),
        (gzip, multi),
        (docker_archive, "example.com/team/app:2.0".into()),
        (oci_archive, "example.com/team/app:1.0".into()),
    ]
}

#[test]
fn copy_from_every_archive_format_matches_load_and_push() {
    let work = tempfile::tempdir().unwrap();
    let target = Registry::start();
    for (round, (archive, name)) in archives(work.path()).into_iter().enumerate() {
        let repository = name.split_once('/').unwrap().1.split(':').next().unwrap();
        let tag = name.rsplit(':').next().unwrap();
        // load + push into one repository …
        let loader = Ferry::new();
        loader.run(&["load", "-i", archive.to_str().unwrap()]).ok();
        let pushed = format!("via-load{round}/{repository}:{tag}");
        loader
            .run(&["push", &name, &format!("{}/{pushed}", target.host)])
            .ok();
        // … and copy archive: under a prefix, straight to the registry.
        let copier = Ferry::new();
        let prefix = format!("{}/via-copy{round}", target.host);
        let out = copier
            .run(&["copy", &format!("archive:{}", archive.display()), &prefix])
            .ok();
        let copied = format!("via-copy{round}/{repository}:{tag}");
        assert!(out.stdout.contains(&copied), "{}", out.stdout);
        let expected = remote_digest(&target, &pushed);
        assert!(expected.is_some());
        assert_eq!(
            remote_digest(&target, &copied),
            expected,
            "{}",
            archive.display()
        );
        // Nothing reached the copier's store.
        assert!(copier.blob_files().is_empty(), "{}", archive.display());
    }
}

#[test]
fn copy_from_a_pipe_to_a_full_reference_and_refusals() {
    let (registry, fixture) = seeded();
    let target = Registry::start();
    let ferry = Ferry::new();
    let one = format!("{}/team/app:1.0", registry.host);
    ferry.run(&["pull", &one]).ok();
    let saved = ferry.command(&["save", &one]).output().unwrap();
    assert!(saved.status.success());
    let other = Ferry::new();
    let dest = format!("docker://{}/piped/app:7", target.host);
    other
        .run_with_stdin(&["copy", "archive:-", &dest], &saved.stdout)
        .ok();
    assert_eq!(
        remote_digest(&target, "piped/app:7"),
        Some(fixture.app1.digest())
    );
    assert!(other.blob_files().is_empty());
    // A full reference for an archive of two images is refused before any copy.
    let two = format!("{}/team/app:2.0", registry.host);
    ferry.run(&["pull", &two]).ok();
    let both = ferry.dir.path().join("both.tar");
    ferry
        .run(&["save", "-o", both.to_str().unwrap(), &one, &two])
        .ok();
    let refused = other
        .run(&[
            "copy",
            &format!("archive:{}", both.display()),
            &format!("{}/x/y:1", target.host),
        ])
        .expect_code(2);
    assert!(
        refused.stderr.contains("holds 2 images"),
        "{}",
        refused.stderr
    );
    assert_eq!(remote_digest(&target, "x/y:1"), None);
}

#[test]
fn bad_archives_are_refused_by_copy_with_no_tag_at_the_destination() {
    let (registry, _fixture) = seeded();
    let target = Registry::start();
    let ferry = Ferry::new();
    let one = format!("{}/team/app:1.0", registry.host);
    ferry.run(&["pull", &one]).ok();
    let good = ferry.dir.path().join("good.tar");
    ferry
        .run(&["save", "-o", good.to_str().unwrap(), &one])
        .ok();
    let bytes = std::fs::read(&good).unwrap();
    let work = tempfile::tempdir().unwrap();
    // Truncated, and one byte of a layer flipped (its name no longer matches).
    let truncated = work.path().join("truncated.tar");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let flipped = work.path().join("flipped.tar");
    let mut changed = bytes.clone();
    let at = changed.len() - 4096;
    changed[at] ^= 0xff;
    std::fs::write(&flipped, &changed).unwrap();
    for bad in [&truncated, &flipped] {
        let run = ferry.run(&["copy", &format!("archive:{}", bad.display()), &target.host]);
        assert_eq!(run.code, 1, "{}: {}", bad.display(), run.stderr);
        assert!(run.stderr.contains(bad.to_str().unwrap()), "{}", run.stderr);
        assert_eq!(remote_digest(&target, "team/app:1.0"), None);
    }
    ferry
        .run(&["copy", &format!("archive:{}", good.display()), &target.host])
        .ok();
    assert!(remote_digest(&target, "team/app:1.0").is_some());
}

#[test]
fn copy_to_an_archive_is_read_by_podman_and_skopeo_and_comes_back() {
    let (registry, fixture) = seeded();
    let target = Registry::start();
    let ferry = Ferry::new();
    let archive = ferry.dir.path().join("remote.tar");
    let multi = format!("{}/team/app:multi", registry.host);
    let out = ferry
        .run(&["copy", &multi, &format!("archive:{}", archive.display())])
        .ok();
    assert!(out.stdout.contains("Wrote 1 image"), "{}", out.stdout);
    assert!(
        ferry.blob_files().is_empty(),
        "copy to an archive keeps no store copy"
    );
    // skopeo reads the OCI part with the index digest intact …
    run_ok(Command::new("skopeo").args([
        "copy",
        "-q",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci-archive:{}:multi", archive.display()),
        &format!("docker://{}/by-skopeo/app:multi", target.host),
    ]));
    assert_eq!(
        remote_digest(&target, "by-skopeo/app:multi"),
        Some(fixture.multi.digest())
    );
    // … podman loads it as a docker archive …
    let podman = Podman::new();
    podman.load(&archive);
    podman.run(&["image", "exists", &multi]);
    // … and it goes back to a registry through ferry with the same digest.
    ferry
        .run(&[
            "copy",
            &format!("archive:{}", archive.display()),
            &format!("{}/back", target.host),
        ])
        .ok();
    assert_eq!(
        remote_digest(&target, "back/team/app:multi"),
        Some(fixture.multi.digest())
    );
    // -a writes every tag of a repository.
    let all = ferry.dir.path().join("all.tar");
    ferry
        .run(&[
            "copy",
            "-a",
            &format!("{}/team/app", registry.host),
            &format!("archive:{}", all.display()),
        ])
        .ok();
    let loaded = Ferry::new()
        .run(&["load", "-i", all.to_str().unwrap()])
        .ok();
    assert_eq!(
        loaded.stdout.matches("Loaded image:").count(),
        3,
        "{}",
        loaded.stdout
    );
}

#[test]
fn sigkill_during_copy_from_an_archive_leaves_no_tag() {
    let (registry, fixture) = seeded();
    let target = Registry::start();
    let mut ferry = Ferry::new();
    let spools = ferry.dir.path().join("tmp");
    std::fs::create_dir_all(&spools).unwrap();
    ferry
        .envs
        .push(("FERRY_TMPDIR".into(), spools.display().to_string()));
    let two = format!("{}/team/app:2.0", registry.host);
    ferry.run(&["pull", &two]).ok();
    let archive = ferry.dir.path().join("two.tar");
    ferry
        .run(&["save", "-o", archive.to_str().unwrap(), &two])
        .ok();
    let source = format!("archive:{}", archive.display());
    for (round, delay) in [0u64, 15, 40, 80].into_iter().enumerate() {
        let prefix = format!("{}/kill{round}", target.host);
        let mut child = ferry
            .command(&["copy", &source, &prefix])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // The delay picks the moment of the kill; nothing waits on it.
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let _ = child.kill();
        let status = child.wait().unwrap();
        let now = remote_digest(&target, &format!("kill{round}/team/app:2.0"));
        // Either the copy finished before the kill, or there is no tag.
        if !status.success() {
            assert!(
                now.is_none() || now == Some(fixture.app2.digest()),
                "{now:?}"
            );
        }
        ferry.run(&["copy", &source, &prefix]).ok();
        assert_eq!(
            remote_digest(&target, &format!("kill{round}/team/app:2.0")),
            Some(fixture.app2.digest())
        );
    }
    // Spools of killed runs are swept by the next one; finished runs remove theirs.
    assert!(
        crate::support::list_files(&spools).is_empty(),
        "{:?}",
        crate::support::list_files(&spools)
    );
}

#[test]
fn backup_goes_registry_to_archive_then_delta_and_restores_with_copy() {
    let (registry, fixture) = seeded();
    let ferry = Ferry::new();
    let out = ferry.dir.path().join("backups");
    let ferry = ferry.with_config(&format!(
        "version = 1\n[[backup]]\nname = \"offsite\"\nimages = [\"{host}/team/app:1.0\", \"{host}/team/app:2.0\"]\noutput = \"{out}/{{job}}-{{run}}.tar\"\nincremental = true\nfull_every = 5\n",
        host = registry.host,
        out = out.display()
    ));
    ferry.run(&["run"]).ok();
    assert!(
        ferry.blob_files().is_empty(),
        "the backup kept no store copy"
    );
    // A new tag arrives; the next run writes a delta without the shared base.
    crate::support::run_ok(Command::new("skopeo").args([
        "copy",
        "-q",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", fixture.layout.path().display()),
        &format!("docker://{}/team/app:2.0", registry.host),
    ]));
    ferry.run(&["run"]).ok();
    let full = out.join("offsite-1.tar");
    let delta = out.join("offsite-2.tar");
    assert!(std::fs::metadata(&delta).unwrap().len() < std::fs::metadata(&full).unwrap().len());
    // Restore the chain into a fresh registry with copy archive:.
    let target = Registry::start();
    let restorer = Ferry::new();
    for archive in [&full, &delta] {
        restorer
            .run(&[
                "copy",
                &format!("archive:{}", archive.display()),
                &target.host,
            ])
            .ok();
    }
    assert_eq!(
        remote_digest(&target, "team/app:1.0"),
        Some(fixture.app1.digest())
    );
    assert_eq!(
        remote_digest(&target, "team/app:2.0"),
        Some(fixture.multi.digest())
    );
}

#[test]
fn a_layer_that_does_not_match_its_config_diff_id_is_refused_while_streaming() {
    use crate::support::image;
    let work = tempfile::tempdir().unwrap();
    let mut lying = image::random_layer("x", 300_000, 11);
    lying.diff_id = sha256(b"some other layer");
    let built = image::image(vec![lying], "amd64", "lying");
    let archive = image::named_archive(work.path(), "lying.tar", &built, "example.com/lying:1");
    let target = Registry::start();
    let ferry = Ferry::new();
    // Read in place (the check runs while the layer streams) and from a pipe (checked first).
    let in_place = ferry.run(&[
        "copy",
        &format!("archive:{}", archive.display()),
        &target.host,
    ]);
    let piped = ferry.run_with_stdin(
        &["copy", "archive:-", &target.host],
        std::fs::read(&archive).unwrap(),
    );
    for run in [in_place, piped] {
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(
            run.stderr.contains("does not match its config"),
            "{}",
            run.stderr
        );
    }
    assert_eq!(remote_digest(&target, "lying:1"), None);
    let loaded = ferry
        .run(&["load", "-i", archive.to_str().unwrap()])
        .expect_code(1);
    assert!(
        loaded.stderr.contains("does not match its config"),
        "{}",
        loaded.stderr
    );
}
