pub mod bench;
pub mod bench_attention;
pub mod bench_int8;
pub mod bench_serve;
pub mod demo;
pub mod distill;
pub mod encoder;
pub mod finetune;
pub mod forward;
pub mod generate;
pub mod metric;
pub mod pretrain;
pub mod prune;
pub mod quantize;
pub mod quickstart;
pub mod serve;
pub mod tokenizer;
pub mod train;
pub mod translate;

use lingo_models::auto::LoadOptions;
use lingo_models::Quantization;
use std::sync::atomic::{AtomicBool, Ordering};

/// `--int8`: load the model with int8 linear layers (as `lingo quantize` would make it).
#[derive(clap::Args, Clone, Copy, Default)]
pub struct QuantizeArg {
    /// Run the linear layers in int8 (dynamic quantization: per-channel int8 weights, per-row
    /// int8 activations); a folder `lingo quantize` wrote is int8 without it.
    #[arg(long)]
    pub int8: bool,
}

impl QuantizeArg {
    pub fn quantize(self) -> Option<Quantization> {
        self.int8.then_some(Quantization::Int8Dynamic)
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
