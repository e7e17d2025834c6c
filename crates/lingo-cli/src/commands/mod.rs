pub mod bench;
pub mod bench_serve;
pub mod demo;
pub mod encoder;
pub mod finetune;
pub mod forward;
pub mod generate;
pub mod metric;
pub mod pretrain;
pub mod quickstart;
pub mod serve;
pub mod tokenizer;
pub mod train;
pub mod translate;

use std::sync::atomic::{AtomicBool, Ordering};
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
