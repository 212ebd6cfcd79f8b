//! Settings for S3-compatible object storage (`[object_store]` in the
//! config), before the standard `AWS_*` variables and profiles fill in what
//! the config leaves out.

use super::Secret;

/// The smallest part S3 accepts (except the last one).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// The default first part size of a multipart upload.
pub const DEFAULT_PART_SIZE: u64 = 16 * 1024 * 1024;

/// `[object_store]`: where buckets are and how to sign requests.
#[derive(Debug, Clone, Default)]
pub struct ObjectSettings {
    /// `http(s)://host:port`; none means AWS (from the region).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Plain HTTP must be asked for, as for registries.
    pub allow_http: Option<bool>,
    /// Path-style URLs (`endpoint/bucket/key`); default true.
    pub path_style: Option<bool>,
    /// A profile of `~/.aws/credentials` and `~/.aws/config`.
    pub profile: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    /// A config secret that could not be read: raised when a bucket is used.
    pub secret_error: Option<String>,
    /// First part size of multipart uploads (grows for large archives).
    pub part_size: Option<u64>,
    /// Use the EC2 instance profile (IMDSv2) when no key is set.
    pub instance_credentials: bool,
}

/// `s3://BUCKET/KEY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectUrl {
    pub bucket: String,
    /// The key (or prefix), without a leading `/`; may be empty for a prefix.
    pub key: String,
}

impl ObjectUrl {
    /// Whether `text` names an object (`s3://…`).
    pub fn is_object(text: &str) -> bool {
        text.starts_with("s3://")
    }

    /// Parse `s3://BUCKET/KEY`.
    pub fn parse(text: &str) -> Result<ObjectUrl, String> {
        let rest = text
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{text}: not an s3://BUCKET/KEY address"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !bucket.starts_with(['-', '.'])
            && !bucket.ends_with(['-', '.']);
        if !valid_bucket {
            return Err(format!(
                "{text}: {bucket:?} is not a bucket name (3-63 lower-case letters, digits, '-' and '.')"
            ));
        }
        // Characters object stores escape differently are refused, so a key
        // always means the same object to ferry, to listings and to people.
        if key.split('/').any(|part| part == ".." || part == ".")
            || key.contains("//")
            || key
                .chars()
                .any(|c| c.is_control() || "\\{}^%`[]\"<>~#|".contains(c))
        {
            return Err(format!(
                "{text}: the key may not hold '.' or '..' parts, empty parts, control characters or any of \\ {{ }} ^ % ` [ ] \" < > ~ # |"
            ));
        }
        Ok(ObjectUrl {
            bucket: bucket.to_owned(),
            key: key.trim_end_matches('/').to_owned(),
        })
    }

    /// The same bucket, another key.
    pub fn with_key(&self, key: impl Into<String>) -> ObjectUrl {
        ObjectUrl {
            bucket: self.bucket.clone(),
            key: key.into(),
        }
    }

    /// `key` joined under this prefix.
    pub fn join(&self, name: &str) -> ObjectUrl {
        match self.key.is_empty() {
            true => self.with_key(name),
            false => self.with_key(format!("{}/{name}", self.key)),
        }
    }

    /// The "directory" part of the key (up to the last `/`, with it).
    pub fn parent_prefix(&self) -> &str {
        match self.key.rfind('/') {
            Some(at) => &self.key[..=at],
            None => "",
        }
    }
}

impl std::fmt::Display for ObjectUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::ObjectUrl;

    #[test]
    fn addresses_parse_and_bad_ones_say_why() {
        let url = ObjectUrl::parse("s3://backups/ferry/app-1.tar").unwrap();
        assert_eq!(
            (url.bucket.as_str(), url.key.as_str()),
            ("backups", "ferry/app-1.tar")
        );
        assert_eq!(url.parent_prefix(), "ferry/");
        assert_eq!(url.to_string(), "s3://backups/ferry/app-1.tar");
        assert_eq!(ObjectUrl::parse("s3://state").unwrap().key, "");
        for bad in [
            "s3://Up/x",
            "s3://ab/x",
            "s3://b-/x",
            "s3://bucket/a//b",
            "s3://bucket/../x",
            "s3://bucket/a#b",
            "s3://bucket/{job}.tar",
            "/tmp/x",
        ] {
            assert!(ObjectUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
