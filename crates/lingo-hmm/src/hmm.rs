//! A discrete hidden Markov model in log space (Rabiner 1989): forward, backward, Viterbi and
//! posterior decoding, supervised estimation with add-k smoothing, and Baum–Welch.

use rand::{Rng, SeedableRng};

/// `log(Σ exp(x))`, exact for all-`−∞` inputs.
pub fn log_sum_exp(xs: impl IntoIterator<Item = f64> + Clone) -> f64 {
    let max = xs.clone().into_iter().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + xs.into_iter().map(|x| (x - max).exp()).sum::<f64>().ln()
}

/// States `0..states` emit symbols `0..symbols`. All probabilities are natural logs.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Hmm {
    pub states: usize,
    pub symbols: usize,
    /// `log π[i]`.
    pub start: Vec<f64>,
    /// `log a[i → j]` at `i·states + j`.
    pub trans: Vec<f64>,
    /// `log b[i emits v]` at `i·symbols + v`.
    pub emit: Vec<f64>,
}

/// Expected (or observed) counts, from which [`Hmm::from_counts`] re-estimates.
struct Counts {
    start: Vec<f64>,
    trans: Vec<f64>,
    emit: Vec<f64>,
}

impl Counts {
    fn new(s: usize, v: usize) -> Counts {
        Counts {
            start: vec![0.0; s],
            trans: vec![0.0; s * s],
            emit: vec![0.0; s * v],
        }
    }
}

/// Normalised logs of `counts + k`, row by row (`width` a row).
fn log_rows(counts: &[f64], width: usize, k: f64) -> Vec<f64> {
    counts
        .chunks(width)
        .flat_map(|row| {
            let total: f64 = row.iter().sum::<f64>() + k * width as f64;
            row.iter().map(move |&c| {
                if total > 0.0 {
                    ((c + k) / total).ln()
                } else {
                    -(width as f64).ln()
                }
            })
        })
        .collect()
}

impl Hmm {
    fn from_counts(c: &Counts, states: usize, symbols: usize, k: f64) -> Hmm {
        Hmm {
            states,
            symbols,
            start: log_rows(&c.start, states, k),
            trans: log_rows(&c.trans, states, k),
            emit: log_rows(&c.emit, symbols, k),
        }
    }

    /// Maximum-likelihood estimates from sequences with known states, each count plus `k`
    /// (add-k smoothing; `k = 0` is plain relative frequency).
    pub fn supervised(
        data: &[(Vec<usize>, Vec<usize>)],
        states: usize,
        symbols: usize,
        k: f64,
    ) -> Hmm {
        Hmm::supervised_with(data, [], states, symbols, k)
    }

    /// [`Hmm::supervised`], with extra `(state, symbol)` emissions counted beside the sequences'.
    pub fn supervised_with(
        data: &[(Vec<usize>, Vec<usize>)],
        extra_emissions: impl IntoIterator<Item = (usize, usize)>,
        states: usize,
        symbols: usize,
        k: f64,
    ) -> Hmm {
        let mut c = Counts::new(states, symbols);
        for (s, o) in extra_emissions {
            c.emit[s * symbols + o] += 1.0;
        }
        for (obs, path) in data {
            for (t, (&o, &s)) in obs.iter().zip(path).enumerate() {
                if t == 0 {
                    c.start[s] += 1.0;
                } else {
                    c.trans[path[t - 1] * states + s] += 1.0;
                }
                c.emit[s * symbols + o] += 1.0;
            }
        }
        Hmm::from_counts(&c, states, symbols, k)
    }

    /// Random row-stochastic parameters from `seed` (Baum–Welch's starting point).
    pub fn random(states: usize, symbols: usize, seed: u64) -> Hmm {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut draw =
            |n: usize| -> Vec<f64> { (0..n).map(|_| rng.random_range(0.5..1.5)).collect() };
        let c = Counts {
            start: draw(states),
            trans: draw(states * states),
            emit: draw(states * symbols),
        };
        Hmm::from_counts(&c, states, symbols, 0.0)
    }

    fn a(&self, i: usize, j: usize) -> f64 {
        self.trans[i * self.states + j]
    }

    fn b(&self, i: usize, o: usize) -> f64 {
        self.emit[i * self.symbols + o]
    }

    /// `α[t][i] = log p(o_1..o_t, s_t = i)` (`T × states`, row-major) and `log p(o)`.
    pub fn forward(&self, obs: &[usize]) -> (Vec<f64>, f64) {
        let s = self.states;
        let mut alpha = vec![f64::NEG_INFINITY; obs.len() * s];
        for (t, &o) in obs.iter().enumerate() {
            for j in 0..s {
                let into = if t == 0 {
                    self.start[j]
                } else {
                    let prev = &alpha[(t - 1) * s..t * s];
                    log_sum_exp((0..s).map(|i| prev[i] + self.a(i, j)))
                };
                alpha[t * s + j] = into + self.b(j, o);
            }
        }
        let loglik = match obs.len() {
            0 => 0.0,
            n => log_sum_exp(alpha[(n - 1) * s..].iter().copied()),
        };
        (alpha, loglik)
    }

    /// `β[t][i] = log p(o_{t+1}..o_T | s_t = i)`.
    pub fn backward(&self, obs: &[usize]) -> Vec<f64> {
        let s = self.states;
        let n = obs.len();
        let mut beta = vec![0.0; n * s];
        for t in (0..n.saturating_sub(1)).rev() {
            for i in 0..s {
                let next = &beta[(t + 1) * s..(t + 2) * s];
                beta[t * s + i] =
                    log_sum_exp((0..s).map(|j| self.a(i, j) + self.b(j, obs[t + 1]) + next[j]));
            }
        }
        beta
    }

    /// `log p(s_t = i | o)` for every `t` and `i`.
    pub fn posteriors(&self, obs: &[usize]) -> Vec<f64> {
        let (alpha, loglik) = self.forward(obs);
        let beta = self.backward(obs);
        alpha
            .iter()
            .zip(&beta)
            .map(|(a, b)| a + b - loglik)
            .collect()
    }

    /// The most probable state at each position (minimum Bayes risk for per-position accuracy).
    pub fn posterior_decode(&self, obs: &[usize]) -> Vec<usize> {
        let post = self.posteriors(obs);
        post.chunks(self.states.max(1)).map(argmax).collect()
    }

    /// The most probable state sequence and its joint log probability with `obs`.
    pub fn viterbi(&self, obs: &[usize]) -> (Vec<usize>, f64) {
        let s = self.states;
        let n = obs.len();
        if n == 0 {
            return (Vec::new(), 0.0);
        }
        let mut delta = vec![f64::NEG_INFINITY; n * s];
        let mut back = vec![0usize; n * s];
        for (j, d) in delta[..s].iter_mut().enumerate() {
            *d = self.start[j] + self.b(j, obs[0]);
        }
        for t in 1..n {
            for j in 0..s {
                let (best, score) = (0..s)
                    .map(|i| (i, delta[(t - 1) * s + i] + self.a(i, j)))
                    .fold((0, f64::NEG_INFINITY), |m, x| if x.1 > m.1 { x } else { m });
                delta[t * s + j] = score + self.b(j, obs[t]);
                back[t * s + j] = best;
            }
        }
        let last = argmax(&delta[(n - 1) * s..]);
        let score = delta[(n - 1) * s + last];
        let mut path = vec![last; n];
        for t in (1..n).rev() {
            path[t - 1] = back[t * s + path[t]];
        }
        (path, score)
    }

    /// One Baum–Welch (EM) step over `data`: expected counts under the current parameters, then
    /// their relative frequencies. Returns the data's log-likelihood *before* the step, which EM
    /// never lets decrease.
    pub fn baum_welch_step(&mut self, data: &[Vec<usize>]) -> f64 {
        let (s, v) = (self.states, self.symbols);
        let mut c = Counts::new(s, v);
        let mut total = 0.0;
        for obs in data.iter().filter(|o| !o.is_empty()) {
            let (alpha, loglik) = self.forward(obs);
            let beta = self.backward(obs);
            total += loglik;
            for (t, &o) in obs.iter().enumerate() {
                for i in 0..s {
                    let g = (alpha[t * s + i] + beta[t * s + i] - loglik).exp();
                    c.emit[i * v + o] += g;
                    if t == 0 {
                        c.start[i] += g;
                    }
                    if t + 1 < obs.len() {
                        let o1 = obs[t + 1];
                        for j in 0..s {
                            c.trans[i * s + j] += (alpha[t * s + i]
                                + self.a(i, j)
                                + self.b(j, o1)
                                + beta[(t + 1) * s + j]
                                - loglik)
                                .exp();
                        }
                    }
                }
            }
        }
        *self = Hmm::from_counts(&c, s, v, 0.0);
        total
    }

    /// Baum–Welch until the log-likelihood gains less than `tolerance` or after `iterations`
    /// steps; the log-likelihood trace, one value per step plus the final one.
    pub fn baum_welch(
        &mut self,
        data: &[Vec<usize>],
        iterations: usize,
        tolerance: f64,
    ) -> Vec<f64> {
        let mut trace = Vec::new();
        for _ in 0..iterations {
            trace.push(self.baum_welch_step(data));
            if let [.., a, b] = trace[..] {
                if b - a < tolerance {
                    break;
                }
            }
        }
        let last = data.iter().map(|o| self.forward(o).1).sum();
        trace.push(last);
        trace
    }
}

pub(crate) fn argmax(xs: &[f64]) -> usize {
    (0..xs.len()).fold(0, |m, i| if xs[i] > xs[m] { i } else { m })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(seed: u64) -> Hmm {
        Hmm::random(3, 4, seed)
    }

    /// Every state sequence, with its joint log probability.
    fn enumerate(m: &Hmm, obs: &[usize]) -> Vec<(Vec<usize>, f64)> {
        let n = obs.len();
        (0..m.states.pow(n as u32))
            .map(|mut code| {
                let path: Vec<usize> = (0..n)
                    .map(|_| {
                        let s = code % m.states;
                        code /= m.states;
                        s
                    })
                    .collect();
                let mut lp = m.start[path[0]] + m.b(path[0], obs[0]);
                for t in 1..n {
                    lp += m.a(path[t - 1], path[t]) + m.b(path[t], obs[t]);
                }
                (path, lp)
            })
            .collect()
    }

    #[test]
    fn forward_viterbi_and_posteriors_match_brute_force() {
        for seed in 0..5 {
            let m = tiny(seed);
            let obs = [0, 3, 1, 1, 2, 0];
            let all = enumerate(&m, &obs);
            let total = log_sum_exp(all.iter().map(|x| x.1));
            let (_, loglik) = m.forward(&obs);
            assert!((loglik - total).abs() < 1e-10, "{loglik} vs {total}");
            // Backward gives the same likelihood from the other end.
            let beta = m.backward(&obs);
            let from_start = log_sum_exp((0..3).map(|i| m.start[i] + m.b(i, obs[0]) + beta[i]));
            assert!((from_start - total).abs() < 1e-10);
            let best = all
                .iter()
                .fold(&all[0], |m, x| if x.1 > m.1 { x } else { m });
            let (path, score) = m.viterbi(&obs);
            assert_eq!(&path, &best.0);
            assert!((score - best.1).abs() < 1e-10);
            let post = m.posteriors(&obs);
            for t in 0..obs.len() {
                for i in 0..3 {
                    let want = log_sum_exp(all.iter().filter(|x| x.0[t] == i).map(|x| x.1)) - total;
                    assert!((post[t * 3 + i] - want).abs() < 1e-10);
                }
            }
        }
    }

    #[test]
    fn baum_welch_never_lowers_the_likelihood() {
        // Data sampled from one model, fitted from another's random start.
        let truth = tiny(42);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut draw = |logp: &[f64]| {
            let mut u: f64 = rng.random();
            for (i, &l) in logp.iter().enumerate() {
                u -= l.exp();
                if u <= 0.0 {
                    return i;
                }
            }
            logp.len() - 1
        };
        let data: Vec<Vec<usize>> = (0..60)
            .map(|_| {
                let mut s = draw(&truth.start);
                (0..12)
                    .map(|_| {
                        let o = draw(&truth.emit[s * 4..(s + 1) * 4]);
                        s = draw(&truth.trans[s * 3..(s + 1) * 3]);
                        o
                    })
                    .collect()
            })
            .collect();
        let mut m = tiny(1);
        let trace = m.baum_welch(&data, 40, 0.0);
        assert_eq!(trace.len(), 41);
        for w in trace.windows(2) {
            assert!(w[1] >= w[0] - 1e-9, "likelihood fell: {w:?}");
        }
        assert!(trace[40] > trace[0] + 1.0, "{trace:?}");
        for row in m.trans.chunks(3).chain(m.emit.chunks(4)) {
            assert!((log_sum_exp(row.iter().copied())).abs() < 1e-9);
        }
    }

    #[test]
    fn supervised_estimates_are_smoothed_relative_frequencies() {
        let data = vec![(vec![0, 1, 0], vec![0, 1, 1]), (vec![1], vec![1])];
        let m = Hmm::supervised(&data, 2, 2, 1.0);
        // Starts: state 0 once, state 1 once → (1+1)/(2+2).
        assert!((m.start[0].exp() - 0.5).abs() < 1e-12);
        // From 1: 1→1 once → (1+1)/(1+2); from 0: 0→1 once → (0+1)/(1+2).
        assert!((m.a(1, 1).exp() - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.a(0, 0).exp() - 1.0 / 3.0).abs() < 1e-12);
        // State 1 emits 1 twice, 0 once → (2+1)/(3+2).
        assert!((m.b(1, 1).exp() - 3.0 / 5.0).abs() < 1e-12);
    }
}
