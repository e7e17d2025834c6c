//! A linear-chain conditional random field over per-position tag scores (Lafferty et al. 2001;
//! the output layer of Lample et al. 2016's BiLSTM-CRF): trainable start, end and transition
//! scores; the negative log-likelihood through the forward algorithm in log space (differentiable,
//! over padded batches); Viterbi decoding.

use crate::params::{Init, ParamPath};
use candle_core::{bail, DType, Result, Tensor};

#[derive(Clone, Debug)]
pub struct Crf {
    pub num_tags: usize,
    /// `start[j]`: the score of a sentence starting with tag `j`.
    start: Tensor,
    /// `end[j]`: of ending with `j`.
    end: Tensor,
    /// `transitions[i·K + j]`: of tag `j` following tag `i` (`[K, K]`).
    transitions: Tensor,
}

/// `log Σ exp` along `dim`, stable (the shift carries no gradient; the result's does not need it).
fn log_sum_exp(x: &Tensor, dim: usize) -> Result<Tensor> {
    let m = x.max_keepdim(dim)?.detach();
    x.broadcast_sub(&m)?
        .exp()?
        .sum_keepdim(dim)?
        .log()?
        .add(&m)?
        .squeeze(dim)
}

impl Crf {
    /// Scores drawn from `U(−0.1, 0.1)` (PyTorch-CRF's initialisation).
    pub fn new(p: &ParamPath, num_tags: usize) -> Result<Crf> {
        if num_tags == 0 {
            bail!("a CRF needs at least one tag");
        }
        let init = Init::Uniform(0.1);
        Ok(Crf {
            num_tags,
            start: p.get("start_transitions", &[num_tags], init)?,
            end: p.get("end_transitions", &[num_tags], init)?,
            transitions: p.get("transitions", &[num_tags, num_tags], init)?,
        })
    }

    fn check(&self, emissions: &Tensor, lengths: &[usize]) -> Result<(usize, usize)> {
        let (b, t, k) = emissions.dims3()?;
        if k != self.num_tags {
            bail!("the CRF has {} tags, the emissions {k}", self.num_tags);
        }
        if lengths.len() != b || lengths.iter().any(|&l| l == 0 || l > t) {
            bail!("lengths {lengths:?} do not fit {b} sentences of at most {t} positions");
        }
        Ok((b, t))
    }

    /// `log Z` of each sentence, `[batch]`: the forward algorithm over every tag sequence.
    pub fn log_partition(&self, emissions: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let (b, t) = self.check(emissions, lengths)?;
        let dev = emissions.device();
        let k = self.num_tags;
        let mut alpha = emissions
            .narrow(1, 0, 1)?
            .squeeze(1)?
            .broadcast_add(&self.start)?;
        let trans = self.transitions.unsqueeze(0)?; // [1, K(from), K(to)]
        for s in 1..t {
            let emit = emissions.narrow(1, s, 1)?; // [B, 1, K(to)]
            let scores = alpha
                .unsqueeze(2)?
                .broadcast_add(&trans)?
                .broadcast_add(&emit)?;
            let next = log_sum_exp(&scores, 1)?;
            // Sentences already over keep their α.
            let live: Vec<u8> = lengths.iter().map(|&l| u8::from(s < l)).collect();
            let live = Tensor::from_vec(live, (b, 1), dev)?.broadcast_as((b, k))?;
            alpha = live.where_cond(&next, &alpha)?;
        }
        log_sum_exp(&alpha.broadcast_add(&self.end)?, 1)
    }

    /// The score of each given tag sequence, summed over the batch.
    pub fn gold_score(
        &self,
        emissions: &Tensor,
        tags: &[Vec<u32>],
        lengths: &[usize],
    ) -> Result<Tensor> {
        let (_, t) = self.check(emissions, lengths)?;
        let k = self.num_tags;
        let (mut emit_at, mut trans_at, mut first, mut last) = (vec![], vec![], vec![], vec![]);
        for (i, (seq, &len)) in tags.iter().zip(lengths).enumerate() {
            if seq.len() != len || seq.iter().any(|&g| g as usize >= k) {
                bail!(
                    "sentence {i}: {} tags for {len} positions, or a tag outside 0..{k}",
                    seq.len()
                );
            }
            for (s, &g) in seq.iter().enumerate() {
                emit_at.push(((i * t + s) * k) as u32 + g);
                if s > 0 {
                    trans_at.push(seq[s - 1] * k as u32 + g);
                }
            }
            first.push(seq[0]);
            last.push(seq[len - 1]);
        }
        let dev = emissions.device();
        let pick = |x: &Tensor, at: Vec<u32>| -> Result<Tensor> {
            if at.is_empty() {
                return Tensor::zeros((), DType::F32, dev);
            }
            let n = at.len();
            x.flatten_all()?
                .index_select(&Tensor::from_vec(at, n, dev)?, 0)?
                .sum_all()
        };
        pick(emissions, emit_at)?
            .add(&pick(&self.transitions, trans_at)?)?
            .add(&pick(&self.start, first)?)?
            .add(&pick(&self.end, last)?)
    }

    /// The mean negative log-likelihood of `tags` over the batch.
    pub fn loss(&self, emissions: &Tensor, tags: &[Vec<u32>], lengths: &[usize]) -> Result<Tensor> {
        let z = self.log_partition(emissions, lengths)?.sum_all()?;
        let gold = self.gold_score(emissions, tags, lengths)?;
        (z - gold)? / lengths.len() as f64
    }

    /// The best tag sequence of each sentence.
    pub fn viterbi(&self, emissions: &Tensor, lengths: &[usize]) -> Result<Vec<Vec<u32>>> {
        self.check(emissions, lengths)?;
        let k = self.num_tags;
        let emissions = emissions.to_dtype(DType::F32)?.to_vec3::<f32>()?;
        let start = self.start.to_vec1::<f32>()?;
        let end = self.end.to_vec1::<f32>()?;
        let trans = self.transitions.flatten_all()?.to_vec1::<f32>()?;
        Ok(emissions
            .iter()
            .zip(lengths)
            .map(|(e, &len)| {
                let mut score: Vec<f32> = (0..k).map(|j| start[j] + e[0][j]).collect();
                let mut back = vec![vec![0u32; k]; len];
                for s in 1..len {
                    let mut next = vec![f32::NEG_INFINITY; k];
                    for j in 0..k {
                        for i in 0..k {
                            let v = score[i] + trans[i * k + j];
                            if v > next[j] {
                                next[j] = v;
                                back[s][j] = i as u32;
                            }
                        }
                        next[j] += e[s][j];
                    }
                    score = next;
                }
                let mut best = 0;
                for j in 1..k {
                    if score[j] + end[j] > score[best] + end[best] {
                        best = j;
                    }
                }
                let mut path = vec![best as u32; len];
                for s in (1..len).rev() {
                    path[s - 1] = back[s][path[s] as usize];
                }
                path
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ParamStore;
    use candle_core::Device;

    fn emissions(b: usize, t: usize, k: usize, seed: u64) -> Result<Tensor> {
        lingo_kernels::gradcheck::random_tensor(&[b, t, k], seed)
    }

    /// Every tag sequence of one sentence with its score.
    fn enumerate(crf: &Crf, e: &[Vec<f32>], len: usize) -> Result<Vec<(Vec<u32>, f64)>> {
        let k = crf.num_tags;
        let (start, end) = (crf.start.to_vec1::<f32>()?, crf.end.to_vec1::<f32>()?);
        let trans = crf.transitions.to_vec2::<f32>()?;
        Ok((0..k.pow(len as u32))
            .map(|mut code| {
                let seq: Vec<u32> = (0..len)
                    .map(|_| {
                        let j = code % k;
                        code /= k;
                        j as u32
                    })
                    .collect();
                let mut s = start[seq[0] as usize] + end[seq[len - 1] as usize];
                for (p, &j) in seq.iter().enumerate() {
                    s += e[p][j as usize];
                    if p > 0 {
                        s += trans[seq[p - 1] as usize][j as usize];
                    }
                }
                (seq, s as f64)
            })
            .collect())
    }

    #[test]
    fn partition_gold_score_and_viterbi_match_enumeration() -> Result<()> {
        let store = ParamStore::new(3, &Device::Cpu);
        let crf = Crf::new(&store.root(), 3)?;
        let lengths = [4, 2, 1];
        let e = emissions(3, 4, 3, 9)?;
        let z = crf.log_partition(&e, &lengths)?.to_vec1::<f32>()?;
        let best = crf.viterbi(&e, &lengths)?;
        let ev = e.to_vec3::<f32>()?;
        for (i, &len) in lengths.iter().enumerate() {
            let all = enumerate(&crf, &ev[i], len)?;
            let want = all.iter().map(|x| x.1).fold(f64::NEG_INFINITY, f64::max);
            let lse = want + all.iter().map(|x| (x.1 - want).exp()).sum::<f64>().ln();
            assert!(
                (z[i] as f64 - lse).abs() < 1e-4,
                "sentence {i}: {} vs {lse}",
                z[i]
            );
            let top = all
                .iter()
                .fold(&all[0], |m, x| if x.1 > m.1 { x } else { m });
            assert_eq!(best[i], top.0, "sentence {i}");
            let one = crf.gold_score(&e.narrow(0, i, 1)?, std::slice::from_ref(&top.0), &[len])?;
            assert!((one.to_scalar::<f32>()? as f64 - top.1).abs() < 1e-4);
        }
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        let store = ParamStore::new(4, &Device::Cpu);
        let crf = Crf::new(&store.root(), 4)?;
        let lengths = [5, 3];
        let tags = vec![vec![0, 3, 1, 1, 2], vec![2, 2, 0]];
        let e = candle_core::Var::from_tensor(&emissions(2, 5, 4, 5)?)?;
        let loss = |crf: &Crf| -> Result<f64> {
            Ok(crf
                .loss(e.as_tensor(), &tags, &lengths)?
                .to_scalar::<f32>()? as f64)
        };
        let grads = crf.loss(e.as_tensor(), &tags, &lengths)?.backward()?;
        let mut vars: Vec<(String, candle_core::Var)> = store.named();
        vars.push(("emissions".into(), e.clone()));
        let loss_now = || loss(&crf);
        lingo_kernels::gradcheck::check_directions(
            &vars,
            &grads,
            &loss_now,
            1e-2,
            (1e-3, 1e-2),
            50,
        )?;
        // The likelihood of a sequence is at most 1.
        assert!(loss(&crf)? > 0.0);
        Ok(())
    }
}
