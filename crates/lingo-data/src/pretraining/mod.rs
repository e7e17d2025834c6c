//! Pre-training objectives as data transforms: token ids in, model inputs and labels out, every
//! random choice from a [`LingoRng`] the caller seeds — so masking is static (the same stream for
//! an example every epoch) or dynamic (a stream per epoch, RoBERTa's) by how it is seeded.
//!
//! - [`masking`]: masked LM, token-level or whole-word, 80/10/10.
//! - [`segments`]: sentence pairs for next-sentence and sentence-order prediction.
//! - [`span_corruption`]: T5's noise spans and sentinels.
//! - [`blocks`]: fixed-length blocks of a token stream, for causal LM and packed MLM.

pub mod masking;
pub mod segments;
pub mod span_corruption;

pub use masking::{Masked, Masker, MaskingConfig, IGNORE};
pub use segments::{pair_instances, PairTask, SentencePair};
pub use span_corruption::SpanCorruption;

use lingo_nn::LingoRng;

/// The random stream of example `index` in `epoch` of a run seeded `seed`: a pure function of
/// the three, so a resumed run draws the same masks, and independent streams for different
/// arguments (unlike XOR-ing salts, which collide).
pub fn example_rng(seed: u64, epoch: u64, index: u64) -> LingoRng {
    let mix = |mut z: u64| {
        // SplitMix64's finaliser.
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    LingoRng::new(mix(mix(mix(seed) ^ epoch) ^ index))
}

/// Blocks of `length` tokens cut from `docs` laid end to end with `separator` after each document
/// (GPT-2's `<|endoftext|>`, BERT's `[SEP]`), as `transformers`' `group_texts` does; the
/// remainder shorter than a block is dropped. Returns each block's start in the stream and the
/// stream itself.
pub fn blocks<'a>(
    docs: impl Iterator<Item = &'a [u32]>,
    separator: Option<u32>,
    length: usize,
) -> Vec<Vec<u32>> {
    let mut stream = Vec::new();
    for doc in docs {
        stream.extend_from_slice(doc);
        stream.extend(separator);
    }
    stream
        .chunks_exact(length.max(1))
        .map(<[u32]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_pack_documents_with_separators_and_drop_the_rest() {
        let docs: [&[u32]; 3] = [&[1, 2, 3], &[4, 5], &[6, 7, 8, 9]];
        let b = blocks(docs.iter().copied(), Some(0), 4);
        assert_eq!(b, [vec![1, 2, 3, 0], vec![4, 5, 0, 6], vec![7, 8, 9, 0]]);
        assert_eq!(blocks(docs.iter().copied(), None, 4).len(), 2);
    }

    #[test]
    fn example_streams_are_pure_and_distinct() {
        let draw = |s, e, i| example_rng(s, e, i).next_u64();
        assert_eq!(draw(1, 2, 3), draw(1, 2, 3));
        assert_ne!(draw(1, 2, 3), draw(1, 3, 2));
        assert_ne!(draw(1, 0, 0), draw(1, 1, 1));
    }
}
