pub mod bench;
pub mod bench_attention;
pub mod bench_dist;
pub mod bench_int8;
pub mod bench_load;
pub mod bench_serve;
pub mod demo;
pub mod distill;
pub mod encoder;
pub mod finetune;
pub mod forward;
pub mod generate;
pub mod hmm;
pub mod metric;
pub mod ngram;
pub mod pretrain;
pub mod prune;
pub mod quantize;
pub mod quickstart;
pub mod rnn_lm;
pub mod serve;
pub mod tokenizer;
pub mod train;
pub mod translate;
pub mod word2vec;

use lingo_models::auto::LoadOptions;
use lingo_models::Quantization;
use std::sync::atomic::{AtomicBool, Ordering};

/// `--int8` / `--dtype bf16`: how the model's linear layers hold their weights for inference.
#[derive(clap::Args, Clone, Copy, Default)]
pub struct QuantizeArg {
    /// Run the linear layers in int8 (dynamic quantization: per-channel int8 weights, per-row
    /// int8 activations); a folder `lingo quantize` wrote is int8 without it.
    #[arg(long, conflicts_with = "dtype")]
    pub int8: bool,
    /// The linear layers' weights: `f32`, or `bf16` (half the memory; f32 accumulation, fast on
    /// AVX-512 BF16 CPUs, a portable loop elsewhere).
    #[arg(long, value_enum)]
    pub dtype: Option<WeightDtype>,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
pub enum WeightDtype {
    F32,
    Bf16,
}

impl QuantizeArg {
    pub fn quantize(self) -> Option<Quantization> {
        match self.dtype {
            Some(WeightDtype::Bf16) => {
                if !lingo_kernels::mixed_precision::bf16_supported() {
                    eprintln!(
                        "note: this CPU has no AVX-512 BF16: bf16 weights halve the memory, but \
                         their products run in a slower portable loop"
                    );
                }
                Some(Quantization::Bf16)
            }
            _ => self.int8.then_some(Quantization::Int8Dynamic),
        }
    }

    pub fn options(self) -> LoadOptions {
        LoadOptions {
            quantize: self.quantize(),
            ..LoadOptions::default()
        }
    }
}
use std::sync::Arc;

/// A flag that the first Ctrl-C sets (the trainer then checkpoints and stops); a second Ctrl-C exits.
/// The ranks this process trains with: `mpirun`'s world (MPI is initialised on first use), or a
/// world of one.
pub fn collective() -> anyhow::Result<Arc<dyn lingo_dist::Collective>> {
    let mut world = WORLD.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = world.as_ref() {
        return Ok(c.clone());
    }
    let c = lingo_dist::from_environment()?;
    *world = Some(c.clone());
    Ok(c)
}

/// Under `mpirun` with several ranks: every tokenizer a command trains is trained by rank 0 and
/// sent to the others (trainers break ties in hash-map order, so each rank would get its own).
pub fn share_trained_tokenizers() {
    if lingo_dist::Launch::detect().is_none_or(|l| l.world_size < 2) {
        return;
    }
    let invalid = |e: String| lingo_data::DataError::Invalid(e);
    lingo_data::tokenizer::train_tokenizers_through(Box::new(move |train| {
        let world = collective().map_err(|e| invalid(format!("{e:#}")))?;
        let json = lingo_train::data_parallel::share_from_root(&*world, || {
            let tokenizer = train().map_err(lingo_train::TrainError::task)?;
            let json = tokenizer.to_json().map_err(lingo_train::TrainError::task)?;
            Ok(json.into_bytes())
        })
        .map_err(|e| invalid(format!("{:#}", anyhow::Error::new(e))))?;
        lingo_data::Tokenizer::from_json(&String::from_utf8_lossy(&json))
    }));
}

/// Leaves the world (MPI requires every rank to finalize before it exits).
pub fn leave_world() {
    WORLD.lock().unwrap_or_else(|p| p.into_inner()).take();
}

/// `eprintln!` on rank 0 only: every rank of an `mpirun` world runs the same command.
macro_rules! note {
    ($($arg:tt)*) => {
        if $crate::commands::is_root() {
            eprintln!($($arg)*)
        }
    };
}
pub(crate) use note;

/// Whether this process prints and writes: rank 0 of a launched world, or a process alone.
/// This rank's share of a model split by tensor parallelism.
pub struct TensorSplit {
    pub rank: usize,
    pub ranks: usize,
    /// The all-reduce the split layers sum their partial outputs with.
    pub reduce: lingo_nn::tensor_parallel::Reduce,
}

/// `--tensor-parallel` under mpirun: whether this rank prints, and its share on more than one
/// rank.
pub fn tensor_parallel_world() -> anyhow::Result<(bool, Option<TensorSplit>)> {
    let world = collective()?;
    let (rank, ranks, root) = (world.rank(), world.world_size(), world.is_root());
    let split = (ranks > 1).then(|| TensorSplit {
        rank,
        ranks,
        reduce: lingo_train::data_parallel::tensor_sum(world),
    });
    Ok((root, split))
}

pub fn is_root() -> bool {
    lingo_dist::Launch::detect().is_none_or(|l| l.rank == 0)
}

static WORLD: std::sync::Mutex<Option<Arc<dyn lingo_dist::Collective>>> =
    std::sync::Mutex::new(None);

pub fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    let _ = ctrlc::set_handler(move || {
        if f.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting without a checkpoint");
            std::process::exit(130);
        }
        eprintln!(
            "\ninterrupt: finishing this step and writing a checkpoint (Ctrl-C again to quit now)"
        );
    });
    flag
}
