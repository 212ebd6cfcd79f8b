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

/// An error the API reports to the client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
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

    pub fn internal(error: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN",
            error.to_string(),
        )
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
