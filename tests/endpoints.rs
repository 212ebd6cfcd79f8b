//! The engine driven as a library: one suite run against every
//! destination it writes through (the store, a real registry), every
//! source it reads (a registry, the store, an archive) and every
//! repository jobs use (a registry, the store), in the style of
//! containerd's content-store suite — a verified round trip, a write whose
//! bytes fail their digest leaves nothing, an interrupted write leaves
//! nothing, "already there" is success, a source never passes bytes that
//! fail their digest, a copy writes its tag last, and referrer tags are
//! never listed as images.

use crate::support::registry::Registry;
use crate::support::sha256;
use bytes::Bytes;
use ferry::engine::{
    copy_image, ArchiveSource, CopyOptions, Destination, EngineError, PlatformChoice,
    ReferrerCandidate, RegistryDestination, RegistrySource, Source, StoreDestination, StoreSource,
};
use ferry::registry::blobs::BlobStream;
use ferry::registry::Registries;
use ferry::store::Store;
use ferry::types::{Digest, ParsedManifest, Reference, ReferrerFilter};
use futures_util::StreamExt;
use std::sync::Arc;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn stream_of(bytes: &[u8]) -> BlobStream {
    let chunk = Bytes::copy_from_slice(bytes);
    futures_util::stream::iter([Ok(chunk)]).boxed()
}

/// A source that serves whatever bytes it is given for any blob, as a
/// source that lies would (what a destination writes must not depend on
/// the source being honest), or (`broken`) only their first half and then
/// an error, as a dropped connection does.
struct BytesSource {
    bytes: Vec<u8>,
    broken: bool,
}

fn serving(bytes: Vec<u8>) -> BytesSource {
    BytesSource {
        bytes,
        broken: false,
    }
}

#[async_trait::async_trait]
impl Source for BytesSource {
    fn describe(&self) -> String {
        "test bytes".into()
    }
    async fn root(&self) -> Result<ParsedManifest, EngineError> {
        unreachable!("blob-only source")
    }
    async fn manifest(&self, _: &Digest, _: &str) -> Result<ParsedManifest, EngineError> {
        unreachable!("blob-only source")
    }
    fn blob(&self, _: &Digest, _: u64) -> BlobStream {
        if !self.broken {
            return stream_of(&self.bytes);
        }
        let half = Bytes::copy_from_slice(&self.bytes[..self.bytes.len() / 2]);
        let broken = ferry::registry::RegistryError::StreamBroken {
            registry: "test".into(),
            what: "test blob".into(),
            reason: "connection reset".into(),
        };
        futures_util::stream::iter([Ok(half), Err(broken)]).boxed()
    }
    async fn referrers(&self, _: &Digest, _: &mut Vec<String>) -> Vec<ReferrerCandidate> {
        Vec::new()
    }
}

fn registries() -> Registries {
    Registries::new(Default::default(), Arc::new(ferry::progress::Silent))
}

/// Each destination under test, named for the failure message.
fn destinations(
    store: &Store,
    registry: &Registry,
    pool: &Registries,
) -> Vec<(String, Box<dyn Destination>)> {
    let reference: Reference = format!("{}/suite/app:1", registry.host).parse().unwrap();
    vec![
        (
            "store".into(),
            Box::new(StoreDestination::new(
                store.clone(),
                Some("suite.local/app:1".parse().unwrap()),
            )),
        ),
        (
            "registry".into(),
            Box::new(RegistryDestination::new(
                pool.client(reference.registry()).unwrap(),
                reference,
            )),
        ),
    ]
}

#[test]
fn every_destination_verifies_what_it_writes_and_takes_what_it_has() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let store = Store::open(work.path().join("store")).unwrap();
    let pool = registries();
    let runtime = runtime();
    for (name, destination) in destinations(&store, &registry, &pool) {
        runtime.block_on(async {
            // Larger than one upload request, so the streamed path runs.
            let good = crate::support::image::random_bytes(1_500_000, 7);
            let digest: Digest = sha256(&good).parse().unwrap();
            let size = good.len() as u64;
            // Bytes that are not the blob: an error, and nothing visible.
            let mut wrong = good.clone();
            wrong[1000] ^= 1;
            let refused = destination
                .write_blob(&serving(wrong), &digest, size, Arc::new(|_| {}))
                .await;
            assert!(refused.is_err(), "{name}: a corrupt write succeeded");
            assert!(
                !destination.has_blob(&digest, size).await.unwrap(),
                "{name}: a refused write left the blob visible"
            );
            // The blob itself: written, then there.
            let honest = serving(good.clone());
            destination
                .write_blob(&honest, &digest, size, Arc::new(|_| {}))
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                destination.has_blob(&digest, size).await.unwrap(),
                "{name}: a written blob is not there"
            );
            // Writing it again is success (already there), not an error.
            destination
                .write_blob(&honest, &digest, size, Arc::new(|_| {}))
                .await
                .unwrap_or_else(|e| panic!("{name}: a second write failed: {e}"));
        });
    }
}

#[test]
fn a_copy_through_the_engine_keeps_the_digest_and_tags_last() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let store = Store::open(work.path().join("store")).unwrap();
    // An image in the store (built in code, loaded through the CLI).
    let ferry = crate::support::Ferry::new();
    let built = crate::support::image::image(
        vec![crate::support::image::random_layer("s", 2000, 9)],
        "amd64",
        "suite",
    );
    let archive =
        crate::support::image::named_archive(work.path(), "suite.tar", &built, "suite.local/app:1");
    let load = ferry
        .command(&[
            "--store",
            store.root().to_str().unwrap(),
            "load",
            "-i",
            archive.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    let entry = store
        .lookup_tag(&"suite.local/app:1".parse().unwrap())
        .unwrap()
        .expect("loaded");
    let source = StoreSource::new(store.clone(), entry, "suite.local/app:1".into());
    let pool = registries();
    let reference: Reference = format!("{}/suite/copied:1", registry.host).parse().unwrap();
    let destination =
        RegistryDestination::new(pool.client(reference.registry()).unwrap(), reference);
    let options = CopyOptions {
        platforms: PlatformChoice::All,
        concurrency: 2,
        reporter: Arc::new(ferry::progress::Silent),
        referrers: ReferrerFilter::All,
    };
    runtime().block_on(async {
        copy_image(&source, &destination, &options).await.unwrap();
    });
    assert_eq!(
        sha256(&registry.skopeo_raw("suite/copied:1")),
        built.digest()
    );
    // Every blob went before the tag: the registry log has the manifest
    // PUT after the last blob upload.
    let log = registry.log_lines();
    let manifest_put = log
        .iter()
        .rposition(|l| l.contains("PUT") && l.contains("/manifests/1"))
        .expect("manifest PUT");
    let last_blob = log
        .iter()
        .rposition(|l| l.contains("PUT") && l.contains("/blobs/uploads/"))
        .expect("blob PUT");
    assert!(last_blob < manifest_put, "{log:#?}");
}

/// Drain a blob stream: its bytes, or the error it ended with.
async fn drained(mut stream: BlobStream) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
    }
    Ok(bytes)
}

#[test]
fn every_source_refuses_bytes_that_fail_their_digest() {
    use crate::support::fake::{FakeRegistry, Faults};
    let built = crate::support::image::image(
        vec![crate::support::image::random_layer("c", 300_000, 5)],
        "amd64",
        "corrupt",
    );
    let layer = built.layers[0].clone();
    let digest: Digest = layer.digest.parse().unwrap();
    let size = layer.gzip.len() as u64;
    let runtime = runtime();
    // A registry that flips a byte of the layer.
    let fake = FakeRegistry::start(
        &built,
        "1",
        Faults {
            corrupt: Some(layer.digest.clone()),
            ..Faults::default()
        },
    );
    let pool = registries();
    let reference: Reference = format!("{}/app:1", fake.host).parse().unwrap();
    let registry = RegistrySource::new(pool.client(reference.registry()).unwrap(), reference);
    let served = runtime.block_on(drained(registry.blob(&digest, size)));
    assert!(served.is_err(), "the registry source passed corrupt bytes");
    // The store, with its copy of the blob altered on disk.
    let work = tempfile::tempdir().unwrap();
    let store = Store::open(work.path().join("store")).unwrap();
    runtime
        .block_on(store.put_blob_bytes(&digest, &layer.gzip))
        .unwrap();
    let path = store.blob_path(&digest);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 1;
    let mut permissions = std::fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    permissions.set_readonly(false);
    std::fs::set_permissions(&path, permissions).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let manifest_digest: Digest = built.digest().parse().unwrap();
    let source = StoreSource::new(
        store.clone(),
        ferry::store::IndexEntry::new(
            "application/vnd.oci.image.manifest.v1+json",
            manifest_digest,
            built.manifest.len() as u64,
        ),
        "suite.local/corrupt:1".into(),
    );
    let read = runtime.block_on(drained(source.blob(&digest, size)));
    let error = read.expect_err("the store source passed corrupt bytes");
    assert!(error.contains("corrupt"), "{error}");
    // An archive read in place, whose file changes after its check: the
    // layer's bytes are read again at the transfer, and refused there.
    let archive =
        crate::support::image::named_archive(work.path(), "a.tar", &built, "suite.local/a:1");
    let input = ferry::archive::checked::ArchiveInput::File(&archive);
    let checked = ArchiveSource::read(input, "a.tar", None).unwrap();
    let source = checked.source(0);
    assert_eq!(
        runtime.block_on(source.root()).unwrap().digest.to_string(),
        built.digest()
    );
    let mut bytes = std::fs::read(&archive).unwrap();
    let at = bytes
        .windows(layer.gzip.len())
        .position(|w| w == layer.gzip.as_slice())
        .expect("the layer is stored whole in the tar");
    bytes[at + 100] ^= 1;
    std::fs::write(&archive, &bytes).unwrap();
    let read = runtime.block_on(drained(source.blob(&digest, size)));
    assert!(
        read.is_err(),
        "the archive source passed bytes that changed after its check"
    );
}

#[test]
fn an_interrupted_write_leaves_nothing_at_any_destination() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let store = Store::open(work.path().join("store")).unwrap();
    let pool = registries();
    let runtime = runtime();
    for (name, destination) in destinations(&store, &registry, &pool) {
        runtime.block_on(async {
            let bytes = crate::support::image::random_bytes(1_500_000, 8);
            let digest: Digest = sha256(&bytes).parse().unwrap();
            let size = bytes.len() as u64;
            let written = destination
                .write_blob(
                    &BytesSource {
                        bytes,
                        broken: true,
                    },
                    &digest,
                    size,
                    Arc::new(|_| {}),
                )
                .await;
            let error = written.expect_err("an interrupted write succeeded");
            assert!(error.is_retryable(), "{name}: {error} is not worth a retry");
            assert!(
                !destination.has_blob(&digest, size).await.unwrap(),
                "{name}: an interrupted write left the blob visible"
            );
        });
    }
    // Nothing half-written is left in the store's ingest area either
    // (a partial kept for a resume is only kept for a registry source).
    let left: Vec<_> = std::fs::read_dir(store.root().join("ingest"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn every_repository_lists_image_tags_only_and_keeps_its_tag_contract() {
    let registry = Registry::start();
    let ferry = crate::support::Ferry::new();
    let work = tempfile::tempdir().unwrap();
    // An image with a cosign signature tag beside it, at the registry.
    let built = crate::support::image::image(
        vec![crate::support::image::random_layer("r", 2000, 21)],
        "amd64",
        "repo",
    );
    let signature = crate::support::image::image(
        vec![crate::support::image::random_layer("sig", 100, 22)],
        "amd64",
        "signature",
    );
    let hex = built.digest().trim_start_matches("sha256:").to_owned();
    let name = format!("{}/suite/app", registry.host);
    for (image, tag) in [
        (&built, "1".to_owned()),
        (&signature, format!("sha256-{hex}.sig")),
    ] {
        let archive = crate::support::image::named_archive(
            work.path(),
            &format!("{tag}.tar"),
            image,
            &format!("{name}:{tag}"),
        );
        ferry
            .run(&[
                "copy",
                &format!("archive:{}", archive.display()),
                &format!("{name}:{tag}"),
            ])
            .ok();
    }
    // The same in the store: the image, its signature kept as a referrer.
    ferry.run(&["pull", &format!("{name}:1")]).ok();
    let store = Store::open(&ferry.store).unwrap();
    let endpoints = ferry::engine::Endpoints::new(Arc::new(registries()), store);
    let reference: Reference = name.parse().unwrap();
    let repositories = [
        ("registry", endpoints.registry(&reference).unwrap(), true),
        ("store", endpoints.store(Some(reference.clone())), false),
    ];
    let runtime = runtime();
    for (kind, repository, by_digest) in repositories {
        runtime.block_on(async {
            let tags: Vec<String> = repository
                .tags()
                .await
                .unwrap()
                .into_iter()
                .map(|t| t.tag)
                .collect();
            assert_eq!(tags, ["1"], "{kind}: referrer tags are not image tags");
            assert_eq!(repository.deletes_by_digest(), by_digest, "{kind}");
            // put_tag: the same digest under another tag, nothing moved.
            let digest: Digest = built.digest().parse().unwrap();
            repository.put_tag("2", &digest).await.unwrap();
            assert_eq!(
                repository.digest("2").await.unwrap(),
                Some(digest.clone()),
                "{kind}"
            );
            let head = repository.head("1").await.unwrap().expect("tag 1");
            assert_eq!(head.digest, Some(digest.clone()), "{kind}");
            // The source for a tag reads the same image.
            let source = repository.source("2").unwrap();
            assert_eq!(source.root().await.unwrap().digest, digest, "{kind}");
            if !by_digest {
                // The store untags only: the other tag keeps the image.
                repository.delete("2", &digest).await.unwrap();
                assert_eq!(repository.digest("2").await.unwrap(), None, "{kind}");
                assert_eq!(
                    repository.digest("1").await.unwrap(),
                    Some(digest),
                    "{kind}"
                );
            }
        });
    }
    let listed = runtime
        .block_on(endpoints.registry(&reference).unwrap().listed_tags())
        .unwrap();
    assert!(
        listed.iter().any(|t| t.ends_with(".sig")),
        "listed tags include referrer tags: {listed:?}"
    );
}
