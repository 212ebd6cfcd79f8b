//! The one platform chooser: every command that turns an index into one
//! image (pull, history, export, inspect, save's `manifest.json`) or into a
//! subset (copy `--platform`) decides here. Nested indexes are followed to a
//! bounded depth; when nothing matches, the error names every platform the
//! image has — never another architecture silently.

use super::manifest::descriptor_digest;
use super::{Digest, ParsedManifest, Platform};
use bytes::Bytes;
use oci_spec::image::Descriptor;
use std::future::Future;

/// Deepest index nesting followed.
pub const MAX_INDEX_DEPTH: usize = 8;

/// Which platforms of a multi-platform image to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformChoice {
    /// One platform preferred, not insisted on — the host's (pull's
    /// default), or a configured list of one (`[defaults]`, a job's
    /// `platforms`): from an index, its image (or an error naming what it
    /// has); a single-platform image is taken whatever its platform, as
    /// docker pulls it.
    Prefer(Platform),
    /// One platform asked for (`--platform`), copied as a single-platform
    /// manifest: from an index, its image; a single-platform image must be
    /// that platform.
    Single(Platform),
    /// A subset, copied as a rebuilt index: those of the list the image has
    /// (a config's or the job's list; at least one must be there).
    Subset(Vec<Platform>),
    /// Platforms asked for on the command line (`--platform`), copied as a
    /// rebuilt index: every one must be there — a single-platform image
    /// must be the one asked for — else the command fails naming what the
    /// image has.
    Exactly(Vec<Platform>),
    /// The whole index, byte for byte.
    All,
}

impl PlatformChoice {
    /// The one meaning of a platform list, for every command and job: none
    /// is `none` (the command's default), one is that platform's own
    /// manifest and digest (as `docker pull --platform` stores it), several
    /// are a rebuilt index. Asked on the command line, every platform must
    /// be there ([`PlatformChoice::Single`], [`PlatformChoice::Exactly`]);
    /// configured (a job's or `[defaults]` list), those the image has are
    /// taken and a single-platform image is taken as it is
    /// ([`PlatformChoice::Prefer`], [`PlatformChoice::Subset`]).
    pub fn from_list(mut list: Vec<Platform>, asked: bool, none: PlatformChoice) -> PlatformChoice {
        match (list.len(), asked) {
            (0, _) => none,
            (1, true) => PlatformChoice::Single(list.remove(0)),
            (1, false) => PlatformChoice::Prefer(list.remove(0)),
            (_, true) => PlatformChoice::Exactly(list),
            (_, false) => PlatformChoice::Subset(list),
        }
    }
}

fn descriptor_platform(descriptor: &Descriptor) -> Option<(String, String, Option<String>)> {
    let platform = descriptor.platform().as_ref()?;
    Some((
        platform.os().to_string(),
        platform.architecture().to_string(),
        platform.variant().clone(),
    ))
}

/// The platforms an index lists directly (attestation entries left out).
fn platforms_of(index: &ParsedManifest) -> Vec<String> {
    index
        .children()
        .iter()
        .filter_map(|d| descriptor_platform(d))
        .filter(|(os, _, _)| os != "unknown")
        .map(|(os, arch, variant)| match variant {
            Some(v) => format!("{os}/{arch}/{v}"),
            None => format!("{os}/{arch}"),
        })
        .collect()
}

/// A single-platform image's own platform, from its config's `os`,
/// `architecture` and `variant`; `None` when the config names none (an
/// artifact, a signature).
pub fn config_platform(config: &[u8]) -> Option<(String, String, Option<String>)> {
    let config: serde_json::Value = serde_json::from_slice(config).ok()?;
    let text = |key: &str| config.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    Some((text("os")?, text("architecture")?, text("variant")))
}

/// The platforms of `wanted` a single-platform image (whose config says
/// `own`) is not, as `(wanted, available)` for a no-platform error; `None`
/// when it is every one of them (or names no platform at all).
pub fn single_mismatch(
    own: Option<(String, String, Option<String>)>,
    wanted: &[Platform],
) -> Option<(String, String)> {
    let (os, arch, variant) = own?;
    let missing: Vec<String> = wanted
        .iter()
        .filter(|w| !w.matches(&os, &arch, variant.as_deref()))
        .map(ToString::to_string)
        .collect();
    if missing.is_empty() {
        return None;
    }
    let available = match variant {
        Some(v) => format!("only {os}/{arch}/{v}: a single-platform image"),
        None => format!("only {os}/{arch}: a single-platform image"),
    };
    Some((missing.join(", "), available))
}

/// The platforms of `wanted` that no entry of `index` matches.
pub fn missing_from(index: &ParsedManifest, wanted: &[Platform]) -> Vec<String> {
    wanted
        .iter()
        .filter(|w| pick(index, w).is_none())
        .map(ToString::to_string)
        .collect()
}

fn join_platforms(names: &[String]) -> String {
    if names.is_empty() {
        "no platforms".to_owned()
    } else {
        names.join(", ")
    }
}

/// Whether an index names platforms at all (directly, or through an index
/// nested in it). One that does not (an OCI artifact index, a referrers
/// index) is not a multi-platform image: it is copied whole, with no
/// platform to choose.
pub fn lists_platforms(index: &ParsedManifest) -> bool {
    index
        .children()
        .iter()
        .any(|d| d.platform().is_some() || super::media::is_index(d.media_type().as_ref()))
}

/// Human list of the platforms an index offers.
pub fn available(index: &ParsedManifest) -> String {
    join_platforms(&platforms_of(index))
}

/// The one "that platform is not there" error of every door (pull, copy,
/// save, sync, backup, inspect, history, export): it names what the image
/// has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{image} has no image for platform {wanted} (it has: {available}); choose one of those with --platform")]
pub struct NoPlatform {
    pub image: String,
    pub wanted: String,
    pub available: String,
}

impl NoPlatform {
    /// From a (wanted, available) pair such as [`single_mismatch`] gives.
    pub fn of(image: &str, (wanted, available): (String, String)) -> NoPlatform {
        NoPlatform {
            image: image.to_owned(),
            wanted,
            available,
        }
    }
}

/// Why no single image could be chosen from an index.
#[derive(Debug, thiserror::Error)]
pub enum ChoiceError<E> {
    #[error(transparent)]
    NoPlatform(NoPlatform),
    #[error("{image}: index nesting deeper than {MAX_INDEX_DEPTH}")]
    TooDeep { image: String },
    #[error(transparent)]
    Fetch(E),
}

/// Choose the image for `wanted` from `root`, following nested indexes
/// (an index inside an index, as `--all-platforms` keeps them). `fetch`
/// reads a child manifest by digest and media type. A manifest that is
/// already an image is returned as it is.
pub async fn choose_image<E, F, Fut>(
    root: ParsedManifest,
    wanted: &Platform,
    image: &str,
    mut fetch: F,
) -> Result<ParsedManifest, ChoiceError<E>>
where
    F: FnMut(Digest, String) -> Fut,
    Fut: Future<Output = Result<ParsedManifest, E>>,
{
    if !root.is_index() {
        return Ok(root);
    }
    let mut seen = Vec::new();
    // Breadth first: a direct match wins over one inside a nested index.
    let mut level = vec![root];
    for _ in 0..MAX_INDEX_DEPTH {
        let mut nested = Vec::new();
        for index in &level {
            seen.extend(platforms_of(index));
            if let Some(child) = pick(index, wanted) {
                let Ok(digest) = descriptor_digest(child) else {
                    continue;
                };
                let manifest = fetch(digest, child.media_type().to_string())
                    .await
                    .map_err(ChoiceError::Fetch)?;
                if !manifest.is_index() {
                    return Ok(manifest);
                }
                nested.push(manifest);
                continue;
            }
            for child in index.children() {
                if !super::media::is_index(child.media_type().as_ref()) {
                    continue;
                }
                let Ok(digest) = descriptor_digest(child) else {
                    continue;
                };
                nested.push(
                    fetch(digest, child.media_type().to_string())
                        .await
                        .map_err(ChoiceError::Fetch)?,
                );
            }
        }
        if nested.is_empty() {
            seen.sort();
            seen.dedup();
            return Err(ChoiceError::NoPlatform(NoPlatform {
                image: image.to_owned(),
                wanted: wanted.to_string(),
                available: join_platforms(&seen),
            }));
        }
        level = nested;
    }
    Err(ChoiceError::TooDeep {
        image: image.to_owned(),
    })
}

/// [`choose_image`] for callers whose `fetch` never waits (the store's
/// files): runs the walk to completion on the spot.
pub fn choose_image_now<E>(
    root: ParsedManifest,
    wanted: &Platform,
    image: &str,
    mut fetch: impl FnMut(&Digest, &str) -> Result<ParsedManifest, E>,
) -> Result<ParsedManifest, ChoiceError<E>> {
    use futures_util::FutureExt as _;
    choose_image(root, wanted, image, |digest, media_type| {
        std::future::ready(fetch(&digest, &media_type))
    })
    .now_or_never()
    .unwrap_or_else(|| unreachable!("a ready future completes at once"))
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

/// Which referrers (signatures, attestations, SBOMs) travel with an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferrerFilter {
    /// None (`--no-referrers`, `referrers = false`).
    None,
    /// Every one (the default).
    All,
    /// Only these artifact types (`referrers = { artifact_types = [...] }`).
    Types(Vec<String>),
}

impl ReferrerFilter {
    /// Whether referrers are copied at all.
    pub fn enabled(&self) -> bool {
        !matches!(self, ReferrerFilter::None)
    }

    /// Whether a referrer of `artifact_type` (when known) is copied.
    pub fn admits(&self, artifact_type: Option<&str>) -> bool {
        match self {
            ReferrerFilter::None => false,
            ReferrerFilter::All => true,
            ReferrerFilter::Types(types) => {
                artifact_type.is_some_and(|t| types.iter().any(|w| w == t))
            }
        }
    }
}
