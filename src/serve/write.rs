//! Pushes through the API, into the store's verified ingest: upload
//! sessions (monolithic, chunked `PATCH` with `Content-Range` checked
//! against what arrived, cross-repository mounts), manifests (parsed, every
//! blob they name present, then tagged atomically or kept with their
//! subject) and deletes. A blob is visible only once its digest checked
//! out; a push that stops half way leaves no tag. Each upload holds the
//! store's shared writer lock, and a finished blob keeps it until a
//! manifest is tagged in its repository (or the session timeout passes), so
//! a `gc` beside the server never deletes what a push has verified but not
//! yet tagged.

use super::http::{builder, empty, ApiError, Body};
use super::routes::{manifest_ref, query_param, ManifestRef};
use super::{Pending, Server, Session};
use crate::store::IndexEntry;
use crate::types::manifest::{descriptor_digest, is_foreign_layer, MAX_MANIFEST_BYTES};
use crate::types::referrer::is_cosign_tag;
use crate::types::{Digest, ParsedManifest, Reference, ReferrerLink};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Response, StatusCode};
use std::time::Instant;

impl Server {
    /// The store's writer lock, taken off the async threads (it may wait for a gc).
    async fn writer_lock(&self) -> Result<crate::store::lock::LockGuard, ApiError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.lock_writer())
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::from)
    }

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

    fn keep_pending(&self, name: &str, lock: crate::store::lock::LockGuard) {
        self.pending.lock().expect("pending").push(Pending {
            repository: name.to_owned(),
            since: Instant::now(),
            _lock: lock,
        });
    }

    /// `POST /v2/<name>/blobs/uploads/`: a mount, a monolithic upload
    /// (`?digest=`), or a new session.
    pub(super) async fn start_upload(
        &self,
        name: &str,
        query: Option<&str>,
        body: Incoming,
    ) -> Result<Response<Body>, ApiError> {
        if let Some(mount) = query_param(query, "mount") {
            let digest = parse_digest(&mount)?;
            if self.store.blob_size(&digest).is_some() {
                let lock = self.writer_lock().await?;
                self.keep_pending(name, lock);
                return Ok(Self::blob_created(name, &digest));
            }
        }
        let lock = self.writer_lock().await?;
        let mut upload = self.store.start_upload().await?;
        if let Some(digest) = query_param(query, "digest") {
            let digest = parse_digest(&digest)?;
            receive(&mut upload, body).await?;
            upload.finish(&digest).await?;
            self.keep_pending(name, lock);
            return Ok(Self::blob_created(name, &digest));
        }
        let id = format!("{:032x}", rand::random::<u128>());
        self.sessions.lock().expect("sessions").insert(
            id.clone(),
            Session {
                repository: name.to_owned(),
                upload,
                touched: Instant::now(),
                lock,
            },
        );
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
            Some(session) if session.repository == name => Ok(session),
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
        body: Incoming,
    ) -> Result<Response<Body>, ApiError> {
        let mut session = self.take_session(name, id)?;
        if let Some(range) = content_range {
            let start = range
                .trim()
                .trim_start_matches("bytes ")
                .split('-')
                .next()
                .and_then(|s| s.trim().parse::<u64>().ok());
            if start != Some(session.upload.written()) {
                let written = session.upload.written();
                self.put_back(id, session);
                return Ok(builder(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header("Location", Self::upload_location(name, id))
                    .header("Range", format!("0-{}", written.saturating_sub(1)))
                    .header("Docker-Upload-UUID", id)
                    .body(empty())
                    .expect("valid response"));
            }
        }
        // A failed chunk ends the session: its bytes cannot be trusted.
        receive(&mut session.upload, body).await?;
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
        body: Incoming,
    ) -> Result<Response<Body>, ApiError> {
        let digest = query_param(query, "digest")
            .ok_or_else(|| ApiError::digest_invalid("the final PUT needs ?digest="))?;
        let digest = parse_digest(&digest)?;
        let mut session = self.take_session(name, id)?;
        receive(&mut session.upload, body).await?;
        let Session { upload, lock, .. } = session;
        upload.finish(&digest).await?;
        self.keep_pending(name, lock);
        Ok(Self::blob_created(name, &digest))
    }

    /// `DELETE …/uploads/<id>`: cancel.
    pub(super) fn cancel_upload(&self, name: &str, id: &str) -> Result<Response<Body>, ApiError> {
        drop(self.take_session(name, id)?);
        Ok(builder(StatusCode::NO_CONTENT)
            .body(empty())
            .expect("valid response"))
    }

    /// `PUT /v2/<name>/manifests/<reference>`.
    pub(super) async fn put_manifest(
        &self,
        name: &str,
        reference: &str,
        host: &str,
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
        // Every blob and child manifest it names must be here already.
        for child in manifest.children() {
            if manifest.image().is_some() && is_foreign_layer(child) {
                continue;
            }
            let digest = descriptor_digest(child).map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", e.to_string())
            })?;
            if self.store.blob_size(&digest) != Some(child.size()) {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "MANIFEST_BLOB_UNKNOWN",
                    format!("{name}:{reference} refers to {digest} ({} bytes), which this registry does not hold; push it first", child.size()),
                ));
            }
        }
        let lock = self.writer_lock().await?;
        self.store
            .put_blob_bytes(&manifest.digest, &manifest.bytes)
            .await?;
        let subject = subject_of(&manifest);
        if let Some(subject) = &subject {
            let link = ReferrerLink {
                subject: subject.clone(),
                tag: None,
            };
            self.store
                .add_referrer(IndexEntry::referrer(&manifest, &link))?;
        }
        // A cosign signature tag (`sha256-<hex>.sig`) is kept with its image.
        let cosign = tag.as_deref().filter(|t| is_cosign_tag(t)).and_then(|t| {
            let hex = t.strip_prefix("sha256-")?.split('.').next()?;
            let subject: Digest = format!("sha256:{hex}").parse().ok()?;
            Some(ReferrerLink {
                subject,
                tag: Some(t.to_owned()),
            })
        });
        match (&tag, cosign) {
            (Some(_), Some(link)) => {
                self.store
                    .add_referrer(IndexEntry::referrer(&manifest, &link))?;
                drop(lock);
            }
            (Some(tag), None) => {
                let full = stored_name(host, &self.host, name, tag)?;
                let entry = IndexEntry::new(
                    &manifest.media_type,
                    manifest.digest.clone(),
                    manifest.bytes.len() as u64,
                );
                self.store.set_tag(&full, entry)?;
                // Tagged: the blobs pushed for it are referenced now.
                self.pending
                    .lock()
                    .expect("pending")
                    .retain(|p| p.repository != name);
                drop(lock);
            }
            (None, _) if subject.is_some() => drop(lock),
            // A child pushed by digest: its index comes next.
            (None, _) => self.keep_pending(name, lock),
        }
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
    /// removes every tag of the repository that points at it (or the
    /// referrer with that digest).
    pub(super) fn delete_manifest(
        &self,
        name: &str,
        reference: &str,
    ) -> Result<Response<Body>, ApiError> {
        let entries = crate::store::index::read_index(&self.store)?;
        let mut names = Vec::new();
        for entry in &entries {
            let Some(full) = entry.name() else { continue };
            if full.repository() != name {
                continue;
            }
            let hit = match manifest_ref(reference) {
                Some(ManifestRef::Tag(tag)) => full.tag() == Some(tag.as_str()),
                Some(ManifestRef::Digest(digest)) => entry.digest == digest,
                None => false,
            };
            if hit {
                names.push(full.to_string());
            }
        }
        if names.is_empty() {
            // A referrer: by its digest, or a cosign tag.
            let removed = match manifest_ref(reference) {
                Some(ManifestRef::Digest(digest)) => {
                    self.store.remove_referrers(|e| e.digest == digest)?
                }
                Some(ManifestRef::Tag(tag)) => self.store.remove_referrers(|e| {
                    e.link().and_then(|l| l.tag).as_deref() == Some(tag.as_str())
                })?,
                None => false,
            };
            if !removed {
                return Err(ApiError::manifest_unknown(&format!("{name}:{reference}")));
            }
        } else {
            self.store.rmi(&names, true)?;
        }
        Ok(builder(StatusCode::ACCEPTED)
            .body(empty())
            .expect("valid response"))
    }
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

/// The store name for a pushed tag: the host the client addressed (so
/// `docker push HOST/team/app:1.0` lands as that name), else the server's.
fn stored_name(host: &str, fallback: &str, name: &str, tag: &str) -> Result<Reference, ApiError> {
    Reference::parse(&format!("{host}/{name}:{tag}"))
        .or_else(|_| Reference::parse(&format!("{fallback}/{name}:{tag}")))
        .map_err(|e| ApiError::name_invalid(&e.to_string()))
}

/// Stream a request body into an upload.
async fn receive(
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
            upload.write(data).await?;
        }
    }
    Ok(())
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
