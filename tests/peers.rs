//! Interop with real container engines: ferry archives load in Docker
//! Engine 20.10 and podman with the image ID ferry computed; `docker save`
//! output (one image, several images, several tags) loads in ferry and
//! pushes; `ferry export` matches `docker export`.

use crate::rootfs::{load_layout, tar_listing, whiteout_image};
use crate::round_trip::seeded;
use crate::support::engines::{Docker, Podman};
use crate::support::registry::Registry;
use crate::support::Ferry;

fn image_id(ferry: &Ferry, image: &str) -> String {
    let inspect: serde_json::Value =
        serde_json::from_str(&ferry.run(&["inspect", image]).ok().stdout).unwrap();
    inspect[0]["Id"].as_str().unwrap().to_owned()
}

#[test]
fn docker_engine_round_trips() {
    let (registry, fixture) = seeded();
    let docker = Docker::start();
    let ferry = Ferry::new();
    let one = format!("{}/team/app:1.0", registry.host);
    let two = format!("{}/team/app:2.0", registry.host);
    let multi = format!("{}/team/app:multi", registry.host);
    ferry.run(&["pull", &one]).ok();
    ferry.run(&["pull", &two]).ok();
    ferry.run(&["pull", "--all-platforms", &multi]).ok();

    // ferry → docker: the loaded image IDs are ferry's.
    let archive = ferry.dir.path().join("three.tar");
    ferry
        .run(&["save", "-o", archive.to_str().unwrap(), &one, &two, &multi])
        .ok();
    let loaded = docker.run(&["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains(&format!("Loaded image: {one}")), "{loaded}");
    for image in [&one, &two, &multi] {
        let id = docker.run(&["image", "inspect", "--format", "{{.Id}}", image]);
        let ferry_id = if image == &multi {
            fixture.multi.images[0].1.config_digest()
        } else {
            image_id(&ferry, image)
        };
        assert_eq!(id.trim(), ferry_id, "{image}");
    }
    // gzip-compressed ferry archives load too.
    let gz = ferry.dir.path().join("one.tar.gz");
    ferry
        .run(&[
            "save",
            "--compress",
            "gzip",
            "-o",
            gz.to_str().unwrap(),
            &one,
        ])
        .ok();
    docker.run(&["rmi", &one]);
    assert!(docker
        .run(&["load", "-i", gz.to_str().unwrap()])
        .contains(&one));

    // docker → ferry: one image, several images, several tags of one image.
    docker.run(&["tag", &one, "example.com/extra:one"]);
    let out = tempfile::tempdir().unwrap();
    let single = out.path().join("single.tar");
    let many = out.path().join("many.tar");
    docker.run(&["save", "-o", single.to_str().unwrap(), &one]);
    docker.run(&[
        "save",
        "-o",
        many.to_str().unwrap(),
        &one,
        "example.com/extra:one",
        &two,
    ]);
    let target = Registry::start();
    for archive in [&single, &many] {
        let other = Ferry::new();
        let run = other.run(&["load", "-i", archive.to_str().unwrap()]).ok();
        assert!(
            run.stdout.contains(&format!("Loaded image: {one}")),
            "{}",
            run.stdout
        );
        assert_eq!(image_id(&other, &one), fixture.app1.config_digest());
        other.run(&["verify", "--read-data"]).ok();
        if archive == &many {
            assert_eq!(
                image_id(&other, "example.com/extra:one"),
                fixture.app1.config_digest()
            );
            assert_eq!(image_id(&other, &two), fixture.app2.config_digest());
            other
                .run(&[
                    "push",
                    &two,
                    &format!("{}/from-docker/app:2.0", target.host),
                ])
                .ok();
            let raw: serde_json::Value =
                serde_json::from_slice(&target.skopeo_raw("from-docker/app:2.0")).unwrap();
            assert_eq!(raw["config"]["digest"], fixture.app2.config_digest());
            assert_eq!(raw["layers"].as_array().unwrap().len(), 2);
            // copy archive: of the same docker save output (read in place,
            // layer.tar files hashed where they lie) gives the same digest.
            other
                .run(&[
                    "copy",
                    &format!("archive:{}", archive.display()),
                    &format!("{}/via-copy", target.host),
                ])
                .ok();
            let pushed = target.skopeo_raw("from-docker/app:2.0");
            let copied = target.skopeo_raw(&format!("via-copy/{}", two.split_once('/').unwrap().1));
            assert_eq!(pushed, copied);
        }
    }
    // registry → archive with no store, then docker load.
    let remote = out.path().join("remote.tar");
    Ferry::new()
        .run(&["copy", &one, &format!("archive:{}", remote.display())])
        .ok();
    docker.run(&["rmi", &one, "example.com/extra:one"]);
    let loaded = docker.run(&["load", "-i", remote.to_str().unwrap()]);
    assert!(loaded.contains(&one), "{loaded}");
    let id = docker.run(&["image", "inspect", "--format", "{{.Id}}", &one]);
    assert_eq!(id.trim(), fixture.app1.config_digest());

    // export matches docker export of a container made from the image.
    let (layout, _) = whiteout_image();
    load_layout(&ferry, layout.path(), "1", "example.com/whiteouts:1");
    let saved = ferry.dir.path().join("whiteouts.tar");
    ferry
        .run(&[
            "save",
            "-o",
            saved.to_str().unwrap(),
            "example.com/whiteouts:1",
        ])
        .ok();
    docker.run(&["load", "-i", saved.to_str().unwrap()]);
    let container = docker
        .run(&["create", "example.com/whiteouts:1", "/none"])
        .trim()
        .to_owned();
    let docker_export = out.path().join("docker-export.tar");
    docker.run(&["export", "-o", docker_export.to_str().unwrap(), &container]);
    let ferry_export = ferry
        .command(&["export", "example.com/whiteouts:1"])
        .output()
        .unwrap()
        .stdout;
    let mut theirs = tar_listing(&std::fs::read(&docker_export).unwrap());
    // docker adds the container's own mount points and /.dockerenv.
    theirs.retain(|path, _| {
        !matches!(path.as_str(), ".dockerenv" | "dev" | "etc" | "proc" | "sys")
            && !path.starts_with("dev/")
            && !path.starts_with("etc/")
            && !path.starts_with("proc/")
            && !path.starts_with("sys/")
    });
    let ours = tar_listing(&ferry_export);
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    for (path, (kind, mode, content)) in &ours {
        let (their_kind, their_mode, their_content) = &theirs[path];
        assert_eq!((kind, mode), (their_kind, their_mode), "{path}");
        if *kind != 'h' {
            assert_eq!(content, their_content, "{path}");
        }
    }
}

#[test]
fn podman_loads_ferry_archives_with_ferry_image_ids() {
    let (registry, fixture) = seeded();
    let ferry = Ferry::new();
    let one = format!("{}/team/app:1.0", registry.host);
    let two = format!("{}/team/app:2.0", registry.host);
    ferry.run(&["pull", &one]).ok();
    ferry.run(&["pull", &two]).ok();
    // One image: podman takes the OCI path; two: manifest.json.
    for (file, images) in [
        ("one.tar", vec![one.as_str()]),
        ("two.tar", vec![one.as_str(), two.as_str()]),
    ] {
        let archive = ferry.dir.path().join(file);
        let mut args = vec!["save", "-o", archive.to_str().unwrap()];
        args.extend(images.iter().copied());
        ferry.run(&args).ok();
        let podman = Podman::new();
        podman.load(&archive);
        for image in &images {
            let id = podman.run(&["image", "inspect", "--format", "{{.Id}}", image]);
            let expected = if *image == one {
                fixture.app1.config_digest()
            } else {
                fixture.app2.config_digest()
            };
            assert_eq!(format!("sha256:{}", id.trim()), expected, "{file} {image}");
        }
    }
}

/// Run a peer's command, returning whether it succeeded and its stderr.
fn attempt(command: &mut std::process::Command) -> (bool, String) {
    let output = command.output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn compressed_archives_load_where_the_table_says() {
    let (registry, fixture) = seeded();
    let ferry = Ferry::new();
    let one = format!("{}/team/app:1.0", registry.host);
    ferry.run(&["pull", &one]).ok();
    let docker = Docker::start();
    for (compress, docker_loads, skopeo_docker_archive) in [
        ("none", true, true),
        ("gzip", true, false),
        ("zstd", false, true),
    ] {
        let archive = ferry.dir.path().join(format!("app-{compress}.tar"));
        let path = archive.to_str().unwrap();
        let saved = ferry
            .run(&["save", "--compress", compress, "-o", path, &one])
            .ok();
        // save warns exactly when a peer in the table cannot read it.
        assert_eq!(
            saved.stderr.contains("does not load with"),
            compress != "none",
            "{compress}: {}",
            saved.stderr
        );
        let (loaded, why) = attempt(
            std::process::Command::new("docker")
                .env("DOCKER_HOST", docker.host())
                .args(["load", "-i", path]),
        );
        assert_eq!(loaded, docker_loads, "docker load {compress}: {why}");
        if loaded {
            docker.run(&["rmi", &one]);
        } else {
            assert!(why.contains("invalid tar header"), "{why}");
        }
        let podman = Podman::new();
        podman.load(&archive);
        let id = podman.run(&["image", "inspect", "--format", "{{.Id}}", &one]);
        assert_eq!(
            format!("sha256:{}", id.trim()),
            fixture.app1.config_digest()
        );
        let (read, why) = attempt(
            std::process::Command::new("skopeo")
                .args(["inspect", &format!("docker-archive:{path}")]),
        );
        assert_eq!(
            read, skopeo_docker_archive,
            "skopeo docker-archive {compress}: {why}"
        );
        let (read, why) = attempt(
            std::process::Command::new("skopeo").args(["inspect", &format!("oci-archive:{path}")]),
        );
        assert!(read, "skopeo oci-archive {compress}: {why}");
    }
}
