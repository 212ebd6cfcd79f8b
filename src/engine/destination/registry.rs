//! A registry repository as a [`Destination`].

use super::{Destination, Progress};
use crate::engine::source::Source;
use crate::engine::EngineError;
use crate::registry::blobs::BlobStream;
use crate::registry::RegistryClient;
use crate::store::index::TagChange;
use crate::types::{Digest, ParsedManifest, Reference, ReferrerLink};
use futures_util::stream::StreamExt;
use std::sync::Arc;

/// Blobs up to this size are uploaded from memory in one request.
const SMALL_BLOB: u64 = 1024 * 1024;

/// Upload pieces this large: network reads arrive in small chunks, and each
/// one written separately costs a syscall and framing.
const UPLOAD_PIECE: usize = 512 * 1024;

/// A registry repository; the root is written under the reference's tag
/// (or digest).
pub struct RegistryDestination {
    client: Arc<RegistryClient>,
    reference: Reference,
}

impl RegistryDestination {
    pub fn new(client: Arc<RegistryClient>, reference: Reference) -> RegistryDestination {
        RegistryDestination { client, reference }
    }
}

/// Join small chunks into pieces of about [`UPLOAD_PIECE`] bytes.
fn coalesce(stream: BlobStream) -> BlobStream {
    futures_util::stream::try_unfold(Some(stream), |state| async move {
        let Some(mut stream) = state else {
            return Ok(None);
        };
        let mut piece = bytes::BytesMut::new();
        while piece.len() < UPLOAD_PIECE {
            match stream.next().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    if piece.is_empty() && chunk.len() >= UPLOAD_PIECE {
                        return Ok(Some((chunk, Some(stream))));
                    }
                    piece.extend_from_slice(&chunk);
                }
                None if piece.is_empty() => return Ok(None),
                None => return Ok(Some((piece.freeze(), None))),
            }
        }
        Ok(Some((piece.freeze(), Some(stream))))
    })
    .boxed()
}

#[async_trait::async_trait]
impl Destination for RegistryDestination {
    fn describe(&self) -> String {
        self.reference.to_string()
    }

    /// The same repository, by digest (or under its cosign tag).
    fn for_referrer(&self, link: &ReferrerLink, digest: &Digest) -> Box<dyn Destination> {
        Box::new(RegistryDestination {
            client: self.client.clone(),
            reference: match &link.tag {
                Some(tag) => self.reference.with_tag(tag),
                None => self.reference.with_digest(digest.clone()),
            },
        })
    }

    async fn has_blob(&self, digest: &Digest, _size: u64) -> Result<bool, EngineError> {
        Ok(self
            .client
            .blob_size(self.reference.repository(), digest)
            .await?
            .is_some())
    }

    async fn try_mount(&self, source: &dyn Source, digest: &Digest) -> Result<bool, EngineError> {
        let Some((registry, from)) = source.registry_repository() else {
            return Ok(false);
        };
        if self.client.registry() != registry || self.reference.repository() == from {
            return Ok(false);
        }
        match self
            .client
            .mount_blob(self.reference.repository(), digest, from)
            .await
        {
            Ok(mounted) => Ok(mounted),
            // Some registries refuse mounts outright; an upload still works.
            Err(error) if !error.is_retryable() => {
                tracing::debug!(%digest, %error, "mount refused; uploading");
                Ok(false)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Two uploads of one blob into one repository at once can race in the
    /// registry (distribution 2.8 then refuses the manifest).
    fn writer_key(&self, digest: &Digest) -> Option<String> {
        Some(format!(
            "{}/{}@{digest}",
            self.client.registry(),
            self.reference.repository()
        ))
    }

    async fn write_blob(
        &self,
        source: &dyn Source,
        digest: &Digest,
        size: u64,
        on_progress: Progress,
    ) -> Result<(), EngineError> {
        let mut stream = source.blob(digest, size);
        let repository = self.reference.repository();
        if size <= SMALL_BLOB {
            let mut bytes = Vec::with_capacity(size as usize);
            while let Some(chunk) = stream.next().await {
                bytes.extend_from_slice(&chunk?);
            }
            on_progress(bytes.len() as u64);
            self.client
                .upload_bytes(repository, digest, bytes.into())
                .await?;
            return Ok(());
        }
        let mut done = 0u64;
        let counted = coalesce(stream)
            .inspect(move |chunk| {
                if let Ok(chunk) = chunk {
                    done += chunk.len() as u64;
                    on_progress(done);
                }
            })
            .boxed();
        self.client
            .upload_stream(repository, digest, size, counted)
            .await?;
        Ok(())
    }

    async fn write_manifest(
        &self,
        manifest: &ParsedManifest,
        root: bool,
    ) -> Result<bool, EngineError> {
        let reference = &self.reference;
        let target = if root {
            reference.manifest_reference()
        } else {
            manifest.digest.to_string()
        };
        if let (true, Some(pinned)) = (root, reference.digest()) {
            if pinned != &manifest.digest {
                return Err(EngineError::Invalid {
                    image: reference.to_string(),
                    message: format!("the image is {}, not the requested digest", manifest.digest),
                });
            }
        }
        Ok(self
            .client
            .put_manifest(reference.repository(), &target, manifest)
            .await?)
    }

    async fn finish(&self, _: &ParsedManifest) -> Result<Option<TagChange>, EngineError> {
        Ok(None)
    }

    /// Without the referrers API (the registry did not index the subject),
    /// an OCI referrer is added to the subject's fallback tag index.
    async fn referrer_written(
        &self,
        link: &ReferrerLink,
        root: &ParsedManifest,
        subject_indexed: bool,
    ) -> Result<(), EngineError> {
        if link.tag.is_none() && !subject_indexed {
            self.client
                .add_to_fallback_index(self.reference.repository(), &link.subject, root)
                .await?;
        }
        Ok(())
    }
}
