//! Pushes through the API, into the store's verified ingest: upload
//! sessions (monolithic, chunked `PATCH` with `Content-Range` checked
//! against what arrived, cross-repository mounts), manifests (parsed, every
//! blob they name present, then tagged atomically or kept with their
//! subject) and deletes. A blob is visible only once its digest checked
//! out; a push that stops half way leaves no tag. No lock is held between
//! requests: a finished blob is protected from gc by the store itself
//! (`store::protect`, for `--upload-timeout`) until a manifest that
//! references it commits, and the manifest commit checks its whole graph
//! under the lock gc excludes. Pushes are stored under the server's own
//! name (`serve::names`).

use super::http::{builder, empty, ApiError, Body};
use super::names::{self, Repo, REFERRER_REPOSITORY};
use super::routes::{manifest_ref, query_param, ManifestRef};
use super::{Server, Session};
use crate::store::{IndexEntry, StoreError};
use crate::types::manifest::{descriptor_digest, is_foreign_layer, MAX_MANIFEST_BYTES};
use crate::types::referrer::is_cosign_tag;
use crate::types::{Digest, ParsedManifest, ReferrerLink};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Response, StatusCode};
use std::net::IpAddr;
use std::time::Instant;

impl Server {
    fn upload_location(name: &str, id: &str) -> String {
        format!("/v2/{name}/blobs/uploads/{id}")
    }

    fn blob_created(name: &str, digest: &Digest) -> Response<Body> {
        builder(StatusCode::CREATED)
            .header("Location", format!("/v2/{name}/blobs/{digest}"))
            .header("Docker-Content-Digest", digest.to_string())
            .header("Content-Length", 0)
            .body(empty())
            .expect("valid response")
    }

    /// Where a push to `name` goes.
    async fn push_repo(&self, name: &str) -> Result<Repo, ApiError> {
        self.index().await?.push_target(&self.name, name)
    }

    /// Refuse a body that announces more than a blob may hold.
    fn check_length(&self, already: u64, length: Option<u64>) -> Result<(), ApiError> {
        match length {
            Some(length) if already.saturating_add(length) > self.limits.max_blob_size => {
                Err(self.blob_too_large())
            }
            _ => Ok(()),
        }
    }

    fn blob_too_large(&self) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "SIZE_INVALID",
            format!(
                "a blob may hold at most {} bytes here (ferry serve --max-blob-size)",
                self.limits.max_blob_size
            ),
        )
    }

    /// `POST /v2/<name>/blobs/uploads/`: a mount, a monolithic upload
    /// (`?digest=`), or a new session.
    pub(super) async fn start_upload(
        &self,
        name: &str,
        query: Option<&str>,
        length: Option<u64>,
        body: Incoming,
        client: IpAddr,
    ) -> Result<Response<Body>, ApiError> {
        let repo = self.push_repo(name).await?;
        if let Some(mount) = query_param(query, "mount") {
            let digest = parse_digest(&mount)?;
            // Only from a repository that shows the blob (spec: otherwise
            // a session, 202); without `from`, always a session.
            if let Some(from) = query_param(query, "from").filter(|f| super::valid_name(f)) {
                let source = self.readable(&from).await?;
                if self.visible(&source, &digest)
                    && self.store.claim_async(&digest, None).await?.is_some()
                {
                    self.add_pending(&repo, &digest)?;
                    return Ok(Self::blob_created(name, &digest));
                }
            }
        }
        if let Some(digest) = query_param(query, "digest") {
            let digest = parse_digest(&digest)?;
            self.check_length(0, length)?;
            let mut upload = self.store.start_upload()?;
            self.receive(&mut upload, body).await?;
            upload.finish(&digest).await?;
            self.add_pending(&repo, &digest)?;
            return Ok(Self::blob_created(name, &digest));
        }
        let id = format!("{:032x}", rand::random::<u128>());
        {
            let mut sessions = self.sessions.lock().expect("sessions");
            if sessions.len() >= self.limits.max_uploads {
                return Err(ApiError::too_many(
                    "too many uploads are open on this registry (ferry serve --max-uploads); try again shortly",
                ));
            }
            let mine = sessions.values().filter(|s| s.client == client).count();
            if mine >= self.limits.max_uploads_per_client {
                return Err(ApiError::too_many(
                    "too many uploads are open from this address (ferry serve --max-uploads-per-client); finish or cancel some",
                ));
            }
            sessions.insert(
                id.clone(),
                Session {
                    repository: repo,
                    client,
                    upload: self.store.start_upload()?,
                    touched: Instant::now(),
                },
            );
        }
        Ok(builder(StatusCode::ACCEPTED)
            .header("Location", Self::upload_location(name, &id))
            .header("Range", "0-0")
            .header("Docker-Upload-UUID", &id)
            .header("Content-Length", 0)
            .body(empty())
            .expect("valid response"))
    }

    /// Take a session out of the table for the length of one request.
    fn take_session(&self, name: &str, id: &str) -> Result<Session, ApiError> {
        let mut sessions = self.sessions.lock().expect("sessions");
        match sessions.remove(id) {
            Some(session) if session.repository.repository == name => Ok(session),
            Some(session) => {
                sessions.insert(id.to_owned(), session);
                Err(ApiError::upload_unknown())
            }
            None => Err(ApiError::upload_unknown()),
        }
    }

    fn put_back(&self, id: &str, mut session: Session) {
        session.touched = Instant::now();
        self.sessions
            .lock()
            .expect("sessions")
            .insert(id.to_owned(), session);
    }

    fn progress(name: &str, id: &str, written: u64, status: StatusCode) -> Response<Body> {
        let range = match written {
            0 => "0-0".to_owned(),
            n => format!("0-{}", n - 1),
        };
        builder(status)
            .header("Location", Self::upload_location(name, id))
            .header("Range", range)
            .header("Docker-Upload-UUID", id)
            .header("Content-Length", 0)
            .body(empty())
            .expect("valid response")
    }

    /// `PATCH …/uploads/<id>`: append a chunk; a `Content-Range` must start
    /// where the upload stands.
    pub(super) async fn patch_upload(
        &self,
        name: &str,
        id: &str,
        content_range: Option<&str>,
        length: Option<u64>,
        body: Incoming,
    ) -> Result<Response<Body>, ApiError> {
        let mut session = self.take_session(name, id)?;
        if let Some(range) = content_range {
            let (start, end) = parse_content_range(range);
            // The chunk must start where the upload stands, and a stated
            // end must match the body's announced length.
            let length_disagrees = matches!(
                (start, end, length),
                (Some(start), Some(end), Some(length)) if end < start || end - start + 1 != length
            );
            if start != Some(session.upload.written()) || length_disagrees {
                let written = session.upload.written();
                self.put_back(id, session);
                return Ok(builder(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header("Location", Self::upload_location(name, id))
                    .header("Range", format!("0-{}", written.saturating_sub(1)))
                    .header("Docker-Upload-UUID", id)
                    .body(empty())
                    .expect("valid response"));
            }
            if let (Some(start), Some(end)) = (start, end) {
                // Without a length to check up front, count what arrives.
                let before = session.upload.written();
                self.check_length(before, length)?;
                self.receive(&mut session.upload, body).await?;
                if end < start || session.upload.written() - before != end - start + 1 {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "BLOB_UPLOAD_INVALID",
                        format!(
                            "the chunk said bytes {start}-{end} but carried {} bytes; the upload is dropped, start it again",
                            session.upload.written() - before
                        ),
                    ));
                }
                let written = session.upload.written();
                self.put_back(id, session);
                return Ok(Self::progress(name, id, written, StatusCode::ACCEPTED));
            }
        }
        // A refused or failed chunk ends the session: its bytes cannot be trusted.
        self.check_length(session.upload.written(), length)?;
        self.receive(&mut session.upload, body).await?;
        let written = session.upload.written();
        self.put_back(id, session);
        Ok(Self::progress(name, id, written, StatusCode::ACCEPTED))
    }

    /// `GET …/uploads/<id>`: where the upload stands.
    pub(super) fn upload_status(&self, name: &str, id: &str) -> Result<Response<Body>, ApiError> {
        let session = self.take_session(name, id)?;
        let written = session.upload.written();
        self.put_back(id, session);
        Ok(Self::progress(name, id, written, StatusCode::NO_CONTENT))
    }

    /// `PUT …/uploads/<id>?digest=`: the last chunk, then verify and publish.
    pub(super) async fn finish_upload(
        &self,
        name: &str,
        id: &str,
        query: Option<&str>,
        length: Option<u64>,
        body: Incoming,
    ) -> Result<Response<Body>, ApiError> {
        let digest = query_param(query, "digest")
            .ok_or_else(|| ApiError::digest_invalid("the final PUT needs ?digest="))?;
        let digest = parse_digest(&digest)?;
        let mut session = self.take_session(name, id)?;
        self.check_length(session.upload.written(), length)?;
        self.receive(&mut session.upload, body).await?;
        let Session {
            upload, repository, ..
        } = session;
        upload.finish(&digest).await?;
        self.add_pending(&repository, &digest)?;
        Ok(Self::blob_created(name, &digest))
    }

    /// `DELETE …/uploads/<id>`: cancel.
    pub(super) fn cancel_upload(&self, name: &str, id: &str) -> Result<Response<Body>, ApiError> {
        drop(self.take_session(name, id)?);
        Ok(builder(StatusCode::NO_CONTENT)
            .body(empty())
            .expect("valid response"))
    }

    /// Stream a request body into an upload, refusing past the blob cap.
    async fn receive(
        &self,
        upload: &mut crate::store::upload::Upload,
        mut body: Incoming,
    ) -> Result<(), ApiError> {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "BLOB_UPLOAD_INVALID",
                    format!("the upload stopped: {e}"),
                )
            })?;
            if let Some(data) = frame.data_ref() {
                if upload.written() + data.len() as u64 > self.limits.max_blob_size {
                    return Err(self.blob_too_large());
                }
                upload.write(data).await?;
            }
        }
        Ok(())
    }

    /// `PUT /v2/<name>/manifests/<reference>`: parsed, every descriptor it
    /// names present in this repository, then committed by the store under
    /// the lock gc excludes (which checks the whole graph once more).
    pub(super) async fn put_manifest(
        &self,
        name: &str,
        reference: &str,
        content_type: Option<&str>,
        body: Incoming,
    ) -> Result<Response<Body>, ApiError> {
        let bytes = read_capped(body, MAX_MANIFEST_BYTES).await?;
        let manifest = ParsedManifest::parse(bytes, content_type, &format!("{name}:{reference}"))
            .map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", e.to_string())
        })?;
        let tag = match manifest_ref(reference) {
            Some(ManifestRef::Tag(tag)) => Some(tag),
            Some(ManifestRef::Digest(digest)) if digest == manifest.digest => None,
            Some(ManifestRef::Digest(digest)) => {
                return Err(ApiError::digest_invalid(format!(
                    "the manifest hashes to {}, not {digest}",
                    manifest.digest
                )))
            }
            None => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "TAG_INVALID",
                    format!("{reference:?} is neither a tag nor a digest"),
                ))
            }
        };
        let view = self.index().await?;
        let repo = view.push_target(&self.name, name)?;
        // Every blob and child manifest it names must be in this repository.
        let readable = self.readable_repo(view, repo.clone()).await?;
        for child in manifest.children() {
            if manifest.image().is_some() && is_foreign_layer(child) {
                continue;
            }
            let digest = descriptor_digest(child).map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", e.to_string())
            })?;
            if !self.visible(&readable, &digest) {
                return Err(blob_unknown(name, reference, &digest, child.size()));
            }
        }
        let subject = subject_of(&manifest);
        // A cosign signature tag (`sha256-<hex>.sig`) is kept with its image.
        let cosign = tag.as_deref().filter(|t| is_cosign_tag(t)).and_then(|t| {
            let hex = t.strip_prefix("sha256-")?.split('.').next()?;
            let subject: Digest = format!("sha256:{hex}").parse().ok()?;
            Some(ReferrerLink {
                subject,
                tag: Some(t.to_owned()),
            })
        });
        let commit = Commit {
            referrer: subject
                .clone()
                .map(|subject| ReferrerLink { subject, tag: None }),
            cosign,
            tag: match &tag {
                Some(tag) if !is_cosign_tag(tag) => Some(repo.tagged(tag)?),
                _ => None,
            },
            // Pushed by digest alone, or a referrer whose subject is not
            // here (yet): pinned, so it is found and kept until deleted.
            pin: match (&tag, &subject) {
                (None, None) => Some(repo.pinned(&manifest.digest)?),
                (None, Some(subject)) if !readable.scope.contains_key(subject) => {
                    Some(repo.pinned(&manifest.digest)?)
                }
                _ => None,
            },
        };
        let store = self.store.clone();
        let committed = {
            let (manifest, repo) = (manifest.clone(), repo.clone());
            tokio::task::spawn_blocking(move || commit.apply(&store, &manifest, &repo))
                .await
                .map_err(ApiError::internal)?
        };
        self.forget_view();
        committed.map_err(|e| commit_error(e, name, reference))?;
        // Uploads stay in the repository's view until their own time runs
        // out: another client may still reference them.
        let mut response = builder(StatusCode::CREATED)
            .header(
                "Location",
                format!("/v2/{name}/manifests/{}", manifest.digest),
            )
            .header("Docker-Content-Digest", manifest.digest.to_string())
            .header("Content-Length", 0);
        if let Some(subject) = subject {
            response = response.header("OCI-Subject", subject.to_string());
        }
        Ok(response.body(empty()).expect("valid response"))
    }

    /// `DELETE /v2/<name>/manifests/<reference>`: a tag untags; a digest
    /// removes every tag and pin of this one repository that points at it
    /// (or its referrer with that digest, or a cosign tag).
    pub(super) async fn delete_manifest(
        &self,
        name: &str,
        reference: &str,
    ) -> Result<Response<Body>, ApiError> {
        let unknown = || ApiError::manifest_unknown(&format!("{name}:{reference}"));
        let readable = self.readable(name).await?;
        let repo = readable.repo.clone();
        let wanted = manifest_ref(reference).ok_or_else(unknown)?;
        let mut doomed = Vec::new();
        for (full, entry) in readable.view.named_in(&repo) {
            let hit = match &wanted {
                ManifestRef::Tag(tag) => full.tag() == Some(tag.as_str()),
                ManifestRef::Digest(digest) => &entry.digest == digest,
            };
            if hit {
                doomed.push(full.to_string());
            }
        }
        let store = self.store.clone();
        let removed = match wanted {
            // Its tags and pins here, and its referrer entries kept here.
            ManifestRef::Digest(digest) => {
                let scope = readable.scope.clone();
                let target = digest.clone();
                tokio::task::spawn_blocking(move || {
                    let untagged = !doomed.is_empty();
                    if untagged {
                        store.rmi(&doomed, true)?;
                    }
                    let referrers = store.remove_referrers(|e| {
                        e.digest == target
                            && match e.annotations.get(REFERRER_REPOSITORY) {
                                Some(repository) => *repository == repo.full(),
                                None => e.link().is_some_and(|l| scope.contains_key(&l.subject)),
                            }
                    })?;
                    Ok::<_, StoreError>(untagged || referrers)
                })
                .await
                .map_err(ApiError::internal)
                .and_then(|r| r.map_err(ApiError::from))
                .and_then(|removed| {
                    // Served, but only as part of another image here.
                    if !removed && readable.scope.contains_key(&digest) {
                        return Err(ApiError::new(
                            StatusCode::METHOD_NOT_ALLOWED,
                            "UNSUPPORTED",
                            format!("{name}@{digest} is part of another image here (a child of an index); delete that image instead"),
                        ));
                    }
                    Ok(removed)
                })?
            }
            ManifestRef::Tag(_) if !doomed.is_empty() => {
                tokio::task::spawn_blocking(move || store.rmi(&doomed, true).map(|_| true))
                    .await
                    .map_err(ApiError::internal)??
            }
            // A cosign tag kept with one of this repository's images.
            ManifestRef::Tag(tag) => {
                let Some(entry) = super::read::tagged(&readable, &tag) else {
                    return Err(unknown());
                };
                tokio::task::spawn_blocking(move || {
                    store.remove_referrers(|e| {
                        e.digest == entry.digest
                            && e.link() == entry.link()
                            && names::referrer_listed_in(e, &repo)
                    })
                })
                .await
                .map_err(ApiError::internal)??
            }
        };
        self.forget_view();
        if !removed {
            return Err(unknown());
        }
        Ok(builder(StatusCode::ACCEPTED)
            .body(empty())
            .expect("valid response"))
    }
}

/// How a pushed manifest becomes visible.
struct Commit {
    /// Kept with its subject (an OCI 1.1 referrer).
    referrer: Option<ReferrerLink>,
    /// A cosign tag: replaces the one it had in this repository.
    cosign: Option<ReferrerLink>,
    /// A tag of this repository.
    tag: Option<crate::types::Reference>,
    /// Pushed by digest alone: pinned in this repository until deleted.
    pin: Option<crate::types::Reference>,
}

impl Commit {
    fn apply(
        self,
        store: &crate::store::Store,
        manifest: &ParsedManifest,
        repo: &Repo,
    ) -> Result<(), StoreError> {
        store.commit_bytes(&manifest.bytes)?;
        let entry = IndexEntry::new(
            &manifest.media_type,
            manifest.digest.clone(),
            manifest.bytes.len() as u64,
        );
        let kept = |link: &ReferrerLink| {
            let mut entry = IndexEntry::referrer(manifest, link);
            entry
                .annotations
                .insert(REFERRER_REPOSITORY.to_owned(), repo.full());
            entry
        };
        if let Some(link) = &self.referrer {
            store.add_referrer(kept(link))?;
        }
        if let Some(link) = &self.cosign {
            store.replace_referrer(kept(link), |e| {
                e.link().as_ref() == Some(link)
                    && e.annotations.get(REFERRER_REPOSITORY) == Some(&repo.full())
            })?;
        }
        if let Some(name) = &self.tag {
            store.set_tag(name, entry.clone())?;
            // Children pushed by digest for this image need no pin now.
            let reached = store.reachable(&entry.digest, &entry.media_type)?;
            store.update_index(|entries, _| {
                entries.retain(|e| {
                    !(e.digest != entry.digest
                        && reached.contains_key(&e.digest)
                        && e.name()
                            .is_some_and(|n| repo.holds(&n) && n.tag().is_none()))
                });
                Ok(())
            })?;
        }
        if let Some(name) = &self.pin {
            store.set_tag(name, entry)?;
        }
        Ok(())
    }
}

fn blob_unknown(name: &str, reference: &str, digest: &Digest, size: u64) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "MANIFEST_BLOB_UNKNOWN",
        format!("{name}:{reference} refers to {digest} ({size} bytes), which this repository does not hold; push it first"),
    )
}

/// A store refusal of a manifest commit, in the API's terms.
fn commit_error(error: StoreError, name: &str, reference: &str) -> ApiError {
    match error {
        StoreError::MissingBlob(digest) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "MANIFEST_BLOB_UNKNOWN",
            format!("{name}:{reference} refers to {digest}, which this registry does not hold; push it first"),
        ),
        StoreError::Invalid { message, .. } => ApiError::new(
            StatusCode::BAD_REQUEST,
            "MANIFEST_INVALID",
            format!("{name}:{reference}: {message}"),
        ),
        StoreError::Corrupt { .. } => ApiError::new(
            StatusCode::BAD_REQUEST,
            "MANIFEST_INVALID",
            format!("{name}:{reference} refers to a blob that is not a readable manifest (an index lists manifests only; push its children first)"),
        ),
        other => ApiError::from(other),
    }
}

/// `[bytes ]START-END` of a chunk's `Content-Range`.
fn parse_content_range(range: &str) -> (Option<u64>, Option<u64>) {
    let range = range.trim().trim_start_matches("bytes").trim();
    let range = range.split('/').next().unwrap_or(range);
    let mut bounds = range.splitn(2, '-').map(|s| s.trim().parse::<u64>().ok());
    (bounds.next().flatten(), bounds.next().flatten())
}

fn parse_digest(text: &str) -> Result<Digest, ApiError> {
    let digest: Digest = text
        .parse()
        .map_err(|e| ApiError::digest_invalid(format!("{text}: {e}")))?;
    if digest.algorithm().name() != "sha256" {
        return Err(ApiError::digest_invalid(format!(
            "{digest}: this registry stores sha256 blobs only"
        )));
    }
    Ok(digest)
}

/// The digest a manifest names as its subject.
fn subject_of(manifest: &ParsedManifest) -> Option<Digest> {
    serde_json::from_slice::<serde_json::Value>(&manifest.bytes)
        .ok()?
        .pointer("/subject/digest")?
        .as_str()?
        .parse()
        .ok()
}

/// A whole small body, refused past `limit` bytes.
async fn read_capped(mut body: Incoming, limit: usize) -> Result<bytes::Bytes, ApiError> {
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", e.to_string())
        })?;
        if let Some(data) = frame.data_ref() {
            if bytes.len() + data.len() > limit {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "MANIFEST_INVALID",
                    format!("manifest over the {limit}-byte limit"),
                ));
            }
            bytes.extend_from_slice(data);
        }
    }
    Ok(bytes.into())
}
