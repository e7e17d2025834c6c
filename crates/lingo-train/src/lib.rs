//! Training: any model with a loss plugs into one [`Trainer`] through the [`TrainTask`] trait.
//!
//! | file | concern |
//! |---|---|
//! | [`optim`] | AdamW and SGD, parameter groups, in-place fused updates |
//! | [`schedule`] | learning-rate warm-up and decay |
//! | [`grads`] | gradient accumulation and global-norm clipping |
//! | [`checkpoint`] | atomic, single-file checkpoints that resume exactly |
//! | [`data_parallel`] | what ranks exchange: rank 0's weights, gradient all-reduce in buckets |
//! | [`pipeline`] | GPipe: stages on consecutive ranks, activations forward, gradients back |
//! | [`metrics`] | the JSONL metrics log and the loss-curve PNG |
//! | [`trainer`] | the loop, evaluation, progress bar |

pub mod checkpoint;
pub mod data_parallel;
pub mod grads;
pub mod metrics;
pub mod optim;
pub mod pipeline;
pub mod precision;
pub mod rules;
pub mod schedule;
pub mod trainer;

pub use optim::{AdamWConfig, DecayPolicy, Optimizer, OptimizerConfig, ParamGroup, SgdConfig};
pub use precision::Precision;
pub use rules::{AdafactorConfig, AdagradConfig, AdamConfig, RmspropConfig};
pub use schedule::{Schedule, ScheduleKind};
pub use trainer::{EarlyStopping, Shard, TrainConfig, TrainReport, TrainTask, Trainer};

use std::path::{Path, PathBuf};

/// What can go wrong in a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The run's configuration, or a file it resumes from, is wrong.
    #[error("{0}")]
    Input(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Another rank failed, disagreed or never came.
    #[error("data-parallel training")]
    Collective(#[from] lingo_dist::CollectiveError),
    #[error("training diverged at step {step}: loss is {loss}")]
    Diverged { step: usize, loss: f64 },
    #[error(transparent)]
    Model(#[from] candle_core::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Plot(#[from] lingo_viz::VizError),
    /// What a task reported, in its own error type.
    #[error(transparent)]
    Task(Box<dyn std::error::Error + Send + Sync>),
}

impl TrainError {
    /// A task's own error.
    pub fn task(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        TrainError::Task(Box::new(e))
    }
}

pub type Result<T> = std::result::Result<T, TrainError>;

/// The error of an I/O operation on `path`.
pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.into(),
        source,
    }
}
