//! Semver aliases: for every release `X.Y.Z`, `X.Y` and `X` (and `latest`)
//! point at the highest `X.Y.*` / `X.*` / overall release. Pre-releases
//! never move an alias unless asked; variants (`-alpine`) get their own
//! aliases (`2.1-alpine`); a `v` prefix carries over (`v2.1`).

use super::version::TagVersion;
use std::collections::BTreeMap;

/// Which aliases a retag job maintains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AliasKind {
    Minor,
    Major,
    Latest,
}

impl std::str::FromStr for AliasKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "minor" => Ok(AliasKind::Minor),
            "major" => Ok(AliasKind::Major),
            "latest" => Ok(AliasKind::Latest),
            other => Err(format!(
                "unknown alias kind {other:?}: use \"minor\", \"major\" or \"latest\""
            )),
        }
    }
}

/// alias → the tag it should point at, for the given tags.
pub fn compute_aliases(
    tags: &[String],
    kinds: &[AliasKind],
    prerelease: bool,
) -> BTreeMap<String, String> {
    let mut best: BTreeMap<String, (TagVersion, String)> = BTreeMap::new();
    let mut offer = |alias: String, version: &TagVersion, tag: &str| {
        let better = best
            .get(&alias)
            .is_none_or(|(current, _)| version.compare(current).is_gt());
        if better {
            best.insert(alias, (version.clone(), tag.to_owned()));
        }
    };
    for tag in tags {
        let Some(version) = TagVersion::parse(tag) else {
            continue;
        };
        if version.precision != 3 || (version.prerelease.is_some() && !prerelease) {
            continue;
        }
        let prefix = if tag.starts_with('v') { "v" } else { "" };
        let suffix = version
            .variant
            .as_deref()
            .map_or(String::new(), |v| format!("-{v}"));
        for kind in kinds {
            let alias = match kind {
                AliasKind::Minor => format!("{prefix}{}.{}{suffix}", version.major, version.minor),
                AliasKind::Major => format!("{prefix}{}{suffix}", version.major),
                AliasKind::Latest if version.variant.is_none() => "latest".to_owned(),
                AliasKind::Latest => continue,
            };
            offer(alias, &version, tag);
        }
    }
    best.into_iter()
        .map(|(alias, (_, tag))| (alias, tag))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_table_from_the_issue() {
        let tags: Vec<String> = [
            "1.9.0",
            "2.0.0",
            "2.1.0",
            "2.1.10",
            "2.2.0-rc1",
            "2.1.10-alpine",
            "latest",
            "2.1",
        ]
        .iter()
        .map(|t| t.to_string())
        .collect();
        let aliases = compute_aliases(
            &tags,
            &[AliasKind::Minor, AliasKind::Major, AliasKind::Latest],
            false,
        );
        let expected: BTreeMap<String, String> = [
            ("1", "1.9.0"),
            ("1.9", "1.9.0"),
            ("2", "2.1.10"),
            ("2.0", "2.0.0"),
            ("2.1", "2.1.10"),
            ("latest", "2.1.10"),
            ("2-alpine", "2.1.10-alpine"),
            ("2.1-alpine", "2.1.10-alpine"),
        ]
        .iter()
        .map(|(a, t)| (a.to_string(), t.to_string()))
        .collect();
        assert_eq!(aliases, expected);
        let with_pre = compute_aliases(&tags, &[AliasKind::Minor], true);
        assert_eq!(with_pre["2.2"], "2.2.0-rc1");
        let v = compute_aliases(&["v3.0.1".to_owned()], &[AliasKind::Major], false);
        assert_eq!(v["v3"], "v3.0.1");
    }
}
