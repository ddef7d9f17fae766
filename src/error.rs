//! One error type for the whole engine. Every variant names the file or field at fault, so a
//! message shown in the GUI or printed by the CLI tells the user what to fix.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A data file whose contents do not match its format.
    #[error("{path}: {problem}")]
    BadData { path: PathBuf, problem: String },

    /// An I/O failure on a file, with the operation that failed.
    #[error("{path}: cannot {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// A configuration value outside its allowed range.
    #[error("invalid {field}: {problem}")]
    Config { field: String, problem: String },

    /// Two datasets that cannot be used together (shape, channels, classes).
    #[error("{0}")]
    Mismatch(String),

    /// Training produced NaN or infinite loss.
    #[error("training diverged at epoch {epoch}, batch {batch}: loss is {loss} (the last good snapshot is kept; try a lower learning rate)")]
    Diverged { epoch: usize, batch: usize, loss: f32 },

    /// A model file that cannot be loaded.
    #[error("{path}: cannot load model: {problem}")]
    Model { path: PathBuf, problem: String },

    /// A run folder that is missing something or holds something unreadable.
    #[error("run {path}: {problem}")]
    Run { path: PathBuf, problem: String },

    /// The compute device could not be started.
    #[error("device: {0}")]
    Device(String),

    /// The user stopped the job.
    #[error("stopped by the user")]
    Stopped,

    /// A newer request replaced this one before it finished (a slider drag); nothing to report.
    #[error("superseded by a newer request")]
    Superseded,

    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn bad_data(path: impl AsRef<Path>, problem: impl Into<String>) -> Self {
        Error::BadData { path: path.as_ref().to_path_buf(), problem: problem.into() }
    }

    pub fn io(path: impl AsRef<Path>, action: &'static str, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().to_path_buf(), action, source }
    }

    pub fn config(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::Config { field: field.into(), problem: problem.into() }
    }

    pub fn run(path: impl AsRef<Path>, problem: impl Into<String>) -> Self {
        Error::Run { path: path.as_ref().to_path_buf(), problem: problem.into() }
    }

    pub fn model(path: impl AsRef<Path>, problem: impl Into<String>) -> Self {
        Error::Model { path: path.as_ref().to_path_buf(), problem: problem.into() }
    }
}
