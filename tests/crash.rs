//! Crash safety: ferry is SIGKILLed at seeded random moments of pull, load,
//! push, prune and retag, many times; after each kill `ferry verify --read-data`
//! is clean and every tag holds either its old or its new value, and the
//! operation then completes.

use crate::round_trip::seeded;
use crate::support::Ferry;

/// A small deterministic generator (no dependency, same sequence every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

fn tag_digest(ferry: &Ferry, name: &str) -> Option<String> {
    let index: serde_json::Value = serde_json::from_str(&ferry.index_json()).ok()?;
    index["manifests"]
        .as_array()?
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)
        .map(|m| m["digest"].as_str().unwrap().to_owned())
}

/// Start `args`, kill it after a random delay, and check the store.
fn kill_and_check(
    ferry: &Ferry,
    args: &[&str],
    rng: &mut Lcg,
    name: &str,
    allowed: &[Option<String>],
) {
    let mut child = ferry
        .command(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The delay picks the moment of the kill; nothing waits on it.
    std::thread::sleep(std::time::Duration::from_millis(rng.next(120)));
    let _ = child.kill();
    child.wait().unwrap();
    let verify = ferry.run(&["verify", "--read-data"]);
    assert_eq!(
        verify.code, 0,
        "{args:?}: verify after kill:\n{}",
        verify.stdout
    );
    let now = tag_digest(ferry, name);
    assert!(
        allowed.contains(&now),
        "{args:?}: {name} is {now:?}, expected one of {allowed:?}"
    );
}

#[test]
fn sigkill_at_random_points_never_corrupts_the_store() {
    let (registry, fixture) = seeded();
    let mut rng = Lcg(20_261_122);
    let name = format!("{}/team/app:live", registry.host);
    let old = Some(fixture.app1.digest());
    let new = Some(fixture.app2.digest());
    let one = format!("{}/team/app:1.0", registry.host);
    let two = format!("{}/team/app:2.0", registry.host);
    for round in 0..8 {
        // pull: `live` moves from app1 to app2 in the registry.
        let ferry = Ferry::new().with_config(&format!(
            "version = 1\n[[retag]]\nname = \"aliases\"\nrepository = \"store/{}/team/app\"\naliases = [\"minor\", \"major\", \"latest\"]\n",
            registry.host
        ));
        ferry.run(&["copy", &one, &name]).ok();
        ferry.run(&["pull", &name]).ok();
        ferry.run(&["copy", &two, &name]).ok();
        kill_and_check(
            &ferry,
            &["pull", &name],
            &mut rng,
            &name,
            &[old.clone(), new.clone()],
        );
        ferry.run(&["pull", &name]).ok();
        assert_eq!(
            tag_digest(&ferry, &name),
            new,
            "round {round}: pull after the kill"
        );

        // load: an archive that moves `live` back to app1.
        let archive = ferry.dir.path().join("old.tar");
        let source = Ferry::new();
        source.run(&["pull", &one]).ok();
        source.run(&["tag", &one, &name]).ok();
        source
            .run(&["save", "-o", archive.to_str().unwrap(), &name])
            .ok();
        kill_and_check(
            &ferry,
            &["load", "-i", archive.to_str().unwrap()],
            &mut rng,
            &name,
            &[old.clone(), new.clone()],
        );
        ferry.run(&["load", "-i", archive.to_str().unwrap()]).ok();
        assert_eq!(tag_digest(&ferry, &name), old);

        // push: the registry tag is either untouched or complete.
        let target = format!("{}/crash/app{round}:1", registry.host);
        kill_and_check(
            &ferry,
            &["push", &name, &target],
            &mut rng,
            &name,
            std::slice::from_ref(&old),
        );
        let raw = std::process::Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{target}"))
            .output()
            .unwrap();
        if raw.status.success() {
            assert_eq!(crate::support::sha256(&raw.stdout), fixture.app1.digest());
        }
        ferry.run(&["push", &name, &target]).ok();

        // prune: dangling images go, or stay; the store stays whole.
        ferry.run(&["pull", &two]).ok();
        ferry.run(&["tag", &two, &name]).ok();
        kill_and_check(
            &ferry,
            &["prune", "-f"],
            &mut rng,
            &name,
            std::slice::from_ref(&new),
        );
        ferry.run(&["prune", "-f"]).ok();
        ferry.run(&["verify", "--read-data"]).ok();

        // retag in the store: each alias is absent or right, never half-written.
        ferry.run(&["pull", &one]).ok();
        ferry
            .run(&["tag", &one, &format!("{}/team/app:1.0.0", registry.host)])
            .ok();
        ferry
            .run(&["tag", &two, &format!("{}/team/app:2.0.0", registry.host)])
            .ok();
        let latest = format!("{}/team/app:latest", registry.host);
        kill_and_check(
            &ferry,
            &["run", "aliases"],
            &mut rng,
            &latest,
            &[None, new.clone()],
        );
        let one_alias = format!("{}/team/app:1", registry.host);
        assert!([None, old.clone()].contains(&tag_digest(&ferry, &one_alias)));
        ferry.run(&["run", "aliases"]).ok();
        assert_eq!(tag_digest(&ferry, &latest), new);
        assert_eq!(tag_digest(&ferry, &one_alias), old);
    }
}

#[test]
fn gc_and_prune_during_pulls_keep_the_pulls_blobs() {
    let (registry, _fixture) = seeded();
    let ferry = Ferry::new();
    for _ in 0..3 {
        let pulls: Vec<_> = ["1.0", "2.0", "multi"]
            .iter()
            .map(|tag| {
                ferry
                    .command(&["-q", "pull", &format!("{}/team/app:{tag}", registry.host)])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        ferry.run(&["gc"]).ok();
        ferry.run(&["prune", "-f"]).ok();
        for pull in pulls {
            let output = pull.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        ferry.run(&["verify", "--read-data"]).ok();
        ferry
            .run(&["rmi", "-f", &format!("{}/team/app:1.0", registry.host)])
            .ok();
    }
}

/// A small tmpfs mounted for one test; unmounted on drop. The tests run as
/// root (CI does too: the Docker tests need it).
pub(crate) struct Tmpfs {
    pub dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs needs root");
        Tmpfs { dir }
    }

    fn remount_read_only(&self) {
        let status = std::process::Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn out_of_space_and_read_only_stores_fail_fast_and_keep_their_state() {
    let (registry, fixture) = seeded();
    let one = format!("{}/team/app:1.0", registry.host);
    let two = format!("{}/team/app:2.0", registry.host);

    // 1 MiB: app1 fits, app2's 2.5 MB layer does not.
    let disk = Tmpfs::mount("1m");
    let mut ferry = Ferry::new();
    ferry.store = disk.dir.path().join("store");
    ferry.run(&["pull", &one]).ok();
    let before = ferry.index_json();
    let full = ferry.run(&["pull", &two]).expect_code(1);
    assert!(full.stderr.contains("disk is full"), "{}", full.stderr);
    assert!(
        !full.stderr.contains("retrying"),
        "out of space is not retried: {}",
        full.stderr
    );
    assert_eq!(ferry.index_json(), before);
    assert!(
        crate::support::list_files(&ferry.store.join("ingest")).is_empty(),
        "temp files left"
    );
    ferry.run(&["verify", "--read-data"]).ok();

    // Read-only: reads work, writes fail with a clear message, nothing changes.
    let disk = Tmpfs::mount("8m");
    let mut ferry = Ferry::new();
    ferry.store = disk.dir.path().join("store");
    ferry.run(&["pull", &one]).ok();
    disk.remount_read_only();
    let listing = ferry.run(&["images"]).ok();
    assert!(listing
        .stdout
        .contains(&fixture.app1.config_digest()["sha256:".len()..][..12]));
    let refused = ferry.run(&["pull", &two]).expect_code(1);
    assert!(refused.stderr.contains("read-only"), "{}", refused.stderr);
    ferry.run(&["verify", "--read-data"]).ok();
}
