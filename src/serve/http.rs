//! Responses in the distribution API's terms: bodies (whole, or a file
//! streamed in chunks), and errors as `{"errors":[{code, message}]}` with
//! the spec's status for each code.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Response, StatusCode};

/// Every response body.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// Read size for streaming blobs.
const CHUNK: usize = 256 * 1024;

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// No body.
pub fn empty() -> Body {
    full(Bytes::new())
}

/// `length` bytes of `file` from where it is positioned, streamed.
pub fn file_body(file: tokio::fs::File, length: u64) -> Body {
    use tokio::io::AsyncReadExt;
    let stream = futures_util::stream::try_unfold((file, length), |(mut file, left)| async move {
        if left == 0 {
            return Ok(None);
        }
        let mut buffer = vec![0u8; CHUNK.min(left as usize)];
        let read = file.read(&mut buffer).await?;
        if read == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the blob file is shorter than its size",
            ));
        }
        buffer.truncate(read);
        Ok(Some((
            Frame::data(Bytes::from(buffer)),
            (file, left - read as u64),
        )))
    });
    StreamBody::new(stream).boxed()
}

/// An error the API reports to the client. `message` is for the client;
/// `detail` (paths, OS errors) only for the server's log.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    detail: Option<String>,
    retry_after: Option<std::time::Duration>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            detail: None,
            retry_after: None,
        }
    }

    /// 429: a bound was reached; the client may try again later.
    pub fn too_many(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", message)
            .retry_after(std::time::Duration::from_secs(1))
    }

    /// Tell the client when to come back.
    pub fn retry_after(mut self, wait: std::time::Duration) -> ApiError {
        self.retry_after = Some(wait);
        self
    }

    /// What the log says about it.
    pub fn detail(&self) -> &str {
        self.detail.as_deref().unwrap_or(&self.message)
    }

    pub fn name_invalid(name: &str) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            format!("invalid repository name {name:?}"),
        )
    }

    pub fn manifest_unknown(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            format!("manifest unknown: {what}"),
        )
    }

    pub fn blob_unknown(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            format!("blob unknown: {what}"),
        )
    }

    pub fn digest_invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", message)
    }

    pub fn upload_unknown() -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
            "upload unknown (finished, cancelled or expired); start it again",
        )
    }

    /// A server-side failure: the client learns that it happened, the
    /// log learns what (no store paths reach clients).
    pub fn internal(error: impl std::fmt::Display) -> ApiError {
        let mut api = ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN",
            "the registry failed to answer; its log has the details",
        );
        api.detail = Some(error.to_string());
        api
    }

    /// The JSON error response.
    pub fn response(&self, head: bool) -> Response<Body> {
        let body = serde_json::json!({"errors": [{"code": self.code, "message": self.message}]});
        let mut builder = Response::builder()
            .status(self.status)
            .header("Content-Type", "application/json")
            .header("Docker-Distribution-API-Version", "registry/2.0");
        if self.status == StatusCode::UNAUTHORIZED {
            builder = builder.header("WWW-Authenticate", "Basic realm=\"ferry\"");
        }
        if let Some(wait) = self.retry_after {
            builder = builder.header("Retry-After", wait.as_secs().max(1));
        }
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is not read: the connection cannot be reused.
            builder = builder.header("Connection", "close");
        }
        let body = match head {
            true => empty(),
            false => full(body.to_string()),
        };
        builder.body(body).expect("valid response")
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> ApiError {
        use crate::store::StoreError;
        match error {
            StoreError::DigestMismatch { .. } | StoreError::SizeMismatch { .. } => {
                ApiError::digest_invalid(error.to_string())
            }
            StoreError::MissingBlob(digest) => ApiError::blob_unknown(&digest.to_string()),
            StoreError::Io { ref source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
                let mut api = ApiError::internal(&error);
                api.message = "the registry's disk is full; nothing was stored".into();
                api
            }
            StoreError::Busy(message) => {
                let mut api = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UNAVAILABLE",
                    "the store is busy (a gc or prune is running); try again shortly",
                )
                .retry_after(std::time::Duration::from_secs(5));
                api.detail = Some(message);
                api
            }
            other => ApiError::internal(other),
        }
    }
}

/// A response builder with the API version header set.
pub fn builder(status: StatusCode) -> hyper::http::response::Builder {
    Response::builder()
        .status(status)
        .header("Docker-Distribution-API-Version", "registry/2.0")
}

/// A paginated `Link` to the next page, when there is one.
pub fn next_link(path: &str, n: usize, last: Option<&str>) -> Option<String> {
    last.map(|last| format!("<{path}?n={n}&last={last}>; rel=\"next\""))
}
