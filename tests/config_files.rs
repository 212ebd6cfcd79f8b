//! The commented examples in `config/` load, and config mistakes are usage
//! errors (exit 2) that name the file, line and column.

use crate::support::Ferry;
use std::path::Path;

#[test]
fn example_configs_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let full = ferry::config::Config::load(&root.join("ferry.toml")).unwrap();
    assert_eq!(full.concurrency, 6);
    assert_eq!(
        full.store_path.as_deref(),
        Some(Path::new("/var/lib/ferry"))
    );
    assert!(full.registries["registry.internal:5000"].ca_file.is_some());
    let jobs: Vec<(&str, &str)> = full
        .jobs
        .iter()
        .map(|j| (j.name.as_str(), j.kind.label()))
        .collect();
    assert_eq!(
        jobs,
        vec![
            ("mirror-nginx", "sync"),
            ("nightly", "backup"),
            ("semver-aliases", "retag"),
            ("old-ci-images", "prune")
        ]
    );
    assert!(full.jobs.iter().all(|j| j.schedule.is_some()));
    let quickstart = ferry::config::Config::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart.toml"),
    );
    assert!(quickstart.is_ok(), "{quickstart:?}");
    let objects = ferry::config::Config::load(&root.join("object-storage.toml")).unwrap();
    assert_eq!(objects.objects.part_size, Some(16 << 20));
    assert!(objects.objects.secret_error.is_some() || objects.objects.secret_access_key.is_some());
    let state = objects.state.as_ref().unwrap();
    assert_eq!(state.url.to_string(), "s3://backups/ferry-state");
    assert_eq!(state.lease_seconds, 120);
    let minimal = ferry::config::Config::load(&root.join("minimal.toml")).unwrap();
    assert_eq!(minimal.concurrency, 6);
    assert!(minimal.registries.is_empty());
}

#[test]
fn config_errors_name_line_and_column_and_exit_2() {
    let ferry = Ferry::new().with_config("version = 1\n\n[defaults]\nconcurency = 4\n");
    let run = ferry.run(&["images"]).expect_code(2);
    assert!(run.stderr.contains("ferry.toml:4:1"), "{}", run.stderr);
    assert!(run.stderr.contains("concurency"), "{}", run.stderr);
    let newer = Ferry::new().with_config("version = 7\n");
    assert!(newer
        .run(&["images"])
        .expect_code(2)
        .stderr
        .contains("upgrade ferry"));
}

#[test]
fn missing_password_env_fails_only_when_that_registry_is_used() {
    let ferry = Ferry::new().with_config(
        "version = 1\n[registries.\"127.0.0.1:9\"]\nusername = \"u\"\npassword_env = \"FERRY_TEST_UNSET_VARIABLE\"\n",
    );
    ferry.init_store();
    let run = ferry.run(&["pull", "127.0.0.1:9/app:1"]).expect_code(1);
    assert!(
        run.stderr.contains("FERRY_TEST_UNSET_VARIABLE"),
        "{}",
        run.stderr
    );
}
