//! A hostile or broken registry: connections cut mid-blob (resumed with
//! `Range`, no byte fetched twice), a server that ignores `Range` (clean
//! restart, never a splice), lying `Docker-Content-Digest`, oversized
//! manifests, redirects to another host (credentials never follow), to
//! link-local addresses (refused), and a registry that answers every
//! credential with another 401 (an error, not a loop). Secrets never appear
//! in debug output.

use crate::round_trip::fixture;
use crate::support::fake::{FakeRegistry, Faults};
use crate::support::Ferry;

fn pull(ferry: &Ferry, fake: &FakeRegistry) -> crate::support::Run {
    ferry.run(&["-vv", "pull", &format!("{}/app:1.0", fake.host)])
}

#[test]
fn a_cut_connection_resumes_with_range_and_fetches_no_byte_twice() {
    let fixture = fixture();
    let layer = &fixture.app2.layers[1];
    let fake = FakeRegistry::start(
        &fixture.app2,
        "1.0",
        Faults {
            cut_once: Some(layer.digest.clone()),
            ..Faults::default()
        },
    );
    let ferry = Ferry::new();
    pull(&ferry, &fake).ok();
    assert_eq!(
        fake.bytes_served(&layer.digest),
        layer.gzip.len(),
        "bytes were fetched twice"
    );
    assert_eq!(fake.count("GET", &layer.digest), 2);
    ferry.run(&["verify", "--read-data"]).ok();
}

#[test]
fn a_server_ignoring_range_makes_a_clean_restart() {
    let fixture = fixture();
    let layer = &fixture.app2.layers[1];
    let fake = FakeRegistry::start(
        &fixture.app2,
        "1.0",
        Faults {
            cut_once: Some(layer.digest.clone()),
            ignore_range: true,
            ..Faults::default()
        },
    );
    let ferry = Ferry::new();
    pull(&ferry, &fake).ok();
    ferry.run(&["verify", "--read-data"]).ok();
    let inspect: serde_json::Value = serde_json::from_str(
        &ferry
            .run(&["inspect", &format!("{}/app:1.0", fake.host)])
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(inspect[0]["Digest"], fixture.app2.digest());
}

#[test]
fn lying_digests_and_oversized_manifests_are_refused() {
    let fixture = fixture();
    let lying = FakeRegistry::start(
        &fixture.app1,
        "1.0",
        Faults {
            lie_digest: true,
            ..Faults::default()
        },
    );
    let ferry = Ferry::new();
    let run = pull(&ferry, &lying).expect_code(1);
    assert!(run.stderr.contains("digest mismatch"), "{}", run.stderr);
    let huge = FakeRegistry::start(
        &fixture.app1,
        "1.0",
        Faults {
            huge_manifest: true,
            ..Faults::default()
        },
    );
    let run = pull(&ferry, &huge).expect_code(1);
    assert!(run.stderr.contains("larger than"), "{}", run.stderr);
    assert!(ferry.blob_files().is_empty());
}

#[test]
fn credentials_never_follow_a_redirect_to_another_host_and_never_print() {
    let fixture = fixture();
    let password = "Red1rect-S3cret";
    let other = FakeRegistry::start(&fixture.app1, "1.0", Faults::default());
    let origin = FakeRegistry::start(
        &fixture.app1,
        "1.0",
        Faults {
            basic_auth: Some(format!("user:{password}")),
            redirect_blobs_to: Some(format!("http://{}", other.host)),
            ..Faults::default()
        },
    );
    let mut ferry = Ferry::new().with_config(&format!(
        "version = 1\n[registries.\"{}\"]\nusername = \"user\"\npassword_env = \"FAKE_PASSWORD\"\n",
        origin.host
    ));
    ferry.envs.push(("FAKE_PASSWORD".into(), password.into()));
    ferry.envs.push(("FERRY_LOG".into(), "debug".into()));
    let run = pull(&ferry, &origin).ok();
    assert!(origin
        .log()
        .iter()
        .any(|l| l.contains("/manifests/") && l.ends_with("auth=true")));
    let redirected: Vec<String> = other
        .log()
        .into_iter()
        .filter(|l| l.contains("/blobs/"))
        .collect();
    assert!(
        !redirected.is_empty(),
        "blobs came from the redirect target"
    );
    assert!(
        redirected.iter().all(|l| l.ends_with("auth=false")),
        "credentials followed a redirect: {redirected:?}"
    );
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("user:{password}"));
    for secret in [password, encoded.as_str()] {
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "secret leaked"
        );
    }
}

#[test]
fn redirects_to_link_local_addresses_are_refused() {
    let fixture = fixture();
    let fake = FakeRegistry::start(
        &fixture.app1,
        "1.0",
        Faults {
            redirect_blobs_to: Some("http://169.254.169.254".into()),
            ..Faults::default()
        },
    );
    let ferry = Ferry::new();
    let run = pull(&ferry, &fake).expect_code(1);
    assert!(run.stderr.contains("link-local"), "{}", run.stderr);
    assert!(ferry.blob_files().is_empty());
}

#[test]
fn an_endless_challenge_is_an_error_not_a_loop() {
    let fixture = fixture();
    let fake = FakeRegistry::start(
        &fixture.app1,
        "1.0",
        Faults {
            always_401: true,
            ..Faults::default()
        },
    );
    let mut ferry = Ferry::new().with_config(&format!(
        "version = 1\n[registries.\"{}\"]\nusername = \"user\"\npassword_env = \"FAKE_PASSWORD\"\n",
        fake.host
    ));
    ferry
        .envs
        .push(("FAKE_PASSWORD".into(), "nope-Secret".into()));
    let run = pull(&ferry, &fake).expect_code(1);
    assert!(
        run.stderr.contains("authentication failed"),
        "{}",
        run.stderr
    );
    assert!(fake.count("GET", "/manifests/") <= 2, "{:?}", fake.log());
    assert!(!run.stderr.contains("nope-Secret"));
}

#[test]
fn credentials_for_one_registry_never_reach_another() {
    let fixture = fixture();
    let configured = FakeRegistry::start(&fixture.app1, "1.0", Faults::default());
    let stranger = FakeRegistry::start(
        &fixture.app1,
        "1.0",
        Faults {
            basic_auth: Some("user:pw".into()),
            ..Faults::default()
        },
    );
    let mut ferry = Ferry::new().with_config(&format!(
        "version = 1\n[registries.\"{}\"]\nusername = \"user\"\npassword_env = \"FAKE_PASSWORD\"\n[registries.\"docker.io\"]\nusername = \"hub\"\npassword_env = \"FAKE_PASSWORD\"\n",
        configured.host
    ));
    ferry.envs.push(("FAKE_PASSWORD".into(), "pw".into()));
    pull(&ferry, &stranger).expect_code(1);
    assert!(
        stranger.log().iter().all(|l| l.ends_with("auth=false")),
        "{:?}",
        stranger.log()
    );
}

#[test]
fn token_flows_never_print_tokens_or_passwords_even_at_trace_level() {
    use crate::support::registry::{Auth, Registry, PASSWORD};
    let registry = Registry::start_with(Auth::Token, false);
    let fixture = fixture();
    registry.skopeo_push(fixture.layout.path(), "1.0", "team/app");
    let mut ferry = Ferry::new().with_config(&format!("version = 1\n{}", registry.ferry_config()));
    ferry
        .envs
        .push(("TEST_REGISTRY_PASSWORD".into(), PASSWORD.into()));
    ferry.envs.push(("FERRY_LOG".into(), "trace".into()));
    let image = format!("{}/team/app:1.0", registry.host);
    let pulled = ferry.run(&["-vv", "pull", &image]).ok();
    let pushed = ferry
        .run(&[
            "-vv",
            "push",
            &image,
            &format!("{}/team/copy:1.0", registry.host),
        ])
        .ok();
    for run in [&pulled, &pushed] {
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(all.len() > 100, "trace output expected");
        assert!(!all.contains(PASSWORD), "password leaked");
        assert!(!all.contains("eyJ"), "a JWT leaked");
        assert!(
            !all.to_ascii_lowercase().contains("authorization: "),
            "an Authorization header leaked"
        );
    }
}

#[test]
fn a_stalled_download_is_abandoned_after_the_stall_timeout_and_resumed() {
    let fixture = fixture();
    let layer = &fixture.app2.layers[1];
    let fake = FakeRegistry::start(
        &fixture.app2,
        "1.0",
        Faults {
            stall_once: Some(layer.digest.clone()),
            ..Faults::default()
        },
    );
    let ferry = Ferry::new().with_config("version = 1\n[defaults]\nstall_timeout = \"1s\"\n");
    pull(&ferry, &fake).ok();
    // Half came before the stall, the rest through one Range request.
    assert_eq!(
        fake.bytes_served(&layer.digest),
        layer.gzip.len() - layer.gzip.len() / 2
    );
    assert_eq!(fake.count("GET", &layer.digest), 2);
    ferry.run(&["verify", "--read-data"]).ok();
}

fn index_of(children: &[(String, usize, &str)]) -> Vec<u8> {
    let manifests: Vec<serde_json::Value> = children
        .iter()
        .map(|(digest, size, media_type)| {
            serde_json::json!({"mediaType": media_type, "digest": digest, "size": size, "platform": {"os": "linux", "architecture": "amd64"}})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests})).unwrap()
}

#[test]
fn deep_and_repetitive_indexes_are_capped_and_deduplicated() {
    let fixture = fixture();
    let image = &fixture.app1;
    let manifest_type = "application/vnd.oci.image.manifest.v1+json";
    let index_type = "application/vnd.oci.image.index.v1+json";
    // One child listed 5 000 times: fetched once.
    let repeated = index_of(&vec![
        (image.digest(), image.manifest.len(), manifest_type);
        5000
    ]);
    // Twenty indexes nested inside each other.
    let mut nested = index_of(&[(image.digest(), image.manifest.len(), manifest_type)]);
    let mut extra = vec![("repeated".to_owned(), index_type.to_owned(), repeated)];
    for level in 0..20 {
        let digest = crate::support::sha256(&nested);
        extra.push((digest.clone(), index_type.to_owned(), nested.clone()));
        nested = index_of(&[(digest, nested.len(), index_type)]);
        if level == 19 {
            extra.push(("nested".to_owned(), index_type.to_owned(), nested.clone()));
        }
    }
    let fake = FakeRegistry::start(
        image,
        "1.0",
        Faults {
            extra_manifests: extra,
            ..Faults::default()
        },
    );
    let ferry = Ferry::new();
    ferry
        .run(&[
            "pull",
            "--all-platforms",
            &format!("{}/app:repeated", fake.host),
        ])
        .ok();
    assert_eq!(
        fake.count("GET", &format!("/manifests/{}", image.digest())),
        1
    );
    ferry.run(&["verify", "--read-data"]).ok();
    let deep = ferry
        .run(&[
            "pull",
            "--all-platforms",
            &format!("{}/app:nested", fake.host),
        ])
        .expect_code(1);
    assert!(
        deep.stderr.contains("nesting deeper than 8"),
        "{}",
        deep.stderr
    );
}

#[test]
fn a_purged_or_refused_upload_session_restarts_the_upload() {
    let fixture = fixture();
    let (registry, _) = crate::round_trip::seeded();
    let ferry = Ferry::new();
    let image = format!("{}/team/app:2.0", registry.host);
    ferry.run(&["pull", &image]).ok();
    for status in ["404 Not Found", "416 Range Not Satisfiable"] {
        let fake = FakeRegistry::start(
            &fixture.app1,
            "1.0",
            Faults {
                fail_first_patch: Some(status),
                ..Faults::default()
            },
        );
        let run = ferry
            .run(&["-v", "push", &image, &format!("{}/app:2.0", fake.host)])
            .ok();
        assert!(
            run.stderr.contains("upload session") && run.stderr.contains("uploaded again"),
            "{status}: {}",
            run.stderr
        );
        // The failed session was abandoned and a new one started for that blob.
        let patches = fake.count("PATCH", "/blobs/uploads/");
        assert!(patches >= 2, "{status}: {:?}", fake.log());
    }
}

#[test]
fn a_token_expiring_mid_transfer_is_refreshed_once_and_the_download_resumes() {
    let fixture = fixture();
    let layer = &fixture.app2.layers[1];
    let fake = FakeRegistry::start(
        &fixture.app2,
        "1.0",
        Faults {
            bearer: true,
            cut_once: Some(layer.digest.clone()),
            ..Faults::default()
        },
    );
    let ferry = Ferry::new();
    pull(&ferry, &fake).ok();
    // One token at the start, one refresh after the cut; nothing fetched twice.
    assert_eq!(fake.count("GET", "/token"), 2, "{:?}", fake.log());
    assert_eq!(fake.bytes_served(&layer.digest), layer.gzip.len());
    ferry.run(&["verify", "--read-data"]).ok();
}

#[test]
fn foreign_layer_urls_are_never_fetched() {
    let fixture = fixture();
    let image = &fixture.app1;
    let elsewhere = FakeRegistry::start(image, "1.0", Faults::default());
    let mut manifest: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
    manifest["layers"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "digest": format!("sha256:{}", "f".repeat(64)),
            "size": 1234,
            "urls": [format!("http://{}/foreign-layer", elsewhere.host)],
        }));
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let fake = FakeRegistry::start(
        image,
        "1.0",
        Faults {
            extra_manifests: vec![(
                "foreign".into(),
                "application/vnd.oci.image.manifest.v1+json".into(),
                bytes,
            )],
            ..Faults::default()
        },
    );
    let ferry = Ferry::new();
    ferry
        .run(&["pull", &format!("{}/app:foreign", fake.host)])
        .ok();
    assert!(
        elsewhere.log().is_empty(),
        "a foreign URL was fetched: {:?}",
        elsewhere.log()
    );
    assert_eq!(
        fake.count("GET", &"f".repeat(64)),
        0,
        "the foreign blob was requested from the registry"
    );
    ferry.run(&["verify", "--read-data"]).ok();
}

#[test]
fn a_redirect_from_https_to_plain_http_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = crate::support::registry::make_tls(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = format!(
        r#"
import http.server, ssl
class Redirect(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(307)
        self.send_header("Location", "http://127.0.0.1:9" + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", {port}), Redirect)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain("{cert}", "{key}")
server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
"#,
        cert = dir.path().join("cert.pem").display(),
        key = dir.path().join("key.pem").display()
    );
    let mut server = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), "ready");
    let ferry = Ferry::new().with_config(&format!(
        "version = 1\n[registries.\"127.0.0.1:{port}\"]\nca_file = \"{}\"\n",
        ca.display()
    ));
    let run = ferry
        .run(&["pull", &format!("127.0.0.1:{port}/app:1.0")])
        .expect_code(1);
    let _ = server.kill();
    let _ = server.wait();
    assert!(run.stderr.contains("https to plain http"), "{}", run.stderr);
}
