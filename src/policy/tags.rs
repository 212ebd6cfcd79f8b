//! Tag selection for jobs: `include` / `exclude` regexes (anchored as
//! written), a `semver` range on version tags, and `keep_latest = N` by
//! version order. When `semver` or `keep_latest` is set, only version tags
//! can be selected.

use super::version::TagVersion;

/// A compiled tag filter.
#[derive(Debug, Clone, Default)]
pub struct TagFilter {
    pub include: Vec<regex::Regex>,
    pub exclude: Vec<regex::Regex>,
    pub semver: Option<semver::VersionReq>,
    pub keep_latest: Option<usize>,
}

impl TagFilter {
    /// Whether one tag passes the regexes and the range.
    pub fn matches(&self, tag: &str) -> bool {
        if !self.include.is_empty() && !self.include.iter().any(|r| r.is_match(tag)) {
            return false;
        }
        if self.exclude.iter().any(|r| r.is_match(tag)) {
            return false;
        }
        let version = TagVersion::parse(tag);
        if self.semver.is_some() || self.keep_latest.is_some() {
            let Some(version) = &version else {
                return false;
            };
            if let Some(range) = &self.semver {
                if !range.matches(&version.to_semver()) {
                    return false;
                }
            }
        }
        true
    }

    /// The selected tags, highest version first (then other tags by name).
    pub fn select<'a>(&self, tags: &'a [String]) -> Vec<&'a str> {
        let mut selected: Vec<&str> = tags
            .iter()
            .map(String::as_str)
            .filter(|t| self.matches(t))
            .collect();
        selected.sort_by(|a, b| match (TagVersion::parse(a), TagVersion::parse(b)) {
            (Some(x), Some(y)) => y.compare(&x).then_with(|| a.cmp(b)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.cmp(b),
        });
        if let Some(keep) = self.keep_latest {
            selected.truncate(keep);
        }
        selected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn selects_with_regex_semver_and_keep_latest() {
        let all = tags(&[
            "1.24.0",
            "1.25.1",
            "1.25.3",
            "1.26.0-rc1",
            "latest",
            "1.26.0",
            "2.0.0",
            "1.25.3-alpine",
        ]);
        let filter = TagFilter {
            include: vec![regex::Regex::new("^1\\.").unwrap()],
            exclude: vec![regex::Regex::new("-rc").unwrap()],
            semver: Some(semver::VersionReq::parse(">=1.25").unwrap()),
            keep_latest: Some(3),
        };
        assert_eq!(
            filter.select(&all),
            vec!["1.26.0", "1.25.3", "1.25.3-alpine"]
        );
        let mixed = TagFilter {
            keep_latest: Some(2),
            ..TagFilter::default()
        };
        assert_eq!(
            mixed.select(&tags(&["main", "1.0", "1.10", "1.9", "latest"])),
            vec!["1.10", "1.9"]
        );
        let plain = TagFilter::default();
        assert_eq!(
            plain.select(&tags(&["b", "a", "1.0"])),
            vec!["1.0", "a", "b"]
        );
    }
}
