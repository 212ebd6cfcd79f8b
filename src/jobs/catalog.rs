//! The one expansion of a wildcard source (`HOST/prefix/*`, `HOST/prefix/**`)
//! through the registry's `_catalog`, for sync and backup alike: every
//! listed repository the wildcard takes, with its path below the prefix;
//! a listed name that is not a valid repository is reported as skipped.

use super::{ImageResult, JobContext, JobReport, Stop};
use crate::config::jobs::SyncSource;
use crate::types::Reference;

/// The repositories under `source` (a [`SyncSource::Under`]) that `keep`
/// accepts (given the catalog path), each with its path below the prefix.
pub(super) async fn repositories_under(
    context: &JobContext,
    source: &SyncSource,
    keep: impl Fn(&str) -> bool,
    report: &mut JobReport,
) -> Result<Vec<(Reference, String)>, Stop> {
    let SyncSource::Under { registry, .. } = source else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for path in context.endpoints.catalog(registry).await? {
        let Some(relative) = source.relative(&path) else {
            continue;
        };
        if !keep(&path) {
            continue;
        }
        match Reference::parse_repository_or_ref(&format!("{registry}/{path}")) {
            Ok(reference) if reference.tag().is_none() => {
                found.push((reference, relative.to_owned()))
            }
            _ => report.images.push(ImageResult::skipped(
                format!("{registry}/{path}"),
                "the catalog lists a name that is not a valid repository",
            )),
        }
    }
    Ok(found)
}
