//! Image references in docker's forms: `nginx` is
//! `docker.io/library/nginx:latest`, `host:5000/team/app:tag`, and
//! `name@sha256:<hex>`. The grammar follows distribution's `reference`
//! package: the first path component is a registry only when it has a dot,
//! a colon or is `localhost`.

use super::digest::Digest;
use std::fmt;
use std::str::FromStr;

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";

/// A fully qualified image reference.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why a reference was refused, with the rule it broke.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid reference {0:?}: it is empty")]
    Empty(String),
    #[error("invalid reference {input:?}: repository {component:?} must be lower-case letters, digits and single separators (., _, __, -), e.g. team/app")]
    Repository { input: String, component: String },
    #[error("invalid reference {input:?}: tag {tag:?} must be 1-128 of [A-Za-z0-9_.-] and not start with . or -")]
    Tag { input: String, tag: String },
    #[error("invalid reference {input:?}: {source}")]
    Digest {
        input: String,
        source: super::digest::DigestError,
    },
    #[error("invalid reference {input:?}: registry {registry:?} is not a valid host[:port]")]
    Registry { input: String, registry: String },
    #[error("invalid reference {0:?}: longer than 255 characters")]
    TooLong(String),
}

impl Reference {
    /// Parse a reference, adding `:latest` when neither tag nor digest is given.
    pub fn parse(text: &str) -> Result<Reference, ReferenceError> {
        let mut reference = Reference::parse_repository_or_ref(text)?;
        if reference.tag.is_none() && reference.digest.is_none() {
            reference.tag = Some("latest".to_owned());
        }
        Ok(reference)
    }

    /// Parse a reference without defaulting the tag (for repositories and `--all-tags`).
    pub fn parse_repository_or_ref(text: &str) -> Result<Reference, ReferenceError> {
        let input = text.to_owned();
        if text.is_empty() {
            return Err(ReferenceError::Empty(input));
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => {
                let digest = digest.parse().map_err(|source| ReferenceError::Digest {
                    input: input.clone(),
                    source,
                })?;
                (rest, Some(digest))
            }
            None => (text, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(colon) if !rest[colon..].contains('/') => {
                (&rest[..colon], Some(&rest[colon + 1..]))
            }
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            if !valid_tag(tag) {
                return Err(ReferenceError::Tag {
                    input,
                    tag: tag.to_owned(),
                });
            }
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_owned(), path)
            }
            _ => (DOCKER_HUB.to_owned(), name),
        };
        if !valid_registry(&registry) {
            return Err(ReferenceError::Registry { input, registry });
        }
        let registry = normalise_registry(&registry);
        for component in path.split('/') {
            if !valid_component(component) {
                return Err(ReferenceError::Repository {
                    input,
                    component: component.to_owned(),
                });
            }
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        // The limit applies to the name as ferry stores and prints it, so a
        // printed reference always parses again (found by fuzzing).
        if registry.len() + 1 + repository.len() > 255 {
            return Err(ReferenceError::TooLong(input));
        }
        Ok(Reference {
            registry,
            repository,
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    /// The registry host\[:port\] (`docker.io` for Docker Hub).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry (`library/nginx`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository`, e.g. `docker.io/library/nginx`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        }
    }

    /// The same repository pinned to a digest, without tag.
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            tag: None,
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same reference in another repository (`host/path`), keeping tag and digest.
    pub fn in_repository(&self, repository: &Reference) -> Reference {
        Reference {
            registry: repository.registry.clone(),
            repository: repository.repository.clone(),
            ..self.clone()
        }
    }

    /// What the manifest endpoint is asked for: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            (None, None) => "latest".to_owned(),
        }
    }

    /// Docker's short form (`nginx:1.25`, `team/app:1`), as `docker images` shows it.
    pub fn familiar_name(&self) -> String {
        if self.registry == DOCKER_HUB {
            self.repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository)
                .to_owned()
        } else {
            self.name()
        }
    }
}

/// Docker Hub answers under several names; all mean `docker.io`.
fn normalise_registry(registry: &str) -> String {
    match registry {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_owned()
        }
        other => other.to_owned(),
    }
}

fn valid_registry(registry: &str) -> bool {
    let (host, port) = match registry.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => (host, Some(port)),
        _ => (registry, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = if host.starts_with('[') && host.ends_with(']') {
        host[1..host.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .is_ok()
    } else {
        !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    };
    port_ok && host_ok
}

/// Whether `component` is one path component of a repository name.
pub fn valid_component(component: &str) -> bool {
    // [a-z0-9]+ ((\.|_|__|-+)[a-z0-9]+)*
    let bytes = component.as_bytes();
    if bytes.is_empty() || !is_alnum(bytes[0]) || !is_alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if is_alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !is_alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// Whether `tag` is a valid tag (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`).
pub fn valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    !tag.is_empty()
        && tag.len() <= 128
        && word(tag.as_bytes()[0])
        && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-')
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Reference::parse(text)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl serde::Serialize for Reference {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(text: &str) -> String {
        Reference::parse(text).unwrap().to_string()
    }

    #[test]
    fn normalises_docker_forms() {
        assert_eq!(full("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(full("nginx:1.25"), "docker.io/library/nginx:1.25");
        assert_eq!(full("library/nginx"), "docker.io/library/nginx:latest");
        assert_eq!(full("team/app:v1"), "docker.io/team/app:v1");
        assert_eq!(
            full("index.docker.io/team/app"),
            "docker.io/team/app:latest"
        );
        assert_eq!(full("localhost/app"), "localhost/app:latest");
        assert_eq!(full("127.0.0.1:5000/a/b/c:tag"), "127.0.0.1:5000/a/b/c:tag");
        assert_eq!(full("host:5000/app"), "host:5000/app:latest");
        let hex = "b".repeat(64);
        assert_eq!(
            full(&format!("nginx@sha256:{hex}")),
            format!("docker.io/library/nginx@sha256:{hex}")
        );
        assert_eq!(
            full(&format!("nginx:1@sha256:{hex}")),
            format!("docker.io/library/nginx:1@sha256:{hex}")
        );
        assert_eq!(Reference::parse("nginx").unwrap().familiar_name(), "nginx");
    }

    #[test]
    fn regression_fuzz_long_name_round_trips() {
        // `x/<250 chars>` is under 255 as typed but not once normalised to docker.io/x/...
        let typed = format!("x/{}", "9".repeat(250));
        assert!(Reference::parse(&typed).is_err());
        let fits = format!("x/{}", "9".repeat(240));
        let parsed = Reference::parse(&fits).unwrap();
        assert_eq!(Reference::parse(&parsed.to_string()).unwrap(), parsed);
    }

    #[test]
    fn rejects_invalid_forms() {
        for bad in [
            "",
            "Nginx",
            "nginx:",
            "nginx:-x",
            "a//b",
            "-a/b",
            "a/b__c__",
            "nginx@sha256:abc",
            "a b",
            "host:port/app",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} accepted");
        }
        let error = Reference::parse("UPPER/app").unwrap_err().to_string();
        assert!(error.contains("lower-case"), "{error}");
    }
}
