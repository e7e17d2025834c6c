use crate::embedding::Embedding;
use crate::params::{Init, ParamPath};
use candle_core::{bail, DType, Device, Result, Tensor};

/// Where a token is, added to its embedding.
#[derive(Clone, Debug)]
pub enum PositionalEncoding {
    /// A trained vector per position (GPT-2, BERT).
    Learned(Embedding),
    /// The fixed sines and cosines of "Attention Is All You Need"; not a parameter.
    Sinusoidal(Tensor),
}

/// `table[pos, 2i] = sin(pos / 10000^(2i/d))`, `table[pos, 2i+1] = cos(…)`, shape `[max_len, d]`.
pub fn sinusoidal_table(max_len: usize, d: usize, device: &Device) -> Result<Tensor> {
    let mut data = vec![0f32; max_len * d];
    for pos in 0..max_len {
        for i in 0..d / 2 {
            let angle = pos as f64 / 10000f64.powf(2.0 * i as f64 / d as f64);
            data[pos * d + 2 * i] = angle.sin() as f32;
            data[pos * d + 2 * i + 1] = angle.cos() as f32;
        }
    }
    Tensor::from_vec(data, (max_len, d), device)
}

impl PositionalEncoding {
    pub fn learned(p: &ParamPath, max_len: usize, d: usize, init: Init) -> Result<Self> {
        Ok(PositionalEncoding::Learned(Embedding::new(
            p, max_len, d, init,
        )?))
    }

    pub fn sinusoidal(max_len: usize, d: usize, device: &Device) -> Result<Self> {
        Ok(PositionalEncoding::Sinusoidal(sinusoidal_table(
            max_len, d, device,
        )?))
    }

    pub fn max_len(&self) -> usize {
        match self {
            PositionalEncoding::Learned(e) => e.weight.dims()[0],
            PositionalEncoding::Sinusoidal(t) => t.dims()[0],
        }
    }

    /// The encodings of positions `offset..offset + len`, `[len, d]`.
    pub fn forward(&self, offset: usize, len: usize) -> Result<Tensor> {
        if offset + len > self.max_len() {
            bail!(
                "sequence of {} positions exceeds the model's context of {}",
                offset + len,
                self.max_len()
            );
        }
        match self {
            PositionalEncoding::Learned(e) => e.weight.narrow(0, offset, len)?.to_dtype(DType::F32),
            PositionalEncoding::Sinusoidal(t) => t.narrow(0, offset, len),
        }
    }
}
