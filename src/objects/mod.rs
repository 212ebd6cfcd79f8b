//! S3-compatible object storage (AWS S3, MinIO, Ceph RGW, Garage, R2)
//! through the `object_store` crate: `s3://BUCKET/KEY` addresses, clients
//! per bucket, archives written as multipart uploads that appear only when
//! complete ([`upload`]), read back in checked ranges ([`read`]), and the
//! conditional writes job state and leases rely on ([`conditional`]).

pub mod conditional;
mod credentials;
pub mod read;
pub mod upload;

pub use crate::types::object_settings::ObjectUrl;
use crate::types::object_settings::{ObjectSettings, DEFAULT_PART_SIZE, MIN_PART_SIZE};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore as _;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Object storage went wrong. Messages name the bucket or object and the
/// fix; they never hold credentials.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    #[error("{0}")]
    Config(String),
    #[error("bucket {bucket} does not exist at {endpoint}; create it, or fix the bucket name")]
    NoBucket { bucket: String, endpoint: String },
    #[error("{url}: access denied ({detail}); check the access key and secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or [object_store]) and the bucket's permissions")]
    Denied { url: String, detail: String },
    #[error("{url} does not exist")]
    NotFound { url: String },
    #[error("{url} changed while it was being read (its ETag is no longer {etag}); nothing was written from it, run again to read the new object")]
    Changed { url: String, etag: String },
    #[error("{url}: another writer changed it first (conditional write refused)")]
    Conflict { url: String },
    #[error("{url}: {message}")]
    Other { url: String, message: String },
}

impl ObjectError {
    /// Classify an `object_store` error about `url`.
    pub fn from_store(error: object_store::Error, url: &ObjectUrl, endpoint: &str) -> ObjectError {
        let detail = crate::types::error_text::error_chain(&error);
        let url_text = url.to_string();
        match error {
            _ if detail.contains("NoSuchBucket") => ObjectError::NoBucket {
                bucket: url.bucket.clone(),
                endpoint: endpoint.to_owned(),
            },
            object_store::Error::NotFound { .. } => ObjectError::NotFound { url: url_text },
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => ObjectError::Denied {
                url: url_text,
                detail: short(&detail),
            },
            object_store::Error::Precondition { .. }
            | object_store::Error::AlreadyExists { .. }
            | object_store::Error::NotModified { .. } => ObjectError::Conflict { url: url_text },
            _ if detail.contains("InvalidAccessKeyId")
                || detail.contains("SignatureDoesNotMatch")
                || detail.contains("AccessDenied") =>
            {
                ObjectError::Denied {
                    url: url_text,
                    detail: short(&detail),
                }
            }
            _ => ObjectError::Other {
                url: url_text,
                message: short(&detail),
            },
        }
    }
}

/// The server's error code when the text holds one, else the HTTP
/// status, else the text (cut).
fn short(detail: &str) -> String {
    if let Some(start) = detail.find("<Code>") {
        if let Some(end) = detail[start..].find("</Code>") {
            return detail[start + 6..start + end].to_owned();
        }
    }
    if let Some(at) = detail.find("status code: ") {
        let status = &detail[at + 13..];
        let end = status.find(':').unwrap_or(status.len());
        return format!("HTTP {}", status[..end].trim());
    }
    detail.chars().take(300).collect()
}

/// Clients for every bucket a run touches, sharing one settings block.
#[derive(Clone)]
pub struct Objects {
    settings: Arc<ObjectSettings>,
    buckets: Arc<Mutex<HashMap<String, Bucket>>>,
}

impl Objects {
    pub fn new(settings: ObjectSettings) -> Objects {
        Objects {
            settings: Arc::new(settings),
            buckets: Arc::default(),
        }
    }

    /// The client for `url`'s bucket (made once per run).
    pub fn bucket(&self, url: &ObjectUrl) -> Result<Bucket, ObjectError> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bucket) = buckets.get(&url.bucket) {
            return Ok(bucket.clone());
        }
        let resolved = credentials::resolve(&self.settings)?;
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&url.bucket)
            .with_region(&resolved.region)
            .with_virtual_hosted_style_request(!resolved.path_style)
            .with_allow_http(resolved.allow_http)
            .with_retry(object_store::RetryConfig {
                max_retries: 4,
                retry_timeout: std::time::Duration::from_secs(60),
                backoff: Default::default(),
            })
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_allow_http(resolved.allow_http)
                    .with_connect_timeout(std::time::Duration::from_secs(10)),
            );
        if let Some(endpoint) = &resolved.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        builder = resolved.apply_credentials(builder);
        let s3 = builder.build().map_err(|e| {
            ObjectError::Config(format!(
                "cannot set up object storage for s3://{}: {}",
                url.bucket,
                crate::types::error_text::error_chain(&e)
            ))
        })?;
        let part_size = self
            .settings
            .part_size
            .unwrap_or(DEFAULT_PART_SIZE)
            .max(MIN_PART_SIZE);
        let bucket = Bucket {
            s3: Arc::new(s3),
            name: url.bucket.clone(),
            endpoint: resolved
                .endpoint
                .clone()
                .unwrap_or_else(|| format!("AWS S3 ({})", resolved.region)),
            part_size,
        };
        buckets.insert(url.bucket.clone(), bucket.clone());
        Ok(bucket)
    }
}

/// One object listed under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// Seconds since the epoch.
    pub modified: i64,
    pub etag: Option<String>,
}

/// A client bound to one bucket.
#[derive(Clone)]
pub struct Bucket {
    s3: Arc<AmazonS3>,
    name: String,
    endpoint: String,
    part_size: u64,
}

impl Bucket {
    fn url(&self, key: &str) -> ObjectUrl {
        ObjectUrl {
            bucket: self.name.clone(),
            key: key.to_owned(),
        }
    }

    fn error(&self, key: &str, error: object_store::Error) -> ObjectError {
        ObjectError::from_store(error, &self.url(key), &self.endpoint)
    }

    /// Where the bucket is (for messages).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// An object's size and ETag; `None` when there is no such object.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, ObjectError> {
        match self.s3.head(&ObjectPath::from(key)).await {
            Ok(meta) => Ok(Some(info(meta))),
            Err(object_store::Error::NotFound { .. }) => {
                // A HEAD has no body to tell a missing bucket from a
                // missing key: ask the bucket itself.
                self.list_page_check().await?;
                Ok(None)
            }
            Err(e) => Err(self.error(key, e)),
        }
    }

    /// Fail clearly when the bucket is missing or not ours.
    async fn list_page_check(&self) -> Result<(), ObjectError> {
        use futures_util::StreamExt;
        let prefix = ObjectPath::from("ferry-bucket-check");
        let mut listing = self.s3.list(Some(&prefix));
        match listing.next().await {
            Some(Err(e)) => Err(self.error("", e)),
            _ => Ok(()),
        }
    }

    /// Every object under `prefix` (a key prefix, not only a directory).
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ObjectError> {
        use futures_util::TryStreamExt;
        // object_store lists "directories": list the parent, then filter.
        let (dir, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let parent = (!dir.is_empty()).then(|| ObjectPath::from(dir));
        let listed: Vec<_> = self
            .s3
            .list(parent.as_ref())
            .try_collect()
            .await
            .map_err(|e| self.error(prefix, e))?;
        let mut found: Vec<ObjectInfo> = listed
            .into_iter()
            .map(info)
            .filter(|o| o.key.starts_with(prefix))
            .collect();
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    /// A small object's bytes and ETag; `None` when there is none.
    pub async fn get_small(
        &self,
        key: &str,
        limit: u64,
    ) -> Result<Option<(bytes::Bytes, Option<String>)>, ObjectError> {
        let result = match self.s3.get(&ObjectPath::from(key)).await {
            Ok(result) => result,
            Err(e) => {
                return match self.error(key, e) {
                    ObjectError::NotFound { .. } => Ok(None),
                    other => Err(other),
                }
            }
        };
        if result.meta.size > limit {
            return Err(ObjectError::Other {
                url: self.url(key).to_string(),
                message: format!(
                    "{} bytes is more than the {limit} expected",
                    result.meta.size
                ),
            });
        }
        let etag = result.meta.e_tag.clone();
        let bytes = result.bytes().await.map_err(|e| self.error(key, e))?;
        Ok(Some((bytes, etag)))
    }

    /// Write a small object whole (`mode` as in [`conditional::Write`]).
    /// Returns the new ETag.
    pub async fn put_small(
        &self,
        key: &str,
        bytes: Vec<u8>,
        mode: conditional::Write,
    ) -> Result<Option<String>, ObjectError> {
        let mode = match mode {
            conditional::Write::Overwrite => object_store::PutMode::Overwrite,
            conditional::Write::Create => object_store::PutMode::Create,
            conditional::Write::Replace(etag) => {
                object_store::PutMode::Update(object_store::UpdateVersion {
                    e_tag: Some(etag),
                    version: None,
                })
            }
        };
        let result = self
            .s3
            .put_opts(&ObjectPath::from(key), bytes.into(), mode.into())
            .await
            .map_err(|e| self.error(key, e))?;
        Ok(result.e_tag)
    }

    /// Delete an object (gone already is fine).
    pub async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        match self
            .s3
            .delete(&ObjectPath::from(key))
            .await
            .map_err(|e| self.error(key, e))
        {
            Ok(()) | Err(ObjectError::NotFound { .. }) => Ok(()),
            Err(other) => Err(other),
        }
    }
}

fn info(meta: object_store::ObjectMeta) -> ObjectInfo {
    ObjectInfo {
        key: meta.location.to_string(),
        size: meta.size,
        modified: meta.last_modified.timestamp(),
        etag: meta.e_tag,
    }
}
