//! `ferry serve` against the OCI distribution spec's conformance categories
//! — pull, push, content discovery, content management — checked the way
//! the spec's own conformance suite checks a registry, plus what the spec
//! says about repositories as the unit of content (a blob, a manifest or a
//! referrer pushed to one repository is not found through another) and
//! ferry's own rule for names (a push is stored under the server's name).
//! Every test starts its own server over a fresh store and builds its
//! blobs and manifests in code; nothing leaves loopback.

use crate::support::image::{image, index, random_bytes, random_layer, Image, Index};
use crate::support::registry::{Auth, Registry};
use crate::support::{http, sha256, Ferry};
use serde_json::{json, Value};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
const SBOM_TYPE: &str = "application/vnd.example.sbom.v1+json";
const SIGNATURE_CONFIG: &str = "application/vnd.example.signature.config.v1+json";
const NOTE: &str = "org.example.conformance.note";

/// The error codes the spec defines.
const SPEC_CODES: &[&str] = &[
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
];

// ---------------------------------------------------------------------------
// Harness

/// One answer from the server, with the request it answers for messages.
struct Answer {
    what: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Panic unless the status is `status`.
    fn expect(self, status: u16) -> Answer {
        assert_eq!(
            self.status,
            status,
            "{} answered {} (wanted {status}); headers {:?}; body {}",
            self.what,
            self.status,
            self.headers,
            self.text()
        );
        self
    }

    /// Panic unless the status is one of `statuses`.
    fn expect_one_of(self, statuses: &[u16]) -> Answer {
        assert!(
            statuses.contains(&self.status),
            "{} answered {} (wanted one of {statuses:?}); body {}",
            self.what,
            self.status,
            self.text()
        );
        self
    }

    /// A header that must be there.
    fn must(&self, name: &str) -> &str {
        self.header(name).unwrap_or_else(|| {
            panic!(
                "{} ({}) has no {name} header: {:?}",
                self.what, self.status, self.headers
            )
        })
    }

    /// The `Location` header as a path on this server.
    fn location(&self) -> String {
        let location = self.must("location");
        assert!(!location.is_empty(), "{}: empty Location", self.what);
        on_server(location)
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} ({}): body is not JSON ({e}): {}",
                self.what,
                self.status,
                self.text()
            )
        })
    }

    /// The error codes of a spec error body (`{"errors":[{"code":…}]}`).
    fn codes(&self) -> Vec<String> {
        let body = self.json();
        let errors = body["errors"].as_array().unwrap_or_else(|| {
            panic!(
                "{} ({}): no errors list in {}",
                self.what,
                self.status,
                self.text()
            )
        });
        errors
            .iter()
            .map(|e| e["code"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Panic unless the status is `status` and the error codes include `code`.
    fn expect_error(self, status: u16, code: &str) -> Answer {
        let answer = self.expect(status);
        let codes = answer.codes();
        assert!(
            codes.iter().any(|c| c == code),
            "{}: wanted error {code}, got {codes:?}: {}",
            answer.what,
            answer.text()
        );
        answer
    }

    /// Panic unless the body is empty (HEAD answers, errors to HEAD).
    fn expect_no_body(self) -> Answer {
        assert!(
            self.body.is_empty(),
            "{} ({}) carried a body: {}",
            self.what,
            self.status,
            self.text()
        );
        self
    }
}

/// A Location (absolute or relative) as a path and query on this server.
fn on_server(location: &str) -> String {
    match location.split_once("://") {
        Some((_, rest)) => match rest.find('/') {
            Some(at) => rest[at..].to_owned(),
            None => "/".to_owned(),
        },
        None => location.to_owned(),
    }
}

/// `url` with one more query parameter.
fn with_query(url: &str, parameter: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{parameter}")
}

/// A `ferry serve` over a fresh store (anonymous pushes allowed), and the
/// ferry whose store it is.
struct Served {
    serve: Registry,
    owner: Ferry,
}

impl Served {
    fn start() -> Served {
        let owner = Ferry::new();
        // `ferry_serve` adds `--allow-anonymous-push` itself for Auth::None.
        let serve = Registry::ferry_serve(&owner.store, Auth::None, false, &[]);
        Served { serve, owner }
    }

    fn host(&self) -> &str {
        &self.serve.host
    }

    fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let (status, headers, body) = http(self.host(), method, path, headers, body);
        Answer {
            what: format!("{method} {path}"),
            status,
            headers,
            body,
        }
    }

    fn get(&self, path: &str) -> Answer {
        self.call("GET", path, &[], b"")
    }

    fn head(&self, path: &str) -> Answer {
        self.call("HEAD", path, &[], b"")
    }

    fn get_manifest(&self, repo: &str, reference: &str) -> Answer {
        self.call(
            "GET",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Accept", &format!("{OCI_MANIFEST}, {OCI_INDEX}"))],
            b"",
        )
    }

    /// GET a manifest at a path the server gave (a Location).
    fn get_manifest_at(&self, path: &str) -> Answer {
        self.call(
            "GET",
            path,
            &[("Accept", &format!("{OCI_MANIFEST}, {OCI_INDEX}"))],
            b"",
        )
    }

    fn head_manifest(&self, repo: &str, reference: &str) -> Answer {
        self.call(
            "HEAD",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Accept", &format!("{OCI_MANIFEST}, {OCI_INDEX}"))],
            b"",
        )
    }

    /// Open an upload session: 202 with a Location.
    fn open_session(&self, repo: &str) -> Answer {
        let answer = self
            .call(
                "POST",
                &format!("/v2/{repo}/blobs/uploads/"),
                &[("Content-Length", "0")],
                b"",
            )
            .expect(202);
        answer.location();
        answer
    }

    /// Push a blob the way the conformance suite sets up: POST, then PUT
    /// with the digest and the bytes. The digest.
    fn upload(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let session = self.open_session(repo).location();
        self.call(
            "PUT",
            &with_query(&session, &format!("digest={digest}")),
            &[("Content-Type", "application/octet-stream")],
            bytes,
        )
        .expect(201);
        digest
    }

    /// The config and layers of an image.
    fn upload_blobs(&self, repo: &str, image: &Image) {
        self.upload(repo, &image.config);
        for layer in &image.layers {
            self.upload(repo, &layer.gzip);
        }
    }

    fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) -> Answer {
        self.call(
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            bytes,
        )
    }

    /// An image's blobs, then its manifest at `reference` (a tag, or its
    /// digest): 201.
    fn push_image(&self, repo: &str, reference: &str, image: &Image) -> Answer {
        self.upload_blobs(repo, image);
        self.put_manifest(repo, reference, OCI_MANIFEST, &image.manifest)
            .expect(201)
    }

    /// A referrer's blobs, then the referrer by its digest: 201.
    fn push_referrer(&self, repo: &str, referrer: &Referrer) -> Answer {
        for blob in &referrer.blobs {
            self.upload(repo, blob);
        }
        self.put_manifest(repo, &referrer.digest(), OCI_MANIFEST, &referrer.manifest)
            .expect(201)
    }

    /// `GET /v2/<repo>/tags/list[?query]`: 200 and the tags.
    fn tags(&self, repo: &str, query: &str) -> (Vec<String>, Answer) {
        let answer = self
            .get(&format!("/v2/{repo}/tags/list{query}"))
            .expect(200);
        let body = answer.json();
        assert_eq!(body["name"], repo, "{}: {}", answer.what, answer.text());
        let tags = body["tags"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no tags list: {}", answer.what, answer.text()))
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect();
        (tags, answer)
    }

    /// `GET /v2/<repo>/referrers/<digest>[query]`: 200, an OCI index; its
    /// descriptors.
    fn referrers(&self, repo: &str, digest: &str, query: &str) -> (Vec<Value>, Answer) {
        let answer = self
            .get(&format!("/v2/{repo}/referrers/{digest}{query}"))
            .expect(200);
        assert_eq!(
            answer.header("content-type").map(media_type_of),
            Some(OCI_INDEX),
            "{}: {:?}",
            answer.what,
            answer.headers
        );
        let body = answer.json();
        assert_eq!(body["schemaVersion"], 2, "{}", answer.text());
        assert_eq!(body["mediaType"], OCI_INDEX, "{}", answer.text());
        let manifests = body["manifests"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: no manifests list: {}", answer.what, answer.text()))
            .clone();
        (manifests, answer)
    }
}

/// A Content-Type without parameters.
fn media_type_of(value: &str) -> &str {
    value.split(';').next().unwrap_or_default().trim()
}

/// A small image of its own (one random layer), distinct per `seed`.
fn test_image(label: &str, seed: u64) -> Image {
    image(
        vec![random_layer("data.bin", 2048 + seed as usize, seed)],
        "amd64",
        label,
    )
}

/// A digest nothing in these tests has.
fn absent_digest() -> String {
    sha256(b"ferry conformance: no such content")
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": sha256(bytes), "size": bytes.len()})
}

/// An artifact manifest with a `subject`.
struct Referrer {
    manifest: Vec<u8>,
    /// Its config and layer blobs.
    blobs: Vec<Vec<u8>>,
    /// What the referrers API must list as its artifactType.
    artifact_type: String,
    note: String,
}

impl Referrer {
    fn digest(&self) -> String {
        sha256(&self.manifest)
    }
}

/// An SBOM-like artifact: `artifactType` set, the empty config.
fn sbom_for(subject: &Image, note: &str) -> Referrer {
    let config = b"{}".to_vec();
    let layer = format!("{{\"sbom\":\"{note}\"}}").into_bytes();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SBOM_TYPE,
        "config": descriptor(OCI_EMPTY, &config),
        "layers": [descriptor("application/spdx+json", &layer)],
        "subject": descriptor(OCI_MANIFEST, &subject.manifest),
        "annotations": {NOTE: note},
    });
    Referrer {
        manifest: serde_json::to_vec(&manifest).unwrap(),
        blobs: vec![config, layer],
        artifact_type: SBOM_TYPE.to_owned(),
        note: note.to_owned(),
    }
}

/// A signature-like artifact without `artifactType`: its config's media
/// type is what the referrers API must list.
fn signature_for(subject: &Image, note: &str) -> Referrer {
    let config = format!("{{\"signature\":\"{note}\"}}").into_bytes();
    let layer = random_bytes(64, note.len() as u64 + 77);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(SIGNATURE_CONFIG, &config),
        "layers": [descriptor("application/octet-stream", &layer)],
        "subject": descriptor(OCI_MANIFEST, &subject.manifest),
        "annotations": {NOTE: note},
    });
    Referrer {
        manifest: serde_json::to_vec(&manifest).unwrap(),
        blobs: vec![config, layer],
        artifact_type: SIGNATURE_CONFIG.to_owned(),
        note: note.to_owned(),
    }
}

/// Check a manifest answer: the status, the digest and media type headers,
/// and (for GET) the exact bytes; for HEAD, the size and no body.
fn check_manifest(answer: Answer, bytes: &[u8], media_type: &str, head: bool) {
    let answer = answer.expect(200);
    assert_eq!(
        answer.must("docker-content-digest"),
        sha256(bytes),
        "{}",
        answer.what
    );
    assert_eq!(
        media_type_of(answer.must("content-type")),
        media_type,
        "{}",
        answer.what
    );
    if head {
        assert_eq!(
            answer.must("content-length"),
            bytes.len().to_string(),
            "{}",
            answer.what
        );
        answer.expect_no_body();
    } else {
        assert!(
            answer.body == bytes,
            "{}: the body is not the pushed bytes: {}",
            answer.what,
            answer.text()
        );
    }
}

// ---------------------------------------------------------------------------
// Pull

#[test]
fn pull_base_route_answers_200() {
    let served = Served::start();
    served.get("/v2/").expect(200);
}

#[test]
fn pull_manifest_by_tag_and_by_digest_returns_the_pushed_bytes_and_headers() {
    let served = Served::start();
    let app = test_image("pull", 1);
    served.push_image("conf/pull", "tagtest0", &app);
    let digest = app.digest();
    for reference in ["tagtest0", digest.as_str()] {
        check_manifest(
            served.get_manifest("conf/pull", reference),
            &app.manifest,
            OCI_MANIFEST,
            false,
        );
        check_manifest(
            served.head_manifest("conf/pull", reference),
            &app.manifest,
            OCI_MANIFEST,
            true,
        );
    }
}

#[test]
fn pull_an_index_by_tag_and_its_children_by_digest() {
    let served = Served::start();
    let amd = test_image("index amd64", 2);
    let arm = image(
        vec![random_layer("data.bin", 3000, 3)],
        "arm64",
        "index arm64",
    );
    let both: Index = index(vec![
        ("amd64".into(), amd.clone()),
        ("arm64".into(), arm.clone()),
    ]);
    for child in [&amd, &arm] {
        served.push_image("conf/multi", &child.digest(), child);
    }
    served
        .put_manifest("conf/multi", "multi", OCI_INDEX, &both.bytes)
        .expect(201);
    for head in [false, true] {
        let answer = match head {
            false => served.get_manifest("conf/multi", "multi"),
            true => served.head_manifest("conf/multi", "multi"),
        };
        check_manifest(answer, &both.bytes, OCI_INDEX, head);
        let answer = match head {
            false => served.get_manifest("conf/multi", &both.digest()),
            true => served.head_manifest("conf/multi", &both.digest()),
        };
        check_manifest(answer, &both.bytes, OCI_INDEX, head);
    }
    for child in [&amd, &arm] {
        check_manifest(
            served.get_manifest("conf/multi", &child.digest()),
            &child.manifest,
            OCI_MANIFEST,
            false,
        );
    }
}

#[test]
fn pull_blob_get_and_head() {
    let served = Served::start();
    let bytes = random_bytes(5000, 4);
    let digest = served.upload("conf/blobs", &bytes);
    let path = format!("/v2/conf/blobs/blobs/{digest}");
    let got = served.get(&path).expect(200);
    assert!(got.body == bytes, "{}: not the pushed bytes", got.what);
    assert_eq!(got.must("content-length"), bytes.len().to_string());
    assert_eq!(got.must("docker-content-digest"), digest);
    let head = served.head(&path).expect(200);
    assert_eq!(head.must("content-length"), bytes.len().to_string());
    assert_eq!(head.must("docker-content-digest"), digest);
    head.expect_no_body();
}

#[test]
fn pull_nonexistent_manifests_and_blobs_are_404() {
    let served = Served::start();
    let app = test_image("missing", 5);
    served.push_image("conf/missing", "present", &app);
    let absent = absent_digest();
    // Manifests: an unknown tag, an unknown digest, an unknown repository.
    for (repo, reference) in [
        ("conf/missing", "absent"),
        ("conf/missing", absent.as_str()),
        ("conf/no-such-repo", "present"),
    ] {
        served
            .get_manifest(repo, reference)
            .expect_error(404, "MANIFEST_UNKNOWN");
        served
            .head_manifest(repo, reference)
            .expect(404)
            .expect_no_body();
    }
    // Blobs: unknown in a repository that exists.
    let path = format!("/v2/conf/missing/blobs/{absent}");
    served.get(&path).expect_error(404, "BLOB_UNKNOWN");
    served.head(&path).expect(404).expect_no_body();
}

#[test]
fn pull_manifest_with_an_invalid_tag_reference_is_404() {
    // The spec's suite asks for `.INVALID_MANIFEST_NAME` (not a valid tag:
    // a leading dot) and expects 404 Not Found.
    let served = Served::start();
    let app = test_image("invalid tag", 6);
    served.push_image("conf/invalid", "present", &app);
    served
        .get_manifest("conf/invalid", ".INVALID_MANIFEST_NAME")
        .expect(404);
    served
        .head_manifest("conf/invalid", ".INVALID_MANIFEST_NAME")
        .expect(404)
        .expect_no_body();
}

#[test]
fn pull_blob_range_of_the_first_bytes_is_206() {
    let served = Served::start();
    let bytes = random_bytes(1000, 7);
    let digest = served.upload("conf/range", &bytes);
    let answer = served
        .call(
            "GET",
            &format!("/v2/conf/range/blobs/{digest}"),
            &[("Range", "bytes=0-9")],
            b"",
        )
        .expect(206);
    assert_eq!(answer.must("content-range"), "bytes 0-9/1000");
    assert_eq!(answer.must("content-length"), "10");
    assert_eq!(answer.body, bytes[..10]);
}

#[test]
fn pull_blob_suffix_range_is_the_last_bytes() {
    let served = Served::start();
    let bytes = random_bytes(1000, 8);
    let digest = served.upload("conf/range", &bytes);
    let answer = served
        .call(
            "GET",
            &format!("/v2/conf/range/blobs/{digest}"),
            &[("Range", "bytes=-10")],
            b"",
        )
        .expect(206);
    assert_eq!(answer.must("content-range"), "bytes 990-999/1000");
    assert_eq!(answer.body, bytes[990..]);
}

#[test]
fn pull_blob_range_starting_past_the_end_is_416() {
    let served = Served::start();
    let bytes = random_bytes(1000, 9);
    let digest = served.upload("conf/range", &bytes);
    for range in ["bytes=1000-", "bytes=5000-5009"] {
        let answer = served
            .call(
                "GET",
                &format!("/v2/conf/range/blobs/{digest}"),
                &[("Range", range)],
                b"",
            )
            .expect(416);
        // RFC 9110: a 416 to a byte range SHOULD say the current length.
        if let Some(value) = answer.header("content-range") {
            assert_eq!(value, "bytes */1000", "{range}");
        }
    }
}

#[test]
fn pull_errors_are_spec_json() {
    // As the suite: a manifest PUT at a malformed digest with a body that
    // is not a manifest is 400 (with a spec error body) or 404.
    let served = Served::start();
    let answer = served
        .put_manifest(
            "conf/errors",
            "sha256:totallywrong",
            OCI_MANIFEST,
            b"blablabla",
        )
        .expect_one_of(&[400, 404]);
    if answer.status == 400 {
        let codes = answer.codes();
        assert!(!codes.is_empty(), "{}", answer.text());
        assert!(
            SPEC_CODES.contains(&codes[0].as_str()),
            "{} is not a spec code",
            codes[0]
        );
    }
}

// ---------------------------------------------------------------------------
// Push

#[test]
fn push_monolithic_post_with_digest_is_201() {
    let served = Served::start();
    let bytes = random_bytes(3000, 10);
    let digest = sha256(&bytes);
    served
        .get(&format!("/v2/conf/push/blobs/{digest}"))
        .expect(404);
    let answer = served
        .call(
            "POST",
            &format!("/v2/conf/push/blobs/uploads/?digest={digest}"),
            &[("Content-Type", "application/octet-stream")],
            &bytes,
        )
        .expect(201);
    let location = answer.location();
    let got = served.get(&location).expect(200);
    assert!(got.body == bytes, "{location}: not the pushed bytes");
    served
        .get(&format!("/v2/conf/push/blobs/{digest}"))
        .expect(200);
}

#[test]
fn push_post_then_put_with_digest_is_201() {
    let served = Served::start();
    let bytes = random_bytes(3000, 11);
    let digest = sha256(&bytes);
    let session = served.open_session("conf/push").location();
    let answer = served
        .call(
            "PUT",
            &with_query(&session, &format!("digest={digest}")),
            &[("Content-Type", "application/octet-stream")],
            &bytes,
        )
        .expect(201);
    let location = answer.location();
    let got = served.get(&location).expect(200);
    assert!(got.body == bytes, "{location}: not the pushed bytes");
}

#[test]
fn push_streamed_patch_then_put_is_201() {
    let served = Served::start();
    let bytes = random_bytes(3000, 12);
    let digest = sha256(&bytes);
    let session = served.open_session("conf/push").location();
    let patched = served
        .call(
            "PATCH",
            &session,
            &[("Content-Type", "application/octet-stream")],
            &bytes,
        )
        .expect(202);
    let location = patched.location();
    served
        .call(
            "PUT",
            &with_query(&location, &format!("digest={digest}")),
            &[("Content-Type", "application/octet-stream")],
            b"",
        )
        .expect(201)
        .location();
    let got = served
        .get(&format!("/v2/conf/push/blobs/{digest}"))
        .expect(200);
    assert!(got.body == bytes);
}

/// A blob in two chunks, sized for the server's minimum chunk length.
fn chunked_blob(min: Option<&str>, seed: u64) -> (Vec<u8>, usize) {
    let min: usize = min.and_then(|m| m.parse().ok()).unwrap_or(0);
    let first = min.max(1024);
    let bytes = random_bytes(first * 2 - 7, seed);
    (bytes, first)
}

#[test]
fn push_chunked_upload_in_order_with_status_and_a_refused_retry() {
    let served = Served::start();
    let opened = served.open_session("conf/chunked");
    let (bytes, cut) = chunked_blob(opened.header("oci-chunk-min-length"), 13);
    let (first, second) = bytes.split_at(cut);
    let digest = sha256(&bytes);
    let session = opened.location();
    let first_range = format!("0-{}", cut - 1);
    let first_length = first.len().to_string();
    let answer = served
        .call(
            "PATCH",
            &session,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", &first_range),
                ("Content-Length", &first_length),
            ],
            first,
        )
        .expect(202);
    assert_eq!(answer.must("range"), first_range);
    answer.location();
    // The same chunk again: out of order now.
    served
        .call(
            "PATCH",
            &session,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", &first_range),
                ("Content-Length", &first_length),
            ],
            first,
        )
        .expect(416);
    // Where the upload stands.
    let status = served.get(&session).expect(204);
    assert_eq!(status.must("range"), first_range);
    let location = status.location();
    let second_range = format!("{cut}-{}", bytes.len() - 1);
    let second_length = second.len().to_string();
    let answer = served
        .call(
            "PATCH",
            &location,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", &second_range),
                ("Content-Length", &second_length),
            ],
            second,
        )
        .expect(202);
    assert_eq!(answer.must("range"), format!("0-{}", bytes.len() - 1));
    let location = answer.location();
    let done = served
        .call(
            "PUT",
            &with_query(&location, &format!("digest={digest}")),
            &[("Content-Type", "application/octet-stream")],
            b"",
        )
        .expect(201);
    let blob = done.location();
    let got = served.get(&blob).expect(200);
    assert!(got.body == bytes, "{blob}: not the pushed bytes");
}

#[test]
fn push_out_of_order_chunk_is_416() {
    let served = Served::start();
    let opened = served.open_session("conf/chunked");
    let (bytes, cut) = chunked_blob(opened.header("oci-chunk-min-length"), 14);
    let session = opened.location();
    let range = format!("{cut}-{}", bytes.len() - 1);
    let length = (bytes.len() - cut).to_string();
    served
        .call(
            "PATCH",
            &session,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", &range),
                ("Content-Length", &length),
            ],
            &bytes[cut..],
        )
        .expect(416);
}

#[test]
fn push_with_a_wrong_digest_is_digest_invalid_and_keeps_nothing() {
    let served = Served::start();
    let bytes = random_bytes(2000, 15);
    let claimed = sha256(b"not these bytes");
    // Monolithic.
    served
        .call(
            "POST",
            &format!("/v2/conf/wrong/blobs/uploads/?digest={claimed}"),
            &[("Content-Type", "application/octet-stream")],
            &bytes,
        )
        .expect_error(400, "DIGEST_INVALID");
    // POST then PUT.
    let session = served.open_session("conf/wrong").location();
    served
        .call(
            "PUT",
            &with_query(&session, &format!("digest={claimed}")),
            &[("Content-Type", "application/octet-stream")],
            &bytes,
        )
        .expect_error(400, "DIGEST_INVALID");
    for digest in [claimed, sha256(&bytes)] {
        served
            .head(&format!("/v2/conf/wrong/blobs/{digest}"))
            .expect(404);
    }
}

#[test]
fn push_mount_from_a_repository_holding_the_blob_is_201() {
    let served = Served::start();
    let bytes = random_bytes(2500, 16);
    let digest = served.upload("conf/mount-source", &bytes);
    let answer = served
        .call(
            "POST",
            &format!("/v2/conf/mount-target/blobs/uploads/?mount={digest}&from=conf/mount-source"),
            &[],
            b"",
        )
        .expect(201);
    let location = answer.location();
    assert_eq!(location, format!("/v2/conf/mount-target/blobs/{digest}"));
    let got = served.get(&location).expect(200);
    assert!(got.body == bytes);
}

#[test]
fn push_mount_from_a_repository_without_the_blob_opens_a_session() {
    let served = Served::start();
    let bytes = random_bytes(2500, 17);
    // The blob is in the registry, but not in the repository named as `from`.
    let digest = served.upload("conf/holder", &bytes);
    let other = test_image("not the holder", 18);
    served.push_image("conf/bystander", "1", &other);
    let answer = served
        .call(
            "POST",
            &format!("/v2/conf/mount-target/blobs/uploads/?mount={digest}&from=conf/bystander"),
            &[],
            b"",
        )
        .expect(202);
    let session = answer.location();
    assert!(
        session.starts_with("/v2/conf/mount-target/blobs/uploads/"),
        "{session}"
    );
    // A real session: the blob can be uploaded through it.
    served
        .call(
            "PUT",
            &with_query(&session, &format!("digest={digest}")),
            &[("Content-Type", "application/octet-stream")],
            &bytes,
        )
        .expect(201);
    served
        .get(&format!("/v2/conf/mount-target/blobs/{digest}"))
        .expect(200);
}

#[test]
fn push_mount_without_from_opens_a_session() {
    // As the suite: a mount of a digest with no `from` (here one the
    // registry does not hold anywhere) answers 202 and an upload session.
    let served = Served::start();
    let answer = served
        .call(
            "POST",
            &format!(
                "/v2/conf/mount-target/blobs/uploads/?mount={}",
                absent_digest()
            ),
            &[],
            b"",
        )
        .expect(202);
    let session = answer.location();
    assert!(
        session.starts_with("/v2/conf/mount-target/blobs/uploads/"),
        "{session}"
    );
}

#[test]
fn push_manifest_by_tag_is_201_with_location_and_digest() {
    let served = Served::start();
    let app = test_image("push by tag", 19);
    served.upload_blobs("conf/manifests", &app);
    served.get_manifest("conf/manifests", "test0").expect(404);
    for tag in ["test0", "test1", "test2", "test3"] {
        let answer = served
            .put_manifest("conf/manifests", tag, OCI_MANIFEST, &app.manifest)
            .expect(201);
        assert_eq!(answer.must("docker-content-digest"), app.digest());
        let location = answer.location();
        check_manifest(
            served.get_manifest_at(&location),
            &app.manifest,
            OCI_MANIFEST,
            false,
        );
    }
    check_manifest(
        served.get_manifest("conf/manifests", &app.digest()),
        &app.manifest,
        OCI_MANIFEST,
        false,
    );
}

#[test]
fn push_manifest_by_digest_is_201() {
    let served = Served::start();
    let app = test_image("push by digest", 20);
    let answer = served.push_image("conf/manifests", &app.digest(), &app);
    assert_eq!(answer.must("docker-content-digest"), app.digest());
    let location = answer.location();
    check_manifest(
        served.get_manifest_at(&location),
        &app.manifest,
        OCI_MANIFEST,
        false,
    );
    check_manifest(
        served.head_manifest("conf/manifests", &app.digest()),
        &app.manifest,
        OCI_MANIFEST,
        true,
    );
}

#[test]
fn push_manifest_naming_a_blob_never_pushed_is_manifest_blob_unknown() {
    let served = Served::start();
    let app = test_image("missing layer", 21);
    // The config only: the layer never arrives.
    served.upload("conf/incomplete", &app.config);
    served
        .put_manifest("conf/incomplete", "1.0", OCI_MANIFEST, &app.manifest)
        .expect_error(400, "MANIFEST_BLOB_UNKNOWN");
    served.get_manifest("conf/incomplete", "1.0").expect(404);
    served
        .get_manifest("conf/incomplete", &app.digest())
        .expect(404);
}

#[test]
fn push_manifest_at_a_digest_it_does_not_hash_to_is_digest_invalid() {
    let served = Served::start();
    let app = test_image("wrong manifest digest", 22);
    served.upload_blobs("conf/wrong", &app);
    served
        .put_manifest("conf/wrong", &absent_digest(), OCI_MANIFEST, &app.manifest)
        .expect_error(400, "DIGEST_INVALID");
    served.get_manifest("conf/wrong", &app.digest()).expect(404);
}

#[test]
fn push_index_whose_child_is_a_layer_is_refused_and_the_store_stays_readable() {
    let served = Served::start();
    let app = test_image("layer as child", 23);
    served.push_image("conf/bad-index", "good", &app);
    // An index naming a layer blob (present in the repository) as if it
    // were a platform manifest.
    let layer = &app.layers[0].gzip;
    let bad = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": sha256(layer),
            "size": layer.len(),
            "platform": {"os": "linux", "architecture": "amd64"},
        }],
    }))
    .unwrap();
    let answer = served.put_manifest("conf/bad-index", "bad", OCI_INDEX, &bad);
    // Whatever the answer, the store must stay readable.
    let images = served.owner.run(&["images"]);
    assert!(
        (400..500).contains(&answer.status),
        "{} answered {} (wanted a 4xx refusal): {}; then `ferry images` exited {}: {}",
        answer.what,
        answer.status,
        answer.text(),
        images.code,
        images.stderr
    );
    let images = images.ok();
    assert!(
        images.stdout.contains("conf/bad-index"),
        "{}",
        images.stdout
    );
    served.get_manifest("conf/bad-index", "bad").expect(404);
    served.get_manifest("conf/bad-index", "good").expect(200);
}

// ---------------------------------------------------------------------------
// Content discovery

/// Whether `tags` are in lexical (case-insensitive) or ASCII order.
fn sorted_as_the_spec_allows(tags: &[String]) -> bool {
    let ascii = tags.windows(2).all(|w| w[0] <= w[1]);
    let lexical = tags
        .windows(2)
        .all(|w| w[0].to_lowercase() <= w[1].to_lowercase());
    ascii || lexical
}

/// Push one image under each of `tags`.
fn tagged(served: &Served, repo: &str, tags: &[&str], seed: u64) -> Image {
    let app = test_image("tags", seed);
    served.upload_blobs(repo, &app);
    for tag in tags {
        served
            .put_manifest(repo, tag, OCI_MANIFEST, &app.manifest)
            .expect(201);
    }
    app
}

const SOME_TAGS: &[&str] = &[
    "test2", "TEST0", "test0", "test3", "TEST2", "test1", "TEST1", "TEST3",
];

#[test]
fn discovery_tags_list_is_sorted_and_named() {
    let served = Served::start();
    tagged(&served, "conf/tags", SOME_TAGS, 24);
    let (tags, _) = served.tags("conf/tags", "");
    let mut expected: Vec<String> = SOME_TAGS.iter().map(|t| t.to_string()).collect();
    expected.sort();
    let mut got = tags.clone();
    got.sort();
    assert_eq!(got, expected);
    assert!(sorted_as_the_spec_allows(&tags), "{tags:?}");
}

/// The target of a `Link: <…>; rel="next"` header.
fn next_page(answer: &Answer) -> Option<String> {
    let link = answer.header("link")?;
    assert!(link.contains("rel=\"next\""), "{link}");
    let start = link.find('<')? + 1;
    let end = link.find('>')?;
    Some(on_server(&link[start..end]))
}

#[test]
fn discovery_tags_list_pages_with_n_last_and_link() {
    let served = Served::start();
    tagged(&served, "conf/pages", SOME_TAGS, 25);
    let (all, _) = served.tags("conf/pages", "");
    // `n` limits; a Link leads on, with `last`.
    let (first, answer) = served.tags("conf/pages", "?n=3");
    assert_eq!(first, all[..3]);
    let next = next_page(&answer).expect("a Link header when more tags follow");
    assert!(next.contains("last="), "{next}");
    let mut walked = first.clone();
    let mut next = Some(next);
    while let Some(path) = next {
        let answer = served.get(&path).expect(200);
        let page: Vec<String> = answer.json()["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect();
        assert!(page.len() <= 3, "{path}: {page:?}");
        walked.extend(page);
        next = next_page(&answer);
        assert!(
            walked.len() <= all.len(),
            "pages go past the end: {walked:?}"
        );
    }
    assert_eq!(walked, all);
    // `last` alone starts after that tag, excluding it.
    let (after, _) = served.tags("conf/pages", &format!("?n=3&last={}", all[2]));
    assert_eq!(after, all[3..6]);
    assert!(!after.contains(&all[2]));
    // n=0: an empty list and no Link.
    let (none, answer) = served.tags("conf/pages", "?n=0");
    assert!(none.is_empty(), "{none:?}");
    assert!(answer.header("link").is_none(), "{:?}", answer.headers);
}

#[test]
fn discovery_tags_list_of_an_unknown_repository_is_name_unknown() {
    let served = Served::start();
    tagged(&served, "conf/known", &["1"], 26);
    served
        .get("/v2/conf/unknown/tags/list")
        .expect_error(404, "NAME_UNKNOWN");
}

/// Check a referrers descriptor against what was pushed.
fn check_listed(listed: &Value, referrer: &Referrer) {
    assert_eq!(listed["mediaType"], OCI_MANIFEST, "{listed}");
    assert_eq!(listed["digest"], referrer.digest(), "{listed}");
    assert_eq!(listed["size"], referrer.manifest.len(), "{listed}");
    assert_eq!(
        listed["artifactType"],
        referrer.artifact_type.as_str(),
        "{listed}"
    );
    assert_eq!(
        listed["annotations"][NOTE],
        referrer.note.as_str(),
        "{listed}"
    );
}

fn find<'a>(listed: &'a [Value], referrer: &Referrer) -> &'a Value {
    listed
        .iter()
        .find(|d| d["digest"] == referrer.digest())
        .unwrap_or_else(|| panic!("{} is not listed: {listed:?}", referrer.digest()))
}

#[test]
fn discovery_referrers_list_artifacts_with_their_subject() {
    let served = Served::start();
    let app = test_image("signed", 27);
    served.push_image("conf/signed", "1.0", &app);
    let sbom = sbom_for(&app, "the sbom");
    let signature = signature_for(&app, "the signature");
    for referrer in [&sbom, &signature] {
        let answer = served.push_referrer("conf/signed", referrer);
        assert_eq!(answer.must("oci-subject"), app.digest(), "{}", answer.what);
        assert_eq!(answer.must("docker-content-digest"), referrer.digest());
    }
    let (listed, _) = served.referrers("conf/signed", &app.digest(), "");
    assert_eq!(listed.len(), 2, "{listed:?}");
    check_listed(find(&listed, &sbom), &sbom);
    check_listed(find(&listed, &signature), &signature);
    // The referrers themselves are pullable by digest.
    for referrer in [&sbom, &signature] {
        check_manifest(
            served.get_manifest("conf/signed", &referrer.digest()),
            &referrer.manifest,
            OCI_MANIFEST,
            false,
        );
    }
}

#[test]
fn discovery_referrers_filter_by_artifact_type() {
    let served = Served::start();
    let app = test_image("filtered", 28);
    served.push_image("conf/filtered", "1.0", &app);
    let sbom = sbom_for(&app, "filtered sbom");
    let signature = signature_for(&app, "filtered signature");
    served.push_referrer("conf/filtered", &sbom);
    served.push_referrer("conf/filtered", &signature);
    let (listed, answer) = served.referrers(
        "conf/filtered",
        &app.digest(),
        "?artifactType=application%2Fvnd.example.sbom.v1%2Bjson",
    );
    assert_eq!(
        answer.headers_named("oci-filters-applied"),
        ["artifactType"],
        "{:?}",
        answer.headers
    );
    assert_eq!(listed.len(), 1, "{listed:?}");
    check_listed(&listed[0], &sbom);
    let (listed, answer) = served.referrers(
        "conf/filtered",
        &app.digest(),
        &format!(
            "?artifactType={}",
            SIGNATURE_CONFIG.replace('/', "%2F").replace('+', "%2B")
        ),
    );
    assert_eq!(answer.header("oci-filters-applied"), Some("artifactType"));
    assert_eq!(listed.len(), 1, "{listed:?}");
    check_listed(&listed[0], &signature);
}

#[test]
fn discovery_referrers_of_a_digest_without_any_is_an_empty_index() {
    let served = Served::start();
    let app = test_image("unsigned", 29);
    served.push_image("conf/unsigned", "1.0", &app);
    for digest in [app.digest(), absent_digest()] {
        let (listed, _) = served.referrers("conf/unsigned", &digest, "");
        assert!(listed.is_empty(), "{digest}: {listed:?}");
    }
}

#[test]
fn discovery_referrer_pushed_before_its_subject_is_accepted_and_listed() {
    // The spec: a registry MUST accept a manifest whose subject does not
    // exist (yet), so referrers and their subject can come in either order.
    let served = Served::start();
    let app = test_image("late subject", 30);
    let sbom = sbom_for(&app, "early sbom");
    let answer = served.push_referrer("conf/early", &sbom);
    assert_eq!(answer.must("oci-subject"), app.digest());
    let (listed, _) = served.referrers("conf/early", &app.digest(), "");
    assert_eq!(listed.len(), 1, "{listed:?}");
    check_listed(&listed[0], &sbom);
    served.push_image("conf/early", "1.0", &app);
    let (listed, _) = served.referrers("conf/early", &app.digest(), "");
    assert_eq!(listed.len(), 1, "{listed:?}");
    check_listed(&listed[0], &sbom);
}

// ---------------------------------------------------------------------------
// Content management

#[test]
fn management_delete_a_tag() {
    let served = Served::start();
    let app = tagged(&served, "conf/delete-tag", &["keep", "drop"], 31);
    served
        .call("DELETE", "/v2/conf/delete-tag/manifests/drop", &[], b"")
        .expect(202);
    served.get_manifest("conf/delete-tag", "drop").expect(404);
    served.head_manifest("conf/delete-tag", "drop").expect(404);
    // The other tag, and the manifest, stay.
    served.get_manifest("conf/delete-tag", "keep").expect(200);
    served
        .get_manifest("conf/delete-tag", &app.digest())
        .expect(200);
    let (tags, _) = served.tags("conf/delete-tag", "");
    assert_eq!(tags, ["keep"]);
}

#[test]
fn management_delete_a_manifest_by_digest() {
    let served = Served::start();
    let app = tagged(&served, "conf/delete-digest", &["1.0"], 32);
    let other = tagged(&served, "conf/delete-digest", &["2.0"], 33);
    served
        .call(
            "DELETE",
            &format!("/v2/conf/delete-digest/manifests/{}", app.digest()),
            &[],
            b"",
        )
        .expect(202);
    served
        .get_manifest("conf/delete-digest", &app.digest())
        .expect(404);
    served
        .head_manifest("conf/delete-digest", &app.digest())
        .expect(404);
    // Its tag went with it; the other image stays.
    served.get_manifest("conf/delete-digest", "1.0").expect(404);
    served.get_manifest("conf/delete-digest", "2.0").expect(200);
    served
        .get_manifest("conf/delete-digest", &other.digest())
        .expect(200);
    let (tags, _) = served.tags("conf/delete-digest", "");
    assert_eq!(tags, ["2.0"]);
}

#[test]
fn management_delete_a_manifest_pushed_by_digest_only() {
    let served = Served::start();
    let app = test_image("untagged", 34);
    served.push_image("conf/untagged", &app.digest(), &app);
    served
        .get_manifest("conf/untagged", &app.digest())
        .expect(200);
    served
        .call(
            "DELETE",
            &format!("/v2/conf/untagged/manifests/{}", app.digest()),
            &[],
            b"",
        )
        .expect(202);
    served
        .get_manifest("conf/untagged", &app.digest())
        .expect(404);
    served
        .head_manifest("conf/untagged", &app.digest())
        .expect(404);
}

#[test]
fn management_delete_an_unknown_manifest_is_404() {
    let served = Served::start();
    tagged(&served, "conf/delete-unknown", &["1.0"], 35);
    served
        .call(
            "DELETE",
            &format!("/v2/conf/delete-unknown/manifests/{}", absent_digest()),
            &[],
            b"",
        )
        .expect(404);
    served
        .call(
            "DELETE",
            "/v2/conf/delete-unknown/manifests/absent",
            &[],
            b"",
        )
        .expect(404);
    served
        .get_manifest("conf/delete-unknown", "1.0")
        .expect(200);
}

#[test]
fn management_delete_a_blob_is_202_or_unsupported_405() {
    let served = Served::start();
    let bytes = random_bytes(1500, 36);
    let digest = served.upload("conf/delete-blob", &bytes);
    let path = format!("/v2/conf/delete-blob/blobs/{digest}");
    let answer = served
        .call("DELETE", &path, &[], b"")
        .expect_one_of(&[202, 405]);
    match answer.status {
        202 => {
            served.get(&path).expect(404);
        }
        _ => {
            served.get(&path).expect(200);
        }
    }
}

// ---------------------------------------------------------------------------
// Repositories scope content

#[test]
fn scoping_a_blob_is_found_only_in_its_repository() {
    let served = Served::start();
    // a/two exists, with content of its own.
    let theirs = test_image("a/two's own", 37);
    served.push_image("a/two", "1.0", &theirs);
    // A blob uploaded to a/one, and the layer of an image tagged there.
    let loose = random_bytes(1200, 38);
    let loose = served.upload("a/one", &loose);
    let mine = test_image("a/one's own", 39);
    served.push_image("a/one", "1.0", &mine);
    for digest in [loose, mine.layers[0].digest.clone(), mine.config_digest()] {
        served.get(&format!("/v2/a/one/blobs/{digest}")).expect(200);
        served
            .get(&format!("/v2/a/two/blobs/{digest}"))
            .expect_error(404, "BLOB_UNKNOWN");
        served
            .head(&format!("/v2/a/two/blobs/{digest}"))
            .expect(404)
            .expect_no_body();
    }
    // And the other way round.
    served
        .get(&format!("/v2/a/two/blobs/{}", theirs.layers[0].digest))
        .expect(200);
    served
        .get(&format!("/v2/a/one/blobs/{}", theirs.layers[0].digest))
        .expect(404);
}

#[test]
fn scoping_a_manifest_is_found_only_in_its_repository() {
    let served = Served::start();
    let theirs = test_image("a/two's own", 40);
    served.push_image("a/two", "1.0", &theirs);
    let by_digest = test_image("pushed by digest to a/one", 41);
    served.push_image("a/one", &by_digest.digest(), &by_digest);
    let by_tag = test_image("tagged in a/one", 42);
    served.push_image("a/one", "only-here", &by_tag);
    for app in [&by_digest, &by_tag] {
        served.get_manifest("a/one", &app.digest()).expect(200);
        served
            .get_manifest("a/two", &app.digest())
            .expect_error(404, "MANIFEST_UNKNOWN");
        served
            .head_manifest("a/two", &app.digest())
            .expect(404)
            .expect_no_body();
    }
    served.get_manifest("a/two", "only-here").expect(404);
}

#[test]
fn scoping_referrers_are_listed_only_in_their_repository() {
    let served = Served::start();
    let app = test_image("in both", 43);
    served.push_image("a/one", "1.0", &app);
    served.push_image("a/two", "1.0", &app);
    let sbom = sbom_for(&app, "only in a/one");
    served.push_referrer("a/one", &sbom);
    let (listed, _) = served.referrers("a/one", &app.digest(), "");
    assert_eq!(listed.len(), 1, "{listed:?}");
    check_listed(&listed[0], &sbom);
    let (listed, _) = served.referrers("a/two", &app.digest(), "");
    assert!(
        listed.is_empty(),
        "a/two lists a/one's referrer: {listed:?}"
    );
    served.get_manifest("a/two", &sbom.digest()).expect(404);
}

#[test]
fn scoping_an_upload_session_belongs_to_its_repository() {
    let served = Served::start();
    let session = served.open_session("a/one").location();
    let elsewhere = session.replacen("/v2/a/one/", "/v2/a/two/", 1);
    assert_ne!(session, elsewhere);
    served
        .call("PATCH", &elsewhere, &[], b"bytes")
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    served.get(&elsewhere).expect(404);
    served.get(&session).expect(204);
}

// ---------------------------------------------------------------------------
// Names

/// One HTTP/1.1 exchange with `addr` carrying `host` as its Host header
/// (the shared helper always sends the address it connects to).
fn call_as(
    addr: &str,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        what: format!("{method} {path} (Host: {host})"),
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

/// The `org.opencontainers.image.ref.name`s of the store's index.json.
fn stored_names(owner: &Ferry) -> Vec<String> {
    let index: Value = serde_json::from_str(&owner.index_json()).unwrap_or_default();
    index["manifests"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|d| d["annotations"]["org.opencontainers.image.ref.name"].as_str())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn names_a_push_is_stored_under_the_servers_own_name() {
    let served = Served::start();
    let app = test_image("named", 44);
    served.push_image("conf/names", "plain", &app);
    call_as(
        served.host(),
        "docker.io",
        "PUT",
        "/v2/conf/names/manifests/v1",
        &[("Content-Type", OCI_MANIFEST)],
        &app.manifest,
    )
    .expect(201);
    let names = stored_names(&served.owner);
    for tag in ["plain", "v1"] {
        let expected = format!("{}/conf/names:{tag}", served.host());
        assert!(
            names.contains(&expected),
            "{expected} is not in index.json: {names:?}"
        );
    }
    assert!(
        !names.iter().any(|n| n.contains("docker.io")),
        "a client's Host header named the image: {names:?}"
    );
    served.get_manifest("conf/names", "v1").expect(200);
    let images = served.owner.run(&["images"]).ok();
    assert!(!images.stdout.contains("docker.io"), "{}", images.stdout);
}
