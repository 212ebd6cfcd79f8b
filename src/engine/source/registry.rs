//! A registry repository at a tag or digest, as a [`Source`].

use super::{ReferrerCandidate, SharedSource, Source};
use crate::engine::EngineError;
use crate::registry::blobs::BlobStream;
use crate::registry::referrers::Referrer;
use crate::registry::RegistryClient;
use crate::types::referrer::cosign_tags_in;
use crate::types::{Digest, ParsedManifest, Reference, ReferrerLink};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// Images of one registry repository.
pub struct RegistrySource {
    client: Arc<RegistryClient>,
    reference: Reference,
    /// The repository's tags, listed once per source (for cosign tags).
    tags: Mutex<Option<Arc<BTreeSet<String>>>>,
}

impl RegistrySource {
    pub fn new(client: Arc<RegistryClient>, reference: Reference) -> RegistrySource {
        RegistrySource {
            client,
            reference,
            tags: Mutex::new(None),
        }
    }

    /// The same repository at another reference (a referrer's digest or tag).
    fn at(&self, reference: Reference) -> SharedSource {
        Arc::new(RegistrySource::new(self.client.clone(), reference))
    }

    async fn tags(&self, notes: &mut Vec<String>) -> Arc<BTreeSet<String>> {
        if let Some(tags) = self.tags.lock().expect("tag cache").clone() {
            return tags;
        }
        let tags = match self.client.list_tags(self.reference.repository()).await {
            Ok(tags) => tags.into_iter().collect(),
            Err(error) => {
                notes.push(format!(
                    "cannot list {} for cosign signature tags: {error}",
                    self.reference.name()
                ));
                BTreeSet::new()
            }
        };
        let tags = Arc::new(tags);
        *self.tags.lock().expect("tag cache") = Some(tags.clone());
        tags
    }
}

#[async_trait::async_trait]
impl Source for RegistrySource {
    fn describe(&self) -> String {
        self.reference.to_string()
    }

    async fn root(&self) -> Result<ParsedManifest, EngineError> {
        Ok(self
            .client
            .get_manifest(
                self.reference.repository(),
                &self.reference.manifest_reference(),
            )
            .await?)
    }

    async fn manifest(&self, digest: &Digest, _: &str) -> Result<ParsedManifest, EngineError> {
        Ok(self
            .client
            .get_manifest(self.reference.repository(), &digest.to_string())
            .await?)
    }

    fn blob(&self, digest: &Digest, size: u64) -> BlobStream {
        self.client
            .blob_stream(self.reference.repository(), digest, size, true)
    }

    fn resumes(&self) -> bool {
        true
    }

    fn blob_from(&self, digest: &Digest, size: u64, offset: u64) -> BlobStream {
        self.client
            .blob_stream_from(self.reference.repository(), digest, size, offset, false)
    }

    fn registry_repository(&self) -> Option<(&str, &str)> {
        Some((self.client.registry(), self.reference.repository()))
    }

    async fn referrers(&self, subject: &Digest, notes: &mut Vec<String>) -> Vec<ReferrerCandidate> {
        let from = &self.reference;
        let tags = self.tags(notes).await;
        let mut found = Vec::new();
        match self.client.referrers(from.repository(), subject).await {
            Ok(listed) => {
                for Referrer {
                    digest, descriptor, ..
                } in listed
                {
                    found.push(ReferrerCandidate {
                        link: ReferrerLink {
                            subject: subject.clone(),
                            tag: None,
                        },
                        source: self.at(from.with_digest(digest)),
                        artifact_type: descriptor["artifactType"].as_str().map(str::to_owned),
                    });
                }
            }
            Err(error) => notes.push(format!(
                "referrers of {}@{subject} not copied: {error}",
                from.name()
            )),
        }
        for (tag, kind) in cosign_tags_in(subject, &tags) {
            found.push(ReferrerCandidate {
                source: self.at(from.with_tag(&tag)),
                link: ReferrerLink {
                    subject: subject.clone(),
                    tag: Some(tag),
                },
                artifact_type: Some(kind.to_owned()),
            });
        }
        found
    }
}
