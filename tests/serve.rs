//! `ferry serve`: the store as a registry, tested with real clients —
//! ferry itself, skopeo, Docker Engine, podman — and with raw requests for
//! the error codes and bad input.

use crate::round_trip::{fixture, seeded};
use crate::support::registry::{Auth, Registry};
use crate::support::{http, sha256, Ferry};

/// A serve over a fresh store, and a ferry whose store it is.
fn served(auth: Auth, tls: bool, extra: &[&str]) -> (Registry, Ferry) {
    let owner = Ferry::new();
    let registry = Registry::ferry_serve(&owner.store, auth, tls, extra);
    (registry, owner)
}

#[test]
fn ferry_pushes_to_and_pulls_from_serve_with_digests_kept() {
    let (source, fixture) = seeded();
    let (serve, owner) = served(Auth::None, false, &[]);
    let ferry = Ferry::new();
    for tag in ["1.0", "multi"] {
        let image = format!("{}/team/app:{tag}", source.host);
        ferry.run(&["pull", "--all-platforms", &image]).ok();
        ferry
            .run(&["push", &image, &format!("{}/team/app:{tag}", serve.host)])
            .ok();
    }
    assert_eq!(
        sha256(&serve.skopeo_raw("team/app:1.0")),
        fixture.app1.digest()
    );
    assert_eq!(
        sha256(&serve.skopeo_raw("team/app:multi")),
        fixture.multi.digest()
    );
    // What serve accepted is in its store at once.
    let images = owner.run(&["images"]).ok().stdout;
    assert!(
        images.contains(&format!("{}/team/app", serve.host)),
        "{images}"
    );
    // Pull back whole, into another store, through the catalog and tags.
    let other = Ferry::new();
    let pulled = other
        .run(&[
            "pull",
            "--all-platforms",
            &format!("{}/team/app:multi", serve.host),
        ])
        .ok();
    assert!(
        pulled.stdout.contains(&fixture.multi.digest()),
        "{}",
        pulled.stdout
    );
    let tags = other
        .run(&["tags", &format!("{}/team/app", serve.host)])
        .ok();
    assert_eq!(
        tags.stdout.split_whitespace().collect::<Vec<_>>(),
        ["1.0", "multi"]
    );
    let (status, _, body) = http(&serve.host, "GET", "/v2/_catalog?n=1", &[], b"");
    assert_eq!(status, 200);
    assert_eq!(
        String::from_utf8_lossy(&body),
        r#"{"repositories":["team/app"]}"#
    );
    // A range of a blob.
    let layer = &fixture.app1.layers[0];
    let (status, headers, body) = http(
        &serve.host,
        "GET",
        &format!("/v2/team/app/blobs/{}", layer.digest),
        &[("Range", "bytes=10-19")],
        b"",
    );
    assert_eq!(status, 206);
    assert_eq!(body, layer.gzip[10..20]);
    assert!(headers
        .iter()
        .any(|(n, v)| n == "content-range" && v.starts_with("bytes 10-19/")));
}

#[test]
fn skopeo_copies_both_ways_keeping_the_index_digest() {
    let fixture = fixture();
    let (serve, _owner) = served(Auth::None, false, &[]);
    serve.skopeo_push(fixture.layout.path(), "multi", "team/app");
    assert_eq!(
        sha256(&serve.skopeo_raw("team/app:multi")),
        fixture.multi.digest()
    );
    let target = Registry::start();
    crate::support::run_ok(std::process::Command::new("skopeo").args([
        "copy",
        "--all",
        "--preserve-digests",
        "-q",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{}/team/app:multi", serve.host),
        &format!("docker://{}/copy/app:multi", target.host),
    ]));
    assert_eq!(
        sha256(&target.skopeo_raw("copy/app:multi")),
        fixture.multi.digest()
    );
}

#[test]
fn docker_and_podman_pull_and_push() {
    use crate::support::engines::{Docker, Podman};
    let fixture = fixture();
    let (serve, owner) = served(Auth::None, false, &[]);
    serve.skopeo_push(fixture.layout.path(), "1.0", "team/app");
    let image = format!("{}/team/app:1.0", serve.host);
    // Docker treats loopback registries as insecure: plain HTTP works.
    let docker = Docker::start();
    docker.run(&["pull", &image]);
    let id = docker.run(&["image", "inspect", "--format", "{{.Id}}", &image]);
    assert_eq!(id.trim(), fixture.app1.config_digest());
    let pushed = format!("{}/docker/app:1.0", serve.host);
    docker.run(&["tag", &image, &pushed]);
    docker.run(&["push", &pushed]);
    let podman = Podman::new();
    podman.run(&["pull", "--tls-verify=false", &pushed]);
    let from_podman = format!("{}/podman/app:1.0", serve.host);
    podman.run(&["tag", &pushed, &from_podman]);
    podman.run(&["push", "--tls-verify=false", &from_podman]);
    let images = owner.run(&["images"]).ok().stdout;
    for name in ["docker/app", "podman/app"] {
        assert!(images.contains(name), "{images}");
    }
    owner.run(&["verify", "--read-data"]).ok();
}

#[test]
fn logins_read_only_and_tls() {
    let fixture = fixture();
    // htpasswd: everything needs a login; ferry uses its configured one.
    let (serve, _owner) = served(Auth::Basic, true, &[]);
    serve.skopeo_push(fixture.layout.path(), "1.0", "team/app");
    let mut ferry = Ferry::new().with_config(&format!("version = 1\n{}", serve.ferry_config()));
    ferry.envs.push((
        "TEST_REGISTRY_PASSWORD".into(),
        crate::support::registry::PASSWORD.into(),
    ));
    let image = format!("{}/team/app:1.0", serve.host);
    ferry.run(&["pull", &image]).ok();
    let stranger = Ferry::new().with_config(&format!(
        "version = 1\n[registries.\"{}\"]\nca_file = \"{}\"\n",
        serve.host,
        serve.tls_ca.as_ref().unwrap().display()
    ));
    let refused = stranger.run(&["pull", &image]).expect_code(1);
    assert!(
        refused.stderr.to_lowercase().contains("auth") || refused.stderr.contains("401"),
        "{}",
        refused.stderr
    );
    // Read-only: pulls yes, pushes no.
    let (read_only, _) = served(Auth::None, false, &["--read-only"]);
    let pushed = ferry
        .run(&["push", &image, &format!("{}/team/app:1.0", read_only.host)])
        .expect_code(1);
    assert!(pushed.stderr.contains("read-only"), "{}", pushed.stderr);
    // Without --htpasswd or --allow-anonymous-push, pushes are denied.
    let locked = {
        let store = Ferry::new();
        let mut command = store.command(&["serve", "--addr", "127.0.0.1:0"]);
        command.stdout(std::process::Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let host = line
            .split("://")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_owned();
        let (status, _, body) = http(&host, "POST", "/v2/team/app/blobs/uploads/", &[], b"");
        let _ = child.kill();
        let _ = child.wait();
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    assert_eq!(locked.0, 403, "{}", locked.1);
    assert!(
        locked.1.contains("DENIED") && locked.1.contains("--htpasswd"),
        "{}",
        locked.1
    );
}

#[test]
fn referrers_are_served_through_the_api() {
    let source = Registry::start();
    let signed = crate::referrers::seed(&source, "signed/app");
    let (serve, owner) = served(Auth::None, false, &[]);
    let ferry = Ferry::new();
    ferry
        .run(&[
            "copy",
            &format!("{}/signed/app:1.0", source.host),
            &format!("{}/signed/app:1.0", serve.host),
        ])
        .ok();
    // serve answered OCI-Subject: no fallback tag was pushed.
    let tags = ferry
        .run(&["tags", &format!("{}/signed/app", serve.host)])
        .ok();
    let hex = signed.image.trim_start_matches("sha256:");
    assert!(
        !tags.stdout.contains(&format!("sha256-{hex}\n")),
        "{}",
        tags.stdout
    );
    assert!(
        tags.stdout.contains(&format!("sha256-{hex}.sig")),
        "{}",
        tags.stdout
    );
    let listed = |query: &str| {
        let (status, headers, body) = http(
            &serve.host,
            "GET",
            &format!("/v2/signed/app/referrers/{}{query}", signed.image),
            &[],
            b"",
        );
        assert_eq!(status, 200);
        let index: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let digests: Vec<String> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["digest"].as_str().unwrap().to_owned())
            .collect();
        (digests, headers)
    };
    let (all, _) = listed("");
    assert_eq!(all, std::slice::from_ref(&signed.sbom));
    let (none, headers) = listed("?artifactType=application/vnd.in-toto%2Bjson");
    assert!(none.is_empty());
    assert!(headers
        .iter()
        .any(|(n, v)| n == "oci-filters-applied" && v == "artifactType"));
    assert_eq!(
        crate::stored_referrers::inspected_referrers(
            &owner,
            &format!("{}/signed/app:1.0", serve.host)
        )
        .len(),
        3
    );
    // And out again, to a registry without the API: fallback indexes.
    let target = Registry::start();
    ferry
        .run(&[
            "copy",
            &format!("{}/signed/app:1.0", serve.host),
            &format!("{}/mirror/app:1.0", target.host),
        ])
        .ok();
    assert_eq!(
        crate::referrers::listed(&target, "mirror/app", &signed.image),
        std::slice::from_ref(&signed.sbom)
    );
    assert_eq!(
        crate::referrers::listed(&target, "mirror/app", &signed.sbom),
        std::slice::from_ref(&signed.signature)
    );
}

#[test]
fn a_sync_job_between_two_serves() {
    let fixture = fixture();
    let (first, _first_owner) = served(Auth::None, false, &[]);
    let (second, second_owner) = served(Auth::None, false, &[]);
    first.skopeo_push(fixture.layout.path(), "multi", "team/app");
    first.skopeo_push(fixture.layout.path(), "1.0", "team/app");
    let ferry = Ferry::new().with_config(&format!(
        "version = 1\n[[sync]]\nname = \"islands\"\nsource = \"{}/team/app\"\ntarget = \"{}/mirror/app\"\n",
        first.host, second.host
    ));
    ferry.run(&["run"]).ok();
    assert_eq!(
        sha256(&second.skopeo_raw("mirror/app:multi")),
        fixture.multi.digest()
    );
    assert_eq!(
        sha256(&second.skopeo_raw("mirror/app:1.0")),
        fixture.app1.digest()
    );
    second_owner.run(&["verify", "--read-data"]).ok();
    let again = ferry.run(&["run"]).ok();
    assert!(again.stdout.contains("0 changes"), "{}", again.stdout);
}

/// The blob files of a store.
fn blobs(owner: &Ferry) -> Vec<std::path::PathBuf> {
    owner.blob_files()
}

fn code(body: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    value["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn bad_requests_get_the_spec_error_and_store_nothing() {
    let (serve, owner) = served(Auth::None, false, &[]);
    let host = &serve.host;
    let get = |path: &str| http(host, "GET", path, &[], b"");
    // Names and digests.
    let (status, _, body) = get("/v2/Team/App/tags/list");
    assert_eq!((status, code(&body).as_str()), (400, "NAME_INVALID"));
    let (status, _, body) = get("/v2/team/../../etc/manifests/passwd");
    assert_eq!((status, code(&body).as_str()), (400, "NAME_INVALID"));
    let (status, _, body) = get("/v2/team/app/blobs/sha256:xyz");
    assert_eq!((status, code(&body).as_str()), (400, "DIGEST_INVALID"));
    let (status, _, body) = get("/v2/team/app/manifests/1.0");
    assert_eq!((status, code(&body).as_str()), (404, "MANIFEST_UNKNOWN"));
    let missing = sha256(b"absent");
    let (status, _, body) = get(&format!("/v2/team/app/blobs/{missing}"));
    assert_eq!((status, code(&body).as_str()), (404, "BLOB_UNKNOWN"));
    // A blob whose bytes are not its digest: refused, nothing stored.
    let claimed = sha256(b"the real bytes");
    let (status, _, body) = http(
        host,
        "POST",
        &format!("/v2/team/app/blobs/uploads/?digest={claimed}"),
        &[],
        b"other bytes",
    );
    assert_eq!((status, code(&body).as_str()), (400, "DIGEST_INVALID"));
    assert!(blobs(&owner).is_empty());
    // A chunk whose Content-Range skips bytes.
    let (status, headers, _) = http(host, "POST", "/v2/team/app/blobs/uploads/", &[], b"");
    assert_eq!(status, 202);
    let location = headers
        .iter()
        .find(|(n, _)| n == "location")
        .unwrap()
        .1
        .clone();
    let (status, _, _) = http(
        host,
        "PATCH",
        &location,
        &[("Content-Range", "0-3")],
        b"abcd",
    );
    assert_eq!(status, 202);
    let (status, _, _) = http(
        host,
        "PATCH",
        &location,
        &[("Content-Range", "10-13")],
        b"efgh",
    );
    assert_eq!(status, 416);
    let (status, _, body) = http(
        host,
        "PUT",
        // What the client believes it sent: the refused chunk is not in it.
        &format!("{location}?digest={}", sha256(b"abcdefghXXXX")),
        &[],
        b"XXXX",
    );
    assert_eq!((status, code(&body).as_str()), (400, "DIGEST_INVALID"));
    assert!(blobs(&owner).is_empty());
    // A manifest naming a blob the registry does not hold.
    let config = sha256(b"{}");
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [],
    })
    .to_string();
    let content_type = [("Content-Type", "application/vnd.oci.image.manifest.v1+json")];
    let (status, _, body) = http(
        host,
        "PUT",
        "/v2/team/app/manifests/1.0",
        &content_type,
        manifest.as_bytes(),
    );
    assert_eq!(
        (status, code(&body).as_str()),
        (400, "MANIFEST_BLOB_UNKNOWN")
    );
    // One over the size cap.
    let huge = vec![b' '; 5 * 1024 * 1024];
    let (status, _, _) = http(
        host,
        "PUT",
        "/v2/team/app/manifests/big",
        &content_type,
        &huge,
    );
    assert_eq!(status, 413);
    // A manifest pushed by a digest it does not hash to.
    let (status, _, body) = http(
        host,
        "PUT",
        &format!("/v2/team/app/manifests/{missing}"),
        &content_type,
        manifest.as_bytes(),
    );
    assert_eq!((status, code(&body).as_str()), (400, "DIGEST_INVALID"));
    assert!(blobs(&owner).is_empty());
    assert!(
        !owner.index_json().contains("team/app"),
        "no tag: {}",
        owner.index_json()
    );
    // A client that stops in the middle of an upload: nothing is kept, and
    // the server keeps serving.
    {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(host).unwrap();
        let request = format!(
            "POST /v2/team/app/blobs/uploads/?digest={claimed} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100000\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        stream.write_all(&[7u8; 1000]).unwrap();
    }
    let (status, _, _) = get("/v2/");
    assert_eq!(status, 200);
    let (status, _, _) = get("/v2/_catalog");
    assert_eq!(status, 200);
    assert!(blobs(&owner).is_empty());
}

#[test]
fn abandoned_uploads_expire_and_their_bytes_go() {
    let (serve, owner) = served(Auth::None, false, &["--upload-timeout", "1"]);
    let host = &serve.host;
    let (status, headers, _) = http(host, "POST", "/v2/team/app/blobs/uploads/", &[], b"");
    assert_eq!(status, 202);
    let ingest = owner.store.join("ingest");
    // A session holds no file until bytes arrive.
    assert!(crate::support::list_files(&ingest).is_empty());
    let location = headers
        .iter()
        .find(|(n, _)| n == "location")
        .unwrap()
        .1
        .clone();
    let (status, _, _) = http(host, "PATCH", &location, &[], b"some bytes");
    assert_eq!(status, 202);
    assert_eq!(crate::support::list_files(&ingest).len(), 1);
    // The server's timer drops it with no other request arriving.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !crate::support::list_files(&ingest).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle upload was not dropped"
        );
        std::thread::yield_now();
    }
    let (status, _, body) = http(host, "PATCH", &location, &[], b"late");
    assert_eq!((status, code(&body).as_str()), (404, "BLOB_UPLOAD_UNKNOWN"));
}

#[test]
fn load_gc_and_prune_run_beside_serve() {
    let fixture = fixture();
    let (serve, owner) = served(Auth::None, false, &[]);
    // What `load` adds is served at once.
    let source = Registry::start();
    source.skopeo_push(fixture.layout.path(), "2.0", "team/app");
    let ferry = Ferry::new();
    let image = format!("{}/team/app:2.0", source.host);
    ferry.run(&["pull", &image]).ok();
    let archive = ferry.dir.path().join("two.tar");
    ferry
        .run(&["save", "-o", archive.to_str().unwrap(), &image])
        .ok();
    owner.run(&["load", "-i", archive.to_str().unwrap()]).ok();
    assert_eq!(
        sha256(&serve.skopeo_raw("team/app:2.0")),
        fixture.app2.digest()
    );
    // A push whose blobs are in but whose manifest is not yet: a gc started
    // now waits for it, and deletes nothing the push needs.
    let app = &fixture.app1;
    let mut uploads: Vec<(String, Vec<u8>)> = vec![(app.config_digest(), app.config.clone())];
    uploads.extend(
        app.layers
            .iter()
            .map(|l| (l.digest.clone(), l.gzip.clone())),
    );
    for (digest, bytes) in &uploads {
        let (status, _, _) = http(
            &serve.host,
            "POST",
            &format!("/v2/team/app/blobs/uploads/?digest={digest}"),
            &[],
            bytes,
        );
        assert_eq!(status, 201);
    }
    let gc = owner
        .command(&["gc"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (status, _, _) = http(
        &serve.host,
        "PUT",
        "/v2/team/app/manifests/1.0",
        &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
        &app.manifest,
    );
    assert_eq!(status, 201);
    assert!(gc.wait_with_output().unwrap().status.success());
    owner.run(&["verify", "--read-data"]).ok();
    assert_eq!(sha256(&serve.skopeo_raw("team/app:1.0")), app.digest());
    // rmi + prune beside it: the image is gone from the registry at once.
    owner
        .run(&["rmi", &format!("{}/team/app:1.0", serve.host)])
        .ok();
    assert!(serve.skopeo_raw_opt("team/app:1.0").is_none());
    assert!(
        !serve.log_lines().iter().any(|l| l.contains("WARN")),
        "{:?}",
        serve.log_lines()
    );
}

#[test]
fn a_full_disk_fails_the_push_and_the_server_goes_on() {
    let disk = crate::crash::Tmpfs::mount("1m");
    let store = disk.dir.path().join("store");
    let registry = Registry::ferry_serve(&store, Auth::None, false, &[]);
    let host = &registry.host;
    let big = crate::support::image::random_bytes(2_000_000, 9);
    let (status, _, body) = http(
        host,
        "POST",
        &format!("/v2/team/app/blobs/uploads/?digest={}", sha256(&big)),
        &[],
        &big,
    );
    assert_eq!(status, 500, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("disk is full"));
    assert!(crate::support::list_files(&store.join("ingest")).is_empty());
    assert!(crate::support::list_files(&store.join("blobs/sha256")).is_empty());
    // Smaller pushes still work.
    let small = b"fits".to_vec();
    let (status, _, _) = http(
        host,
        "POST",
        &format!("/v2/team/app/blobs/uploads/?digest={}", sha256(&small)),
        &[],
        &small,
    );
    assert_eq!(status, 201);
}

/// Docker's trust for one registry's CA (`/etc/docker/certs.d/HOST/ca.crt`),
/// removed on drop.
struct DockerTrust(std::path::PathBuf);

impl DockerTrust {
    fn add(host: &str, ca: &std::path::Path) -> DockerTrust {
        let dir = std::path::Path::new("/etc/docker/certs.d").join(host);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(ca, dir.join("ca.crt")).unwrap();
        DockerTrust(dir)
    }
}

impl Drop for DockerTrust {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn docker_and_podman_log_in_over_tls() {
    use crate::support::engines::{Docker, Podman};
    use crate::support::registry::{PASSWORD, USER};
    let fixture = fixture();
    let (serve, owner) = served(Auth::Basic, true, &[]);
    serve.skopeo_push(fixture.layout.path(), "1.0", "team/app");
    let ca = serve.tls_ca.clone().unwrap();
    let _trust = DockerTrust::add(&serve.host, &ca);
    let docker = Docker::start();
    let login = crate::support::run_ok(
        std::process::Command::new("sh")
            .env("DOCKER_HOST", docker.host())
            .env("DOCKER_CONFIG", owner.dir.path().join("docker-client"))
            .arg("-c")
            .arg(format!(
                "printf '%s' '{PASSWORD}' | docker login -u {USER} --password-stdin {} && docker pull {}/team/app:1.0 && docker tag {}/team/app:1.0 {}/docker/tls:1.0 && docker push {}/docker/tls:1.0",
                serve.host, serve.host, serve.host, serve.host, serve.host
            )),
    );
    assert!(login.contains("Login Succeeded"), "{login}");
    let certs = owner.dir.path().join("podman-certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&ca, certs.join("ca.crt")).unwrap();
    let podman = Podman::new();
    let creds = format!("{USER}:{PASSWORD}");
    let cert_dir = format!("--cert-dir={}", certs.display());
    podman.run(&[
        "pull",
        &cert_dir,
        "--creds",
        &creds,
        &format!("{}/docker/tls:1.0", serve.host),
    ]);
    let images = owner.run(&["images"]).ok().stdout;
    assert!(images.contains("docker/tls"), "{images}");
    // Docker 20.10 pushes its own manifest format: the image ID is what stays.
    let pushed: serde_json::Value =
        serde_json::from_slice(&serve.skopeo_raw("docker/tls:1.0")).unwrap();
    assert_eq!(
        pushed["config"]["digest"],
        fixture.app1.config_digest().as_str()
    );
}
