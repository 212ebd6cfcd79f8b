//! Why a job failed, typed: the engine's, the store's, an archive's or
//! object storage's own error, or one of the job's own reasons. `cli`
//! renders them; nothing here prints.

use crate::archive::ArchiveError;
use crate::engine::EngineError;
use crate::objects::ObjectError;
use crate::store::StoreError;

/// A job (or one of its images) failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Object(#[from] ObjectError),
    /// An archive could not be written or its unfinished uploads swept
    /// (`archive::location`'s writers still report `anyhow` errors).
    #[error(transparent)]
    Output(anyhow::Error),
    /// The job's state (or its lock or lease) could not be read or saved.
    #[error("{0}")]
    State(String),
    /// The job as configured cannot run, or would do harm (named, with the fix).
    #[error("{0}")]
    Refused(String),
    /// Reading a directory the job works in failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// What the job was asked to copy is nowhere to be read.
    #[error("not in the store")]
    NotInStore,
    /// None of the images could be read.
    #[error("{images} could not be backed up: {list}")]
    NoneReadable { images: String, list: String },
    /// Some of the job's images failed; the others were done.
    #[error("{failed} of {total} {what} failed ({others}): {list}")]
    SomeFailed {
        what: &'static str,
        failed: usize,
        total: usize,
        /// What became of the others.
        others: String,
        /// Each failed image, with its reason.
        list: String,
    },
}

impl JobError {
    /// The error with every cause its own text does not already say.
    pub fn chain(&self) -> String {
        crate::types::error_text::error_chain(self)
    }
}
