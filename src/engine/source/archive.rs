//! An image of a checked archive (`copy archive:`), as a [`Source`].

use super::file_stream::file_blob_stream;
use super::{ReferrerCandidate, Source};
use crate::engine::from_archive::ArchiveSource;
use crate::engine::EngineError;
use crate::registry::blobs::BlobStream;
use crate::registry::RegistryError;
use crate::types::{Digest, ParsedManifest};
use futures_util::stream::StreamExt;
use std::sync::Arc;

/// Image `image` (archive order) of a checked archive.
pub struct ArchiveImageSource {
    pub(crate) archive: Arc<ArchiveSource>,
    pub(crate) image: usize,
}

#[async_trait::async_trait]
impl Source for ArchiveImageSource {
    fn describe(&self) -> String {
        self.archive.describe(self.image)
    }

    async fn root(&self) -> Result<ParsedManifest, EngineError> {
        self.archive.root(self.image)
    }

    async fn manifest(
        &self,
        digest: &Digest,
        media_type: &str,
    ) -> Result<ParsedManifest, EngineError> {
        Ok(self
            .archive
            .checked
            .manifest(self.image, digest, media_type)?)
    }

    fn blob(&self, digest: &Digest, size: u64) -> BlobStream {
        match self.archive.checked.blob(digest) {
            // A blob the archive check staged and hashed into its private
            // spool is not hashed twice; a range of the archive file itself
            // (read in place: the file may change after its check) and one
            // whose name only claims its digest are hashed here. The size
            // is always checked.
            Some(staged) => file_blob_stream(
                staged.path().to_owned(),
                staged.offset,
                digest.clone(),
                size,
                !staged.verified || staged.is_range(),
                "archive blob",
            ),
            None => {
                let error = RegistryError::Io {
                    what: format!("blob {digest}"),
                    source: std::io::Error::other(
                        "the archive leaves it out (a delta) and the destination does not have it; copy the archive this one was made against first",
                    ),
                };
                futures_util::stream::once(async move { Err(error) }).boxed()
            }
        }
    }

    async fn referrers(&self, subject: &Digest, _: &mut Vec<String>) -> Vec<ReferrerCandidate> {
        let mut found = Vec::new();
        for (index, image) in self.archive.images().iter().enumerate() {
            let Some(link) = image.link.as_ref().filter(|l| &l.subject == subject) else {
                continue;
            };
            let artifact_type = self
                .archive
                .checked
                .root(index)
                .and_then(|root| link.artifact_type(root));
            found.push(ReferrerCandidate {
                link: link.clone(),
                source: self.archive.source(index),
                artifact_type,
            });
        }
        found
    }
}
