use clap::Args;
use lingo_generate::SamplingConfig;
use lingo_nn::LingoRng;
use lingo_tasks::LanguageModel;
use std::io::Write;

#[derive(Args)]
pub struct Generate {
    /// A model folder written by `lingo train lm`, a Hugging Face GPT-2 folder, or a Hub id.
    #[arg(long)]
    model: String,
    /// Never download (also: HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    #[command(flatten)]
    quantize: super::QuantizeArg,
    /// Text to continue.
    #[arg(long)]
    prompt: String,
    /// How many tokens to add.
    #[arg(long, default_value_t = 200)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 picks the most likely token every time.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Sample only among the k most likely tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// Sample only among the most likely tokens holding this much probability.
    #[arg(long)]
    top_p: Option<f32>,
    /// Greedy decoding (same as --temperature 0).
    #[arg(long)]
    greedy: bool,
    /// Divide the logits of tokens already in the text by this (1 = off; 1.2 is common).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Beam search with this many beams (deterministic: no sampling, no repetition penalty); the
    /// best continuation is printed when the search ends.
    #[arg(long, default_value_t = 1)]
    num_beams: usize,
    /// Beam ranking: log-probability / new tokens^this (with --num-beams).
    #[arg(long, default_value_t = 1.0)]
    length_penalty: f32,
    /// Keep going past the model's end-of-text token.
    #[arg(long)]
    ignore_eos: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Under `mpirun -np N`: split every layer's attention heads and feed-forward neurons over
    /// the ranks (Megatron tensor parallelism; the heads must divide by N). Every rank computes
    /// the same tokens; rank 0 prints them.
    #[arg(long)]
    tensor_parallel: bool,
}

impl Generate {
    pub fn run(self) -> anyhow::Result<()> {
        let dir = lingo_models::hub::resolve_model(&self.model, self.offline)?;
        let mut lm = LanguageModel::from_pretrained(lingo_tasks::Pretrained::open(
            &dir,
            &self.quantize.options(),
        )?)?;
        let mut root = true;
        if self.tensor_parallel {
            let (prints, split) = super::tensor_parallel_world()?;
            root = prints;
            if let Some(s) = split {
                lm.model.tensor_parallel(s.rank, s.ranks, &s.reduce)?;
            }
        }
        let cfg = SamplingConfig {
            temperature: if self.greedy { 0.0 } else { self.temperature },
            top_k: self.top_k,
            top_p: self.top_p,
            max_new_tokens: self.max_new_tokens,
            stop_tokens: lm.eos.filter(|_| !self.ignore_eos).into_iter().collect(),
            repetition_penalty: self.repetition_penalty,
        };
        cfg.validate().map_err(anyhow::Error::msg)?;
        let mut out: Box<dyn Write> = match root {
            true => Box::new(std::io::stdout().lock()),
            false => Box::new(std::io::sink()),
        };
        if self.num_beams > 1 {
            if self.top_k.is_some() || self.top_p.is_some() || self.repetition_penalty != 1.0 {
                anyhow::bail!("--num-beams searches deterministically: drop --top-k, --top-p and --repetition-penalty");
            }
            let beam = lingo_generate::BeamConfig {
                beam_size: self.num_beams,
                max_length: self.max_new_tokens,
                length_penalty: self.length_penalty,
                // As `transformers`' default: stop once no live beam can beat the finished ones.
                early_stopping: false,
                ..Default::default()
            };
            let text = lm.generate_beam(&self.prompt, &beam, self.ignore_eos)?;
            writeln!(out, "{}{text}", self.prompt)?;
            return Ok(());
        }
        write!(out, "{}", self.prompt)?;
        lm.generate(&self.prompt, &cfg, &mut LingoRng::new(self.seed), |piece| {
            let _ = write!(out, "{piece}");
            let _ = out.flush();
        })?;
        writeln!(out)?;
        Ok(())
    }
}
