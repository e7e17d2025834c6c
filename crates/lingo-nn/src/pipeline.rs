//! Pipeline parallelism's unit: a model cut into consecutive layer ranges, each range a stage that
//! runs on its own rank (GPipe). A model family says how to cut itself; `lingo_train::pipeline`
//! runs the stages, passing activations forward and their gradients back.

use crate::Ctx;
use candle_core::{Result, Tensor, Var};
use std::ops::Range;

/// One stage of a model cut into consecutive layer ranges.
pub trait PipelineStage: Send + Sync {
    /// The parameters this stage computes with (and updates), by name.
    fn params(&self) -> Vec<(String, Var)>;
    /// This stage's part of a micro-batch's computation. `inputs` are the model's own inputs (ids,
    /// targets, …), which every stage has; `x` is `None` on the first stage and the previous
    /// stage's activations elsewhere. The result is this stage's activations — on the last stage,
    /// the micro-batch's mean loss.
    fn forward(&self, inputs: &[Tensor], x: Option<&Tensor>, ctx: &mut Ctx) -> Result<Tensor>;
    /// Parameters that both the first and the last stage hold (an input embedding tied to the
    /// output layer), with their shapes: the same list on every stage. Their gradients are summed
    /// over the stages.
    fn tied(&self) -> Vec<(String, Vec<usize>)> {
        Vec::new()
    }
}

/// `layers` cut into `stages` consecutive ranges as even as they can be (earlier ranges take the
/// remainder): stage `s`'s range is the `s`-th.
pub fn split_layers(layers: usize, stages: usize) -> Vec<Range<usize>> {
    let stages = stages.max(1);
    let (per, extra) = (layers / stages, layers % stages);
    let mut start = 0;
    (0..stages)
        .map(|s| {
            let len = per + usize::from(s < extra);
            let range = start..start + len;
            start += len;
            range
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn layers_split_evenly_in_order() {
        assert_eq!(super::split_layers(12, 4), vec![0..3, 3..6, 6..9, 9..12]);
        assert_eq!(super::split_layers(5, 2), vec![0..3, 3..5]);
        assert_eq!(super::split_layers(2, 3), vec![0..1, 1..2, 2..2]);
    }
}
