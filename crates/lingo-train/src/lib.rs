//! Training: any model with a loss plugs into one [`Trainer`] through the [`TrainTask`] trait.
//!
//! | file | concern |
//! |---|---|
//! | [`optim`] | AdamW and SGD, parameter groups, in-place fused updates |
//! | [`schedule`] | learning-rate warm-up and decay |
//! | [`grads`] | gradient accumulation and global-norm clipping |
//! | [`checkpoint`] | atomic, single-file checkpoints that resume exactly |
//! | [`metrics`] | the JSONL metrics log and the loss-curve PNG |
//! | [`trainer`] | the loop, evaluation, progress bar |

pub mod checkpoint;
pub mod grads;
pub mod metrics;
pub mod optim;
pub mod rules;
pub mod schedule;
pub mod trainer;

pub use optim::{AdamWConfig, DecayPolicy, Optimizer, OptimizerConfig, ParamGroup, SgdConfig};
pub use rules::{AdafactorConfig, AdagradConfig, AdamConfig, RmspropConfig};
pub use schedule::{Schedule, ScheduleKind};
pub use trainer::{EarlyStopping, TrainConfig, TrainReport, TrainTask, Trainer};
