//! The one error type of the task layer, so a caller (the CLI, a server) can tell the user's
//! mistake — a malformed file, an unknown label, an over-long request — from a failure inside Lingo.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The caller's input is wrong; the message names the file, line, field or value.
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Load(#[from] lingo_models::hf::LoadError),
    #[error(transparent)]
    Config(#[from] lingo_models::ConfigError),
    #[error(transparent)]
    Data(#[from] lingo_data::DataError),
    #[error(transparent)]
    Metric(#[from] lingo_eval::MetricError),
    #[error(transparent)]
    Train(#[from] lingo_train::TrainError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A computation failed (a tensor operation, a kernel): Lingo's fault, not the input's.
    #[error(transparent)]
    Model(#[from] candle_core::Error),
}

impl TaskError {
    /// Whether the caller's input is at fault (a server answers 4xx) rather than Lingo (5xx).
    pub fn is_bad_input(&self) -> bool {
        match self {
            TaskError::Input(_)
            | TaskError::Load(_)
            | TaskError::Config(_)
            | TaskError::Data(_)
            | TaskError::Metric(_) => true,
            TaskError::Train(lingo_train::TrainError::Input(_)) => true,
            TaskError::Train(lingo_train::TrainError::Task(e)) => e
                .downcast_ref::<TaskError>()
                .is_some_and(TaskError::is_bad_input),
            _ => false,
        }
    }
}

/// `TaskError::Input` from a format string: `bad_input!("{}: empty", path.display())`.
macro_rules! bad_input {
    ($($arg:tt)*) => {
        $crate::error::TaskError::Input(format!($($arg)*))
    };
}
pub(crate) use bad_input;

/// Writes `text` to `dir/file` atomically; an error names the file.
pub(crate) fn write_in(dir: &Path, file: &str, text: String) -> Result<()> {
    let path = dir.join(file);
    lingo_nn::io::write_atomic(&path, text.as_bytes()).map_err(io(&path))
}

/// The error of an I/O operation on `path`.
pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TaskError + '_ {
    move |source| TaskError::Io {
        path: path.into(),
        source,
    }
}

pub type Result<T> = std::result::Result<T, TaskError>;

/// A task's error as the trainer carries it.
pub(crate) fn to_train(e: TaskError) -> lingo_train::TrainError {
    match e {
        TaskError::Train(e) => e,
        TaskError::Model(e) => lingo_train::TrainError::Model(e),
        e => lingo_train::TrainError::task(e),
    }
}

/// A task's error inside a computation the trainer drives (`candle_core::Result`).
pub(crate) fn to_candle(e: TaskError) -> candle_core::Error {
    match e {
        TaskError::Model(e) => e,
        e => candle_core::Error::Msg(e.to_string()),
    }
}
