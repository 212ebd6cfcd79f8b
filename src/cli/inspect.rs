//! `ferry inspect` and `ferry history`: what one image in the store is —
//! its manifest, config, names, referrers — and how its layers were made.

use super::output::{human_size, json, table};
use super::Context;
use crate::types::manifest::descriptor_digest;
use crate::types::time::{format_rfc3339, human_age, now_unix};
use crate::types::Platform;
use std::process::ExitCode;

/// `ferry inspect`: manifest, config and ferry's metadata as a JSON array.
pub fn inspect(
    context: &Context,
    images: &[String],
    platform: Option<&Platform>,
) -> anyhow::Result<ExitCode> {
    let store = context.store_to_read()?;
    let summaries = store.summaries()?;
    // As docker: every name is looked up on its own; those found are
    // printed, each one not found is an error line, and the exit is 1.
    let mut out = Vec::new();
    let mut failed = 0;
    for text in images {
        match inspect_one(&store, &summaries, text, platform) {
            Ok(shown) => out.push(shown),
            Err(error) => {
                failed += 1;
                super::error_line(&format!("{error:#}"));
            }
        }
    }
    json(&out)?;
    Ok(match failed {
        0 => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    })
}

/// What `inspect` shows of one image.
fn inspect_one(
    store: &crate::store::Store,
    summaries: &[crate::store::ImageSummary],
    text: &str,
    platform: Option<&Platform>,
) -> anyhow::Result<serde_json::Value> {
    let image = store.resolve(text)?;
    let id = store.image_id(&image);
    let manifest: serde_json::Value = serde_json::from_slice(&image.manifest.bytes)?;
    // An index shows the config of the chosen platform's image; an
    // index that names no platforms (an artifact index) has none.
    let platformless =
        image.manifest.is_index() && !crate::types::choice::lists_platforms(&image.manifest);
    let config = match platformless {
        true => serde_json::Value::Null,
        false => match store.resolve_platform(text, platform)?.1.image() {
            Some(m) => store.read_config(&descriptor_digest(m.config())?)?,
            None => serde_json::Value::Null,
        },
    };
    let repo_tags: Vec<String> = summaries
        .iter()
        .filter(|s| s.digest == image.entry.digest)
        .filter_map(|s| {
            s.name
                .as_ref()
                .filter(|n| n.tag().is_some())
                .map(|n| n.to_string())
        })
        .collect();
    let repo_digests: Vec<String> = summaries
        .iter()
        .filter(|s| s.digest == image.entry.digest)
        .filter_map(|s| {
            s.name
                .as_ref()
                .map(|n| format!("{}@{}", n.name(), image.entry.digest))
        })
        .collect();
    let summary = summaries.iter().find(|s| s.digest == image.entry.digest);
    let referrers = referrers_shown(store, &image)?;
    Ok(serde_json::json!({
        "Id": id,
        "Digest": image.entry.digest,
        "MediaType": image.entry.media_type,
        "RepoTags": repo_tags,
        "RepoDigests": repo_digests,
        "Size": summary.map(|s| s.size),
        "Platforms": summary.map(|s| s.platforms.clone()),
        "FirstSeen": summary.and_then(|s| s.times).map(|t| format_rfc3339(t.first_seen)),
        "LastPulled": summary.and_then(|s| s.times).map(|t| format_rfc3339(t.last_pulled)),
        "Kind": summary.map(|s| s.kind),
        "Referrers": referrers,
        "Manifest": manifest,
        "Config": config,
    }))
}

/// What `inspect` shows of an image's referrers (and theirs): artifact
/// type, digest, size, annotations, and what each refers to.
fn referrers_shown(
    store: &crate::store::Store,
    image: &crate::store::LocalImage,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let all = crate::store::index::read_index(store)?;
    let mut live = store
        .reachable(&image.entry.digest, &image.entry.media_type)?
        .into_keys()
        .collect();
    let mut shown: Vec<(crate::types::Digest, Option<String>)> = Vec::new();
    let mut out = Vec::new();
    for index in store.referrers_reached(&all, &mut live)? {
        let entry = &all[index];
        // Each referrer once (a manifest under two cosign tags twice).
        let link = entry.link();
        let tag = link.as_ref().and_then(|l| l.tag.clone());
        if shown.contains(&(entry.digest.clone(), tag.clone())) {
            continue;
        }
        shown.push((entry.digest.clone(), tag.clone()));
        let descriptor = store.referrer_descriptor(entry)?;
        out.push(serde_json::json!({
            "ArtifactType": entry.artifact_type,
            "Digest": entry.digest,
            "MediaType": entry.media_type,
            "Size": store.reachable(&entry.digest, &entry.media_type)?.values().sum::<u64>(),
            "Subject": link.as_ref().map(|l| &l.subject),
            "Tag": tag,
            "Annotations": descriptor.get("annotations"),
        }));
    }
    Ok(out)
}

/// `ferry history`: the config's history with layer sizes, newest first.
pub fn history(
    context: &Context,
    text: &str,
    no_trunc: bool,
    platform: Option<&Platform>,
) -> anyhow::Result<ExitCode> {
    let store = context.store_to_read()?;
    let (_, manifest) = store.resolve_container(text, platform)?;
    let image_manifest = manifest
        .image()
        .ok_or_else(|| anyhow::anyhow!("{text}: the chosen manifest is not an image"))?;
    let config_digest = descriptor_digest(image_manifest.config())?;
    let config = store.read_config(&config_digest)?;
    let mut layers = image_manifest.layers().iter().map(|l| l.size());
    let now = now_unix();
    let mut rows = Vec::new();
    let entries = config
        .get("history")
        .and_then(|h| h.as_array())
        .cloned()
        .unwrap_or_default();
    for entry in &entries {
        let empty = entry
            .get("empty_layer")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let size = if empty { 0 } else { layers.next().unwrap_or(0) };
        // `created` as the config gives it (JSON), and its age (table).
        let created = entry.get("created").and_then(|v| v.as_str());
        let created_since = created
            .and_then(crate::types::time::parse_rfc3339)
            .map_or_else(|| "N/A".to_owned(), |t| human_age(t, now));
        let mut created_by = entry
            .get("created_by")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned();
        // JSON is for machines: never truncated.
        if !no_trunc && !context.json && created_by.chars().count() > 45 {
            created_by = created_by.chars().take(44).collect::<String>() + "…";
        }
        let comment = entry
            .get("comment")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned();
        rows.push(serde_json::json!({"created": created, "created_since": created_since, "created_by": created_by, "size": size, "comment": comment}));
    }
    rows.reverse();
    if context.json {
        json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    let id = if no_trunc {
        config_digest.to_string()
    } else {
        config_digest.short().to_owned()
    };
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            vec![
                if i == 0 {
                    id.clone()
                } else {
                    "<missing>".to_owned()
                },
                row["created_since"].as_str().unwrap_or("").to_owned(),
                row["created_by"].as_str().unwrap_or("").to_owned(),
                human_size(row["size"].as_u64().unwrap_or(0)),
                row["comment"].as_str().unwrap_or("").to_owned(),
            ]
        })
        .collect();
    table(
        &["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
        &table_rows,
    )?;
    Ok(ExitCode::SUCCESS)
}
