//! Paginated lists from a registry: a repository's tags and the
//! registry's `_catalog`, read through one bounded, loop-proof reader.

use super::client::{header_string, parse_next_link, pull_scope, RegistryClient};
use super::error::RegistryError;
use super::transport::{read_capped, status_error};
use reqwest::header::HeaderMap;
use reqwest::Method;

/// Most tag-list pages followed through `Link` headers.
const MAX_TAG_PAGES: usize = 1000;
/// Most tags one repository may list.
const MAX_TAGS: usize = 100_000;
/// Most repositories a catalog may list.
const MAX_REPOSITORIES: usize = 50_000;

impl RegistryClient {
    /// Every tag of `repository`, following `Link` pagination.
    pub async fn list_tags(&self, repository: &str) -> Result<Vec<String>, RegistryError> {
        let what = format!("tag list of {repository}");
        let first = format!("v2/{repository}/tags/list?n=1000");
        match self
            .paged_list(&first, &pull_scope(repository), "tags", &what, MAX_TAGS)
            .await
        {
            Err(error @ RegistryError::NotFound { .. }) => {
                Err(self.not_found_as(error, &format!("{}/{repository}", self.registry())))
            }
            other => other,
        }
    }

    /// Every repository the registry lists in `_catalog` (all pages). A
    /// registry that refuses it (Docker Hub does) gets an error saying to
    /// list repositories instead of using a wildcard.
    pub async fn catalog(&self) -> Result<Vec<String>, RegistryError> {
        let what = format!("the repository catalog of {}", self.registry());
        self.paged_list(
            "v2/_catalog?n=1000",
            "registry:catalog:*",
            "repositories",
            &what,
            MAX_REPOSITORIES,
        )
        .await
        .map_err(|error| match error {
            RegistryError::NotFound { .. }
            | RegistryError::Unauthorized { .. }
            | RegistryError::Http { status: 401 | 403 | 404 | 405, .. } => {
                RegistryError::Protocol {
                    registry: self.registry().to_owned(),
                    message: format!(
                        "it does not list its repositories (_catalog refused: {error}); name the repositories in `source` instead of a wildcard"
                    ),
                }
            }
            other => other,
        })
    }

    /// A paginated list (`tags`, `repositories`): every page followed by its
    /// `Link`, a page seen twice is a loop, at most `limit` names.
    async fn paged_list(
        &self,
        first: &str,
        scope: &str,
        key: &str,
        what: &str,
        limit: usize,
    ) -> Result<Vec<String>, RegistryError> {
        let protocol = |message: String| RegistryError::Protocol {
            registry: self.registry().to_owned(),
            message,
        };
        let mut names = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut next = Some(first.to_owned());
        while let Some(path) = next.take() {
            if !seen.insert(path.clone()) {
                return Err(protocol(format!("{what}: its pages link back to one already read ({path}); the registry's pagination loops")));
            }
            if seen.len() > MAX_TAG_PAGES {
                return Err(protocol(format!(
                    "{what} has more than {MAX_TAG_PAGES} pages"
                )));
            }
            let response = self
                .request(
                    Method::GET,
                    &path,
                    &[scope.to_owned()],
                    HeaderMap::new(),
                    None,
                )
                .await?;
            if !response.status().is_success() {
                return Err(status_error(self.registry(), "GET", &path, response).await);
            }
            next =
                header_string(response.headers(), "link").and_then(|link| parse_next_link(&link));
            let body = read_capped(response, 16 * 1024 * 1024, what).await?;
            let page: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| protocol(format!("{what} is not valid JSON: {e}")))?;
            let listed = match &page[key] {
                serde_json::Value::Null => Vec::new(),
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map(str::to_owned))
                    .collect::<Option<Vec<String>>>()
                    .ok_or_else(|| protocol(format!("{what}: `{key}` holds a non-string")))?,
                _ => return Err(protocol(format!("{what}: `{key}` is not a list"))),
            };
            names.extend(listed);
            if names.len() > limit {
                return Err(protocol(format!(
                    "{what} has more than {limit} entries; narrow the job"
                )));
            }
        }
        Ok(names)
    }
}
