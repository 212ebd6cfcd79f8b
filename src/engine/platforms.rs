//! Choosing platforms from an index: the host's one (pull's default), an
//! explicit subset (which rebuilds a valid index with a new digest), or all
//! (the index and its digest kept as they are).

use crate::types::manifest::descriptor_digest;
use crate::types::{Digest, ParsedManifest, Platform};
use bytes::Bytes;
use oci_spec::image::Descriptor;

/// Which platforms of a multi-platform image to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformChoice {
    /// One platform, copied as a single-platform manifest (pull's default: the host).
    Single(Platform),
    /// A subset, copied as a rebuilt index.
    Subset(Vec<Platform>),
    /// The whole index, byte for byte.
    All,
}

fn descriptor_platform(descriptor: &Descriptor) -> Option<(String, String, Option<String>)> {
    let platform = descriptor.platform().as_ref()?;
    Some((
        platform.os().to_string(),
        platform.architecture().to_string(),
        platform.variant().clone(),
    ))
}

/// Human list of the platforms an index offers.
pub fn available(index: &ParsedManifest) -> String {
    let names: Vec<String> = index
        .children()
        .iter()
        .filter_map(|d| descriptor_platform(d))
        .filter(|(os, _, _)| os != "unknown")
        .map(|(os, arch, variant)| match variant {
            Some(v) => format!("{os}/{arch}/{v}"),
            None => format!("{os}/{arch}"),
        })
        .collect();
    if names.is_empty() {
        "no platforms".to_owned()
    } else {
        names.join(", ")
    }
}

/// The child of `index` that best matches `wanted`.
pub fn pick<'a>(index: &'a ParsedManifest, wanted: &Platform) -> Option<&'a Descriptor> {
    index.children().into_iter().find(|d| {
        descriptor_platform(d)
            .is_some_and(|(os, arch, variant)| wanted.matches(&os, &arch, variant.as_deref()))
    })
}

/// Rebuild `index` keeping the children for `wanted` (and attestations that
/// refer to a kept child). Returns the new exact bytes.
pub fn subset(index: &ParsedManifest, wanted: &[Platform]) -> Option<Bytes> {
    let mut document: serde_json::Value = serde_json::from_slice(&index.bytes).ok()?;
    let kept: Vec<Digest> = index
        .children()
        .into_iter()
        .filter(|d| {
            descriptor_platform(d).is_some_and(|(os, arch, variant)| {
                wanted
                    .iter()
                    .any(|w| w.matches(&os, &arch, variant.as_deref()))
            })
        })
        .filter_map(|d| descriptor_digest(d).ok())
        .collect();
    if kept.is_empty() {
        return None;
    }
    let manifests = document.get_mut("manifests")?.as_array_mut()?;
    manifests.retain(|entry| {
        let digest = entry
            .get("digest")
            .and_then(|d| d.as_str())
            .and_then(|d| d.parse::<Digest>().ok());
        let refers_to = entry
            .pointer("/annotations/vnd.docker.reference.digest")
            .and_then(|d| d.as_str())
            .and_then(|d| d.parse::<Digest>().ok());
        digest.is_some_and(|d| kept.contains(&d)) || refers_to.is_some_and(|d| kept.contains(&d))
    });
    serde_json::to_vec(&document).ok().map(Bytes::from)
}
