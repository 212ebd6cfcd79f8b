//! A registry repository as a [`Repository`].

use super::{Repository, TagHead, TaggedDigest};
use crate::engine::destination::{Destination, RegistryDestination};
use crate::engine::source::{RegistrySource, SharedSource};
use crate::engine::EngineError;
use crate::registry::RegistryClient;
use crate::types::referrer::cosign_tags_in;
use crate::types::{Digest, Reference};
use std::collections::BTreeSet;
use std::sync::Arc;

/// One repository of one registry.
pub struct RegistryRepository {
    client: Arc<RegistryClient>,
    name: Reference,
}

impl RegistryRepository {
    pub fn new(client: Arc<RegistryClient>, name: Reference) -> RegistryRepository {
        RegistryRepository { client, name }
    }
}

#[async_trait::async_trait]
impl Repository for RegistryRepository {
    fn describe(&self) -> String {
        self.name.name()
    }

    fn deletes_by_digest(&self) -> bool {
        true
    }

    /// A missing repository is an error here (a source that is not there
    /// must fail its job, never look empty).
    async fn listed_tags(&self) -> Result<Vec<String>, EngineError> {
        Ok(self.client.list_tags(self.name.repository()).await?)
    }

    /// A missing repository has no tags (a target a first sync creates).
    async fn tags(&self) -> Result<Vec<TaggedDigest>, EngineError> {
        let listed = match self.client.list_tags(self.name.repository()).await {
            Ok(tags) => tags,
            Err(error) if error.is_not_found() => Vec::new(),
            Err(error) => return Err(error.into()),
        };
        let tags = crate::types::referrer::image_tags(listed);
        let mut out = Vec::new();
        for tag in tags {
            if let Some(digest) = self.digest(&tag).await? {
                out.push(TaggedDigest {
                    tag,
                    digest,
                    first_seen: None,
                });
            }
        }
        Ok(out)
    }

    async fn head(&self, tag: &str) -> Result<Option<TagHead>, EngineError> {
        Ok(self
            .client
            .head_manifest(self.name.repository(), tag)
            .await?
            .map(|head| TagHead {
                digest: head.digest,
                media_type: head.media_type,
                rate_limit_remaining: head.rate_limit_remaining,
            }))
    }

    /// The referrers API's listing where there is one (else a HEAD of the
    /// fallback tag), and a HEAD of each cosign tag the list shows.
    async fn referrers_fingerprint(
        &self,
        subject: &Digest,
        tags: &BTreeSet<String>,
    ) -> Result<Option<String>, EngineError> {
        let repository = self.name.repository();
        let mut parts = vec![
            self.client
                .referrers_fingerprint(repository, subject)
                .await?,
        ];
        for (tag, _) in cosign_tags_in(subject, tags) {
            let head = self.client.head_manifest(repository, &tag).await?;
            let digest = head.and_then(|h| h.digest).map(|d| d.to_string());
            parts.push(format!("{tag}={}", digest.unwrap_or_default()));
        }
        Ok(Some(parts.join(";")))
    }

    fn reference(&self, tag: &str) -> Result<Reference, EngineError> {
        Ok(self.name.with_tag(tag))
    }

    /// `tag` may be a digest (`sha256:…`).
    fn source(&self, tag: &str) -> Result<SharedSource, EngineError> {
        let reference = match tag.parse::<Digest>() {
            Ok(digest) => self.name.with_digest(digest),
            Err(_) => self.name.with_tag(tag),
        };
        Ok(Arc::new(RegistrySource::new(
            self.client.clone(),
            reference,
        )))
    }

    fn destination(&self, tag: &str) -> Result<Box<dyn Destination>, EngineError> {
        Ok(Box::new(RegistryDestination::new(
            self.client.clone(),
            self.name.with_tag(tag),
        )))
    }

    /// The same manifest bytes under another tag.
    async fn put_tag(&self, tag: &str, digest: &Digest) -> Result<(), EngineError> {
        let repository = self.name.repository();
        let manifest = self
            .client
            .get_manifest(repository, &digest.to_string())
            .await?;
        self.client.put_manifest(repository, tag, &manifest).await?;
        Ok(())
    }

    async fn delete(&self, _tag: &str, digest: &Digest) -> Result<(), EngineError> {
        self.client
            .delete_manifest(self.name.repository(), digest)
            .await?;
        Ok(())
    }
}
