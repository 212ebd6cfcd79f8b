//! Docker-style version tags: `v1.2.3`, `1.2`, `1.2.3-alpine` (a variant),
//! `2.2.0-rc1` (a pre-release). A suffix is a pre-release only when it
//! starts with a pre-release word; anything else is a variant, which gets
//! its own ordering and aliases (`2.1-alpine`).

use std::cmp::Ordering;

/// Words that mark a suffix as a pre-release rather than a variant.
const PRERELEASE_WORDS: [&str; 8] = [
    "alpha", "beta", "rc", "pre", "preview", "dev", "snapshot", "a",
];

/// A parsed version tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    /// How many numbers the tag has (1: `2`, 2: `2.1`, 3: `2.1.0`).
    pub precision: u8,
    pub prerelease: Option<String>,
    pub variant: Option<String>,
}

fn is_prerelease(suffix: &str) -> bool {
    let word: String = suffix
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_lowercase();
    let rest = &suffix[word.len()..];
    PRERELEASE_WORDS.contains(&word.as_str())
        && rest
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '-')
}

impl TagVersion {
    /// Parse a tag; `None` when it is not a version (`latest`, `main`).
    pub fn parse(tag: &str) -> Option<TagVersion> {
        let text = tag.strip_prefix('v').unwrap_or(tag);
        let (numbers, suffix) = match text.find(['-', '+']) {
            Some(i) => (&text[..i], Some(&text[i + 1..])),
            None => (text, None),
        };
        let parts: Vec<&str> = numbers.split('.').collect();
        if parts.is_empty()
            || parts.len() > 3
            || parts
                .iter()
                .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 18)
        {
            return None;
        }
        let number = |i: usize| parts.get(i).map_or(Some(0), |p| p.parse().ok());
        let (prerelease, variant) = match suffix {
            None => (None, None),
            Some("") => return None,
            Some(s) if is_prerelease(s) => (Some(s.to_owned()), None),
            Some(s) => match s.split_once('-') {
                // `1.2.3-rc1-alpine`: a pre-release of a variant.
                Some((first, rest)) if is_prerelease(first) => {
                    (Some(first.to_owned()), Some(rest.to_owned()))
                }
                _ => (None, Some(s.to_owned())),
            },
        };
        Some(TagVersion {
            major: number(0)?,
            minor: number(1)?,
            patch: number(2)?,
            precision: parts.len() as u8,
            prerelease,
            variant,
        })
    }

    /// As a semver version (for range matching); missing numbers are 0.
    pub fn to_semver(&self) -> semver::Version {
        let mut version = semver::Version::new(self.major, self.minor, self.patch);
        if let Some(pre) = &self.prerelease {
            let cleaned: String = pre
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' {
                        c
                    } else {
                        '.'
                    }
                })
                .collect();
            version.pre = semver::Prerelease::new(cleaned.trim_matches('.'))
                .unwrap_or(semver::Prerelease::EMPTY);
        }
        version
    }

    /// Order by number, a release above its pre-releases; then by precision
    /// (`2.1.0` above `2.1`, so a full version wins a tie).
    pub fn compare(&self, other: &TagVersion) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (&self.prerelease, &other.prerelease) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => self
                    .to_semver()
                    .pre
                    .cmp(&other.to_semver().pre)
                    .then(a.cmp(b)),
            })
            .then(self.precision.cmp(&other.precision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_style_tags() {
        let v = TagVersion::parse("v1.2.3").unwrap();
        assert_eq!((v.major, v.minor, v.patch, v.precision), (1, 2, 3, 3));
        let alpine = TagVersion::parse("2.1.10-alpine").unwrap();
        assert_eq!(alpine.variant.as_deref(), Some("alpine"));
        assert_eq!(alpine.prerelease, None);
        let rc = TagVersion::parse("2.2.0-rc1").unwrap();
        assert_eq!(rc.prerelease.as_deref(), Some("rc1"));
        assert_eq!(TagVersion::parse("1.2").unwrap().precision, 2);
        for bad in ["latest", "main", "1.2.3.4", "1..2", "v", "1.2-", "sha-abc"] {
            assert!(TagVersion::parse(bad).is_none(), "{bad}");
        }
        assert!(TagVersion::parse("2.1.10")
            .unwrap()
            .compare(&TagVersion::parse("2.1.9").unwrap())
            .is_gt());
        assert!(TagVersion::parse("2.2.0").unwrap().compare(&rc).is_gt());
    }
}
