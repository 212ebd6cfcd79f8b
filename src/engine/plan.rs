//! Step one of every transfer: walk the image graph once from the source
//! into a plan any destination can execute — the platform choice applied
//! (one chooser, nested indexes followed), child manifests fetched once and
//! ordered children before parents, and every distinct blob listed once.

use super::source::Source;
use super::EngineError;
use crate::types::choice::{self, ChoiceError, PlatformChoice, MAX_INDEX_DEPTH};
use crate::types::manifest::{descriptor_digest, is_foreign_layer};
use crate::types::{Digest, ParsedManifest, Platform};
use std::collections::BTreeMap;

/// One image, ready to be written anywhere.
#[derive(Debug, Clone)]
pub struct ImagePlan {
    /// The source's name for the image, for messages.
    pub image: String,
    /// The manifest written last (under the tag).
    pub root: ParsedManifest,
    /// Child manifests, children before parents, each once.
    pub manifests: Vec<ParsedManifest>,
    /// Every distinct config and layer blob with its size (foreign layers left out).
    pub blobs: BTreeMap<Digest, u64>,
}

fn invalid(image: &str, message: impl Into<String>) -> EngineError {
    EngineError::Invalid {
        image: image.to_owned(),
        message: message.into(),
    }
}

/// Walk `source` into a plan.
pub async fn plan_image(
    source: &dyn Source,
    choice: &PlatformChoice,
) -> Result<ImagePlan, EngineError> {
    let image = source.describe();
    let fetched = source.root().await?;
    let root = choose_root(source, fetched, choice, &image).await?;
    let mut manifests: Vec<ParsedManifest> = Vec::new();
    collect_children(source, &root, 0, &mut manifests, &image).await?;
    let mut blobs: BTreeMap<Digest, u64> = BTreeMap::new();
    for manifest in manifests.iter().chain(std::iter::once(&root)) {
        if manifest.is_index() {
            continue;
        }
        for descriptor in manifest.children() {
            if is_foreign_layer(descriptor) {
                continue; // never fetched: registries do not serve them (CVE-2020-15157)
            }
            let digest =
                descriptor_digest(descriptor).map_err(|e| invalid(&image, e.to_string()))?;
            blobs.insert(digest, descriptor.size());
        }
    }
    Ok(ImagePlan {
        image,
        root,
        manifests,
        blobs,
    })
}

/// Apply the platform choice to the fetched root.
async fn choose_root(
    source: &dyn Source,
    root: ParsedManifest,
    choice: &PlatformChoice,
    image: &str,
) -> Result<ParsedManifest, EngineError> {
    let no_platform =
        |mismatch| EngineError::from(crate::types::choice::NoPlatform::of(image, mismatch));
    // Platforms asked for: a single-platform image must be one of them.
    let asked = match choice {
        PlatformChoice::Single(one) => Some(std::slice::from_ref(one)),
        PlatformChoice::Exactly(list) => Some(list.as_slice()),
        _ => None,
    };
    if let (Some(asked), Some(manifest)) = (asked, root.image()) {
        let config = manifest.config();
        // A config is small; one that is not is no image config to read.
        if config.size() <= crate::types::manifest::MAX_CONFIG_BYTES {
            let digest = descriptor_digest(config).map_err(|e| invalid(image, e.to_string()))?;
            let mut bytes = Vec::new();
            let mut stream = source.blob(&digest, config.size());
            while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
                bytes.extend_from_slice(&chunk?);
            }
            if let Some(mismatch) = choice::single_mismatch(choice::config_platform(&bytes), asked)
            {
                return Err(no_platform(mismatch));
            }
        }
        return Ok(root);
    }
    if !root.is_index() || !choice::lists_platforms(&root) {
        return Ok(root);
    }
    match choice {
        PlatformChoice::All => Ok(root),
        PlatformChoice::Prefer(wanted) => choose_single(source, root, wanted, image).await,
        PlatformChoice::Single(wanted) => choose_single(source, root, wanted, image).await,
        PlatformChoice::Subset(wanted) => rebuilt_subset(&root, wanted, image),
        PlatformChoice::Exactly(wanted) => {
            let missing = choice::missing_from(&root, wanted);
            if !missing.is_empty() {
                return Err(no_platform((missing.join(", "), choice::available(&root))));
            }
            rebuilt_subset(&root, wanted, image)
        }
    }
}

/// The image for `wanted` from an index, through the one chooser (nested
/// indexes followed; an error naming what the index has).
async fn choose_single(
    source: &dyn Source,
    root: ParsedManifest,
    wanted: &Platform,
    image: &str,
) -> Result<ParsedManifest, EngineError> {
    choice::choose_image(root, wanted, image, |digest, media_type| async move {
        source.manifest(&digest, &media_type).await
    })
    .await
    .map_err(|error| match error {
        ChoiceError::Fetch(error) => error,
        ChoiceError::NoPlatform(missing) => EngineError::NoPlatform(missing),
        other => invalid(image, other.to_string()),
    })
}

/// `root` rebuilt with the entries for `wanted` (at least one must be there).
fn rebuilt_subset(
    root: &ParsedManifest,
    wanted: &[Platform],
    image: &str,
) -> Result<ParsedManifest, EngineError> {
    let wanted_text = wanted
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let bytes = choice::subset(root, wanted).ok_or_else(|| {
        EngineError::from(choice::NoPlatform {
            image: image.to_owned(),
            wanted: wanted_text,
            available: choice::available(root),
        })
    })?;
    Ok(ParsedManifest::parse(bytes, Some(&root.media_type), image)
        .map_err(crate::registry::RegistryError::from)?)
}

/// Fetch the manifests an index refers to, depth first, children before parents.
async fn collect_children(
    source: &dyn Source,
    manifest: &ParsedManifest,
    depth: usize,
    out: &mut Vec<ParsedManifest>,
    image: &str,
) -> Result<(), EngineError> {
    if !manifest.is_index() {
        return Ok(());
    }
    if depth >= MAX_INDEX_DEPTH {
        return Err(invalid(
            image,
            format!("index nesting deeper than {MAX_INDEX_DEPTH}"),
        ));
    }
    for child in manifest.children() {
        let digest = descriptor_digest(child).map_err(|e| invalid(image, e.to_string()))?;
        if out.iter().any(|m| m.digest == digest) {
            continue; // an index listing one child many times costs one fetch
        }
        let fetched = source
            .manifest(&digest, child.media_type().as_ref())
            .await?;
        Box::pin(collect_children(source, &fetched, depth + 1, out, image)).await?;
        out.push(fetched);
    }
    Ok(())
}
