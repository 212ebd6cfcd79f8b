//! Authentication against the real registry: htpasswd basic auth, token
//! auth with the in-test issuer, TLS with a test CA, docker's config.json
//! written by `ferry login` and read back, and wrong passwords.

use crate::round_trip::fixture;
use crate::support::registry::{Auth, Registry, PASSWORD, USER};
use crate::support::{sha256, Ferry};

fn seeded(auth: Auth, tls: bool) -> (Registry, crate::round_trip::Fixture) {
    let registry = Registry::start_with(auth, tls);
    let fixture = fixture();
    registry.skopeo_push(fixture.layout.path(), "1.0", "team/app");
    (registry, fixture)
}

fn ferry_for(registry: &Registry, password: &str) -> Ferry {
    let mut ferry = Ferry::new().with_config(&format!("version = 1\n{}", registry.ferry_config()));
    ferry
        .envs
        .push(("TEST_REGISTRY_PASSWORD".into(), password.into()));
    ferry
}

#[test]
fn basic_auth_pull_and_push_with_password_env() {
    let (registry, fixture) = seeded(Auth::Basic, false);
    let ferry = ferry_for(&registry, PASSWORD);
    let image = format!("{}/team/app:1.0", registry.host);
    ferry.run(&["pull", &image]).ok();
    ferry
        .run(&["push", &image, &format!("{}/team/copy:1.0", registry.host)])
        .ok();
    assert_eq!(
        sha256(&registry.skopeo_raw("team/copy:1.0")),
        fixture.app1.digest()
    );
}

#[test]
fn token_auth_pull_push_and_mount() {
    let (registry, fixture) = seeded(Auth::Token, false);
    let ferry = ferry_for(&registry, PASSWORD);
    let image = format!("{}/team/app:1.0", registry.host);
    let before = registry.token_requests();
    ferry.run(&["pull", &image]).ok();
    // One token for the repository's pull scope, reused for every blob.
    assert_eq!(registry.token_requests() - before, 1);
    let copied = ferry
        .run(&["copy", &image, &format!("{}/other/app:1.0", registry.host)])
        .ok();
    assert!(copied.stdout.contains("mounted"), "{}", copied.stdout);
    assert_eq!(
        sha256(&registry.skopeo_raw("other/app:1.0")),
        fixture.app1.digest()
    );
}

#[test]
fn tls_with_test_ca_works_and_without_it_fails() {
    let (registry, fixture) = seeded(Auth::None, true);
    let image = format!("{}/team/app:1.0", registry.host);
    let trusting = ferry_for(&registry, "");
    let pulled = trusting.run(&["pull", &image]).ok();
    assert!(pulled.stdout.contains(&fixture.app1.digest()));
    // Without the CA the certificate is not trusted and there is no fallback
    // to HTTP: one clear error, said once, with the fix, and no retries.
    let stranger = Ferry::new();
    let refused = stranger.run(&["-v", "pull", &image]).expect_code(1);
    assert!(
        refused.stderr.contains(&registry.host)
            && refused.stderr.contains("not signed by a CA ferry trusts")
            && refused.stderr.contains("ca_file"),
        "{}",
        refused.stderr
    );
    assert!(
        !refused.stderr.contains("HTTP version"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains("retrying"), "{}", refused.stderr);
    assert!(!stranger.index_json().contains("team/app"));
}

#[test]
fn a_self_signed_ca_certificate_given_as_ca_file_is_trusted_as_that_certificate() {
    let registry = Registry::start_self_signed();
    let fixture = fixture();
    registry.skopeo_push(fixture.layout.path(), "1.0", "team/app");
    let image = format!("{}/team/app:1.0", registry.host);
    // curl accepts it given as the CA; so does ferry.
    let curl = std::process::Command::new("curl")
        .args(["-sf", "--cacert"])
        .arg(registry.tls_ca.as_ref().unwrap())
        .arg(format!("https://{}/v2/", registry.host))
        .status()
        .unwrap();
    assert!(curl.success(), "curl refused the certificate");
    let ferry = ferry_for(&registry, "");
    let pulled = ferry.run(&["pull", &image]).ok();
    assert!(
        pulled.stdout.contains(&fixture.app1.digest()),
        "{}",
        pulled.stdout
    );
    ferry
        .run(&["push", &image, &format!("{}/team/copy:1.0", registry.host)])
        .ok();
    // Another registry's certificate is not trusted because of this one.
    let other = Registry::start_self_signed();
    let mut config = registry.ferry_config();
    config.push_str(&format!(
        "\n[registries.\"{}\"]\nca_file = \"{}\"\n",
        other.host,
        registry.tls_ca.as_ref().unwrap().display()
    ));
    let mixed = Ferry::new().with_config(&format!("version = 1\n{config}"));
    let refused = mixed
        .run(&["tags", &format!("{}/team/app", other.host)])
        .expect_code(1);
    assert!(refused.stderr.contains("TLS"), "{}", refused.stderr);
}

#[test]
fn wrong_password_fails_cleanly_and_never_prints_the_secret() {
    for auth in [Auth::Basic, Auth::Token] {
        let (registry, _fixture) = seeded(auth, false);
        let ferry = ferry_for(&registry, "wrong-Secret-123");
        let run = ferry
            .run(&["-vv", "pull", &format!("{}/team/app:1.0", registry.host)])
            .expect_code(1);
        assert!(
            run.stderr.contains("authentication failed"),
            "{auth:?}: {}",
            run.stderr
        );
        assert!(
            !run.stderr.contains("wrong-Secret-123") && !run.stdout.contains("wrong-Secret-123")
        );
        assert_eq!(
            ferry.blob_files().len(),
            0,
            "nothing may be stored after a failed pull"
        );
    }
}

#[test]
fn login_writes_docker_config_and_logout_removes_it() {
    let (registry, _fixture) = seeded(Auth::Basic, false);
    let ferry = Ferry::new();
    let bad = ferry
        .run_with_stdin(
            &["login", "-u", USER, "--password-stdin", &registry.host],
            "nope\n",
        )
        .expect_code(1);
    assert!(
        bad.stderr.contains("authentication failed"),
        "{}",
        bad.stderr
    );
    ferry
        .run_with_stdin(
            &["login", "-u", USER, "--password-stdin", &registry.host],
            format!("{PASSWORD}\n"),
        )
        .ok();
    let config_path = ferry.dir.path().join("home/.docker/config.json");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    let auth = config["auths"][&registry.host]["auth"].as_str().unwrap();
    use base64::Engine as _;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(auth)
            .unwrap(),
        format!("{USER}:{PASSWORD}").into_bytes()
    );
    // The saved credentials are used by pull without any config file.
    ferry
        .run(&["pull", &format!("{}/team/app:1.0", registry.host)])
        .ok();
    let out = ferry.run(&["logout", &registry.host]).ok();
    assert!(out.stdout.contains("Removing login credentials"));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    assert!(config["auths"].get(&registry.host).is_none());
    let denied = ferry
        .run(&["pull", &format!("{}/team/app:2.0", registry.host)])
        .expect_code(1);
    assert!(
        denied.stderr.contains("authentication failed"),
        "{}",
        denied.stderr
    );
}

#[test]
fn password_file_is_read_and_inline_secret_in_readable_config_is_refused() {
    let (registry, _fixture) = seeded(Auth::Basic, false);
    let ferry = Ferry::new();
    let secret_file = ferry.dir.path().join("pw");
    std::fs::write(&secret_file, format!("{PASSWORD}\n")).unwrap();
    let ferry = ferry.with_config(&format!(
        "version = 1\n[registries.\"{}\"]\nusername = \"{USER}\"\npassword_file = \"{}\"\n",
        registry.host,
        secret_file.display()
    ));
    ferry
        .run(&["pull", &format!("{}/team/app:1.0", registry.host)])
        .ok();

    let inline = Ferry::new().with_config(&format!(
        "version = 1\n[registries.\"{}\"]\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\n",
        registry.host
    ));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        inline.config.as_ref().unwrap(),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let refused = inline.run(&["images"]).expect_code(2);
    assert!(
        refused.stderr.contains("password_env"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains(PASSWORD));
}

#[test]
fn anonymous_bearer_token_pulls_but_cannot_push() {
    let (registry, fixture) = seeded(Auth::Token, false);
    let ferry = Ferry::new();
    let image = format!("{}/team/app:1.0", registry.host);
    let pulled = ferry.run(&["pull", &image]).ok();
    assert!(
        pulled.stdout.contains(&fixture.app1.digest()),
        "{}",
        pulled.stdout
    );
    let push = ferry
        .run(&[
            "push",
            &image,
            &format!("{}/team/pushed:1.0", registry.host),
        ])
        .expect_code(1);
    assert!(
        push.stderr.contains("authentication failed") || push.stderr.contains("denied"),
        "{}",
        push.stderr
    );
}
