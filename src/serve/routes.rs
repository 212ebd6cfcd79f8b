//! The distribution API's URL space: `/v2/`, `/v2/_catalog`, and per
//! repository `tags/list`, `manifests/<reference>`, `blobs/<digest>`,
//! `blobs/uploads/[<session>]` and `referrers/<digest>`. Names follow the
//! spec's grammar (lower-case path components; no `..`, no empty parts), so
//! nothing a client sends can name a path outside the store.

use crate::types::reference::{valid_component, valid_tag};
use crate::types::Digest;

/// Longest repository name accepted.
const MAX_NAME: usize = 255;

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Base,
    Catalog,
    Tags(String),
    Manifest(String, String),
    Blob(String, String),
    Uploads(String),
    Upload(String, String),
    Referrers(String, String),
    NotFound,
}

/// Parse a request path (without the query).
pub fn route(path: &str) -> Route {
    let Some(rest) = path.strip_prefix("/v2/") else {
        return if path == "/v2" {
            Route::Base
        } else {
            Route::NotFound
        };
    };
    if rest.is_empty() {
        return Route::Base;
    }
    if rest == "_catalog" {
        return Route::Catalog;
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Route::Tags(name.to_owned());
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or(rest.strip_suffix("/blobs/uploads"))
    {
        return Route::Uploads(name.to_owned());
    }
    for (marker, make) in [
        (
            "/blobs/uploads/",
            Route::Upload as fn(String, String) -> Route,
        ),
        ("/manifests/", Route::Manifest),
        ("/referrers/", Route::Referrers),
        ("/blobs/", Route::Blob),
    ] {
        if let Some(at) = rest.rfind(marker) {
            let (name, tail) = (&rest[..at], &rest[at + marker.len()..]);
            if !tail.is_empty() && !tail.contains('/') {
                return make(name.to_owned(), tail.to_owned());
            }
        }
    }
    Route::NotFound
}

/// Whether `name` is a valid repository path: lower-case components
/// (`[a-z0-9]+` joined by `.`, `_`, `__` or `-`s) separated by `/`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME && name.split('/').all(valid_component)
}

/// A manifest reference: a digest, or a tag.
pub enum ManifestRef {
    Digest(Digest),
    Tag(String),
}

/// Parse a manifest reference; `None` when it is neither.
pub fn manifest_ref(text: &str) -> Option<ManifestRef> {
    if text.contains(':') {
        return text.parse().ok().map(ManifestRef::Digest);
    }
    valid_tag(text).then(|| ManifestRef::Tag(text.to_owned()))
}

/// One query parameter, percent-decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&text[i + 1..i + 3], 16) {
                Ok(byte) => {
                    out.push(byte);
                    i += 3;
                }
                Err(_) => {
                    out.push(b'%');
                    i += 1;
                }
            },
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_the_api() {
        assert_eq!(route("/v2/"), Route::Base);
        assert_eq!(route("/v2/_catalog"), Route::Catalog);
        assert_eq!(route("/v2/a/b/tags/list"), Route::Tags("a/b".into()));
        assert_eq!(
            route("/v2/a/manifests/1.0"),
            Route::Manifest("a".into(), "1.0".into())
        );
        assert_eq!(route("/v2/a/blobs/uploads/"), Route::Uploads("a".into()));
        assert_eq!(
            route("/v2/a/blobs/uploads/xyz"),
            Route::Upload("a".into(), "xyz".into())
        );
        assert_eq!(
            route("/v2/team/blobs/app/blobs/sha256:ab"),
            Route::Blob("team/blobs/app".into(), "sha256:ab".into())
        );
        assert_eq!(route("/v1/x"), Route::NotFound);
    }

    #[test]
    fn names_follow_the_grammar() {
        for good in ["a", "team/app", "a.b/c_d/e__f/g--h", "library/nginx"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "", "A", "..", "a/../b", "a//b", "/a", "a/", "a..b", "a___b", "-a", "a%2f",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(valid_tag("1.0-rc_1") && !valid_tag(".x") && !valid_tag("a/b"));
    }

    #[test]
    fn query_parameters_are_decoded() {
        let query = Some("n=2&artifactType=application%2Fspdx%2Bjson&last=a");
        assert_eq!(query_param(query, "n").as_deref(), Some("2"));
        assert_eq!(
            query_param(query, "artifactType").as_deref(),
            Some("application/spdx+json")
        );
        assert_eq!(query_param(query, "x"), None);
    }
}
