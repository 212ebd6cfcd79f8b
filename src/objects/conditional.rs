//! Conditional writes and the leases built on them. A lease is a small
//! object (`holder`, `expires`): taken by creating it (`If-None-Match: *`)
//! or by replacing an expired or released one (`If-Match` on its ETag),
//! renewed with `If-Match`, released with `If-Match`. Two workers can
//! therefore never both believe they hold it — on a server that enforces
//! the conditions, which [`probe`] checks once per run.

use super::{Bucket, ObjectError};

/// How a small object is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Unconditionally.
    Overwrite,
    /// Only if there is no such object (`If-None-Match: *`).
    Create,
    /// Only if the object still has this ETag (`If-Match`).
    Replace(String),
}

/// Whether the server refuses writes whose conditions fail: create an
/// object twice with `If-None-Match: *`, and replace it with a wrong
/// `If-Match`. Garage, for one, accepts both.
pub async fn probe(bucket: &Bucket, prefix: &str) -> Result<bool, ObjectError> {
    let key = format!(
        "{prefix}.ferry-probe-{}-{:x}",
        std::process::id(),
        rand::random::<u64>()
    );
    let first = bucket
        .put_small(&key, b"probe".to_vec(), Write::Create)
        .await;
    let result = async {
        first?;
        let again = bucket
            .put_small(&key, b"probe again".to_vec(), Write::Create)
            .await;
        let stale = bucket
            .put_small(
                &key,
                b"probe stale".to_vec(),
                Write::Replace("\"ferry-not-this-etag\"".into()),
            )
            .await;
        match (again, stale) {
            (Err(ObjectError::Conflict { .. }), Err(ObjectError::Conflict { .. })) => Ok(true),
            (Ok(_), _) | (_, Ok(_)) => Ok(false),
            (Err(e), _) => Err(e),
        }
    }
    .await;
    let _ = bucket.delete(&key).await;
    result
}

/// What a lease object holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LeaseBody {
    /// Who holds it (`host:pid:random`); empty when released.
    pub holder: String,
    /// Seconds since the epoch after which anyone may take it.
    pub expires: i64,
}

/// Why a lease was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("held by {holder} until {until}")]
    Held { holder: String, until: String },
    #[error(transparent)]
    Object(#[from] ObjectError),
}

/// A lease this process holds.
pub struct Lease {
    bucket: Bucket,
    key: String,
    etag: String,
    holder: String,
    ttl: i64,
    /// The holder whose expired lease this one replaced, if any.
    pub took_over: Option<String>,
}

fn etag_of(url: String, etag: Option<String>) -> Result<String, ObjectError> {
    etag.ok_or_else(|| ObjectError::Other {
        url,
        message: "the server answered a write without an ETag; leases need one".into(),
    })
}

impl Lease {
    /// Take the lease at `key` for `ttl` seconds (at `now`).
    pub async fn acquire(
        bucket: &Bucket,
        key: &str,
        holder: &str,
        ttl: i64,
        now: i64,
    ) -> Result<Lease, LeaseError> {
        let body = |expires| {
            serde_json::to_vec(&LeaseBody {
                holder: holder.to_owned(),
                expires,
            })
            .unwrap_or_default()
        };
        let url = bucket.url(key).to_string();
        let held = |current: &LeaseBody| LeaseError::Held {
            holder: current.holder.clone(),
            until: crate::types::time::format_rfc3339(current.expires),
        };
        let (write, took_over) = match bucket.get_small(key, 64 * 1024).await? {
            None => (Write::Create, None),
            Some((bytes, etag)) => {
                let current: LeaseBody =
                    serde_json::from_slice(&bytes).map_err(|e| ObjectError::Other {
                        url: url.clone(),
                        message: format!(
                            "not a ferry lease ({e}); delete it if nothing else owns this key"
                        ),
                    })?;
                if !current.holder.is_empty() && current.expires > now {
                    return Err(held(&current));
                }
                let etag = etag_of(url.clone(), etag)?;
                let previous = (!current.holder.is_empty()).then(|| current.holder.clone());
                (Write::Replace(etag), previous)
            }
        };
        match bucket.put_small(key, body(now + ttl), write).await {
            Ok(etag) => Ok(Lease {
                bucket: bucket.clone(),
                key: key.to_owned(),
                etag: etag_of(url, etag)?,
                holder: holder.to_owned(),
                ttl,
                took_over,
            }),
            // Someone else wrote it between our read and our write.
            Err(ObjectError::Conflict { .. }) => {
                let current = match bucket.get_small(key, 64 * 1024).await? {
                    Some((bytes, _)) => serde_json::from_slice(&bytes).unwrap_or(LeaseBody {
                        holder: "another worker".into(),
                        expires: now + ttl,
                    }),
                    None => LeaseBody {
                        holder: "another worker".into(),
                        expires: now,
                    },
                };
                Err(held(&current))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Push the expiry `ttl` past `now`. Fails (`Conflict`) when the lease
    /// is no longer ours: the caller must stop.
    pub async fn renew(&mut self, now: i64) -> Result<(), ObjectError> {
        let body = serde_json::to_vec(&LeaseBody {
            holder: self.holder.clone(),
            expires: now + self.ttl,
        })
        .unwrap_or_default();
        let etag = self
            .bucket
            .put_small(&self.key, body, Write::Replace(self.etag.clone()))
            .await?;
        self.etag = etag_of(self.bucket.url(&self.key).to_string(), etag)?;
        Ok(())
    }

    /// Give the lease up (only if it is still ours).
    pub async fn release(self) -> Result<(), ObjectError> {
        let body = serde_json::to_vec(&LeaseBody {
            holder: String::new(),
            expires: 0,
        })
        .unwrap_or_default();
        self.bucket
            .put_small(&self.key, body, Write::Replace(self.etag))
            .await
            .map(|_| ())
    }

    /// Seconds the lease lasts from each renewal.
    pub fn ttl(&self) -> i64 {
        self.ttl
    }
}
