//! Pipelines over pretrained BERT-family encoders: `fill-mask`, `classify`, `ner`, `qa`, `embed`.

use clap::{Args, ValueEnum};
use lingo_tasks::encoder::{EncoderPipeline, Pooling};

/// Which model to load and how.
#[derive(Args)]
pub struct ModelArg {
    /// Model folder (config.json, safetensors weights, tokenizer.json) or a Hugging Face Hub id.
    #[arg(long)]
    model: String,
    /// Never download: use the folder or the Hugging Face cache only (also: HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    #[command(flatten)]
    quantize: super::QuantizeArg,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Under `mpirun -np N`: split every layer's attention heads and feed-forward neurons over
    /// the ranks (Megatron tensor parallelism; the heads must divide by N). Every rank computes
    /// the same result; rank 0 prints it.
    #[arg(long)]
    tensor_parallel: bool,
    /// Set on the ranks but 0 of a tensor-parallel run: they compute, and print nothing.
    #[arg(skip)]
    silent: std::cell::Cell<bool>,
}

impl ModelArg {
    fn load(&self) -> anyhow::Result<EncoderPipeline> {
        let dir = lingo_models::hub::resolve_model(&self.model, self.offline)?;
        let pretrained = lingo_tasks::Pretrained::open(&dir, &self.quantize.options())?;
        let mut pipeline = EncoderPipeline::from_pretrained(pretrained)?;
        if self.tensor_parallel {
            let (prints, split) = super::tensor_parallel_world()?;
            self.silent.set(!prints);
            if let Some(s) = split {
                pipeline.model.tensor_parallel(s.rank, s.ranks, &s.reduce)?;
            }
        }
        Ok(pipeline)
    }

    fn print<T: serde::Serialize>(
        &self,
        value: &T,
        text: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        if self.silent.get() {
            return Ok(());
        }
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            println!("{}", text());
        }
        Ok(())
    }
}

#[derive(Args)]
pub struct FillMask {
    #[command(flatten)]
    model: ModelArg,
    /// Text with one [MASK] (or <mask>) token.
    text: String,
    #[arg(long, default_value_t = 5)]
    top_k: usize,
}

impl FillMask {
    pub fn run(self) -> anyhow::Result<()> {
        let fills = self.model.load()?.fill_mask(&self.text, self.top_k)?;
        self.model.print(&fills, || {
            fills
                .iter()
                .map(|f| format!("{:.4}  {:<12} {}", f.score, f.token_str, f.sequence))
                .collect::<Vec<_>>()
                .join("\n")
        })
    }
}

#[derive(Args)]
pub struct Classify {
    #[command(flatten)]
    model: ModelArg,
    /// Texts to classify.
    #[arg(required = true)]
    texts: Vec<String>,
}

/// One label and its probability, as `lingo classify` prints them.
#[derive(serde::Serialize)]
struct Scored {
    label: String,
    score: f32,
}

impl Classify {
    pub fn run(self) -> anyhow::Result<()> {
        let dir = lingo_models::hub::resolve_model(&self.model.model, self.model.offline)?;
        if lingo_tasks::RnnClassifierPipeline::is_one(&dir) {
            return self.run_recurrent(&dir);
        }
        let pipeline = self.model.load()?;
        for text in &self.texts {
            let labels = pipeline.classify(text)?;
            self.model.print(&labels, || {
                let top: Vec<String> = labels
                    .iter()
                    .map(|l| format!("{} {:.4}", l.label, l.score))
                    .collect();
                format!("{text}\n  {}", top.join(", "))
            })?;
        }
        Ok(())
    }
}

impl Classify {
    /// A recurrent classifier `lingo train classify` wrote.
    fn run_recurrent(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        if self.model.tensor_parallel {
            anyhow::bail!("--tensor-parallel splits Transformer layers, not recurrent classifiers");
        }
        if self.model.quantize.quantize().is_some() {
            anyhow::bail!(
                "--int8 and --dtype apply to Transformer models, not recurrent classifiers"
            );
        }
        let pipeline = lingo_tasks::RnnClassifierPipeline::load(dir)?;
        for text in &self.texts {
            let labels: Vec<Scored> = pipeline
                .scores(text)?
                .into_iter()
                .map(|(label, score)| Scored { label, score })
                .collect();
            self.model.print(&labels, || {
                let top: Vec<String> = (labels.iter())
                    .map(|l| format!("{} {:.4}", l.label, l.score))
                    .collect();
                format!("{text}\n  {}", top.join(", "))
            })?;
        }
        Ok(())
    }
}

#[derive(Args)]
pub struct Ner {
    #[command(flatten)]
    model: ModelArg,
    /// Texts to tag.
    #[arg(required = true)]
    texts: Vec<String>,
}

impl Ner {
    pub fn run(self) -> anyhow::Result<()> {
        let pipeline = self.model.load()?;
        for text in &self.texts {
            let entities = pipeline.ner(text)?;
            self.model.print(&entities, || {
                let lines: Vec<String> = entities
                    .iter()
                    .map(|e| {
                        format!(
                            "  {:<8} {:.4}  {:?} [{}..{}]",
                            e.entity_group, e.score, e.word, e.start, e.end
                        )
                    })
                    .collect();
                format!("{text}\n{}", lines.join("\n"))
            })?;
        }
        Ok(())
    }
}

#[derive(Args)]
pub struct Qa {
    #[command(flatten)]
    model: ModelArg,
    #[arg(long)]
    question: String,
    #[arg(long)]
    context: String,
}

impl Qa {
    pub fn run(self) -> anyhow::Result<()> {
        let answer = self.model.load()?.answer(&self.question, &self.context)?;
        self.model.print(&answer, || {
            format!(
                "{:?} (score {:.4}, characters {}..{})",
                answer.answer, answer.score, answer.start, answer.end
            )
        })
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum PoolingArg {
    Mean,
    Cls,
    Max,
}

#[derive(Args)]
pub struct Embed {
    #[command(flatten)]
    model: ModelArg,
    /// Texts to embed.
    #[arg(required = true)]
    texts: Vec<String>,
    #[arg(long, value_enum, default_value = "mean")]
    pooling: PoolingArg,
}

impl Embed {
    pub fn run(self) -> anyhow::Result<()> {
        let pooling = match self.pooling {
            PoolingArg::Mean => Pooling::Mean,
            PoolingArg::Cls => Pooling::Cls,
            PoolingArg::Max => Pooling::Max,
        };
        let texts: Vec<&str> = self.texts.iter().map(String::as_str).collect();
        let vectors = self.model.load()?.embed(&texts, pooling)?;
        self.model.print(&vectors, || {
            vectors
                .iter()
                .zip(&texts)
                .map(|(v, t)| {
                    let head: Vec<String> = v.iter().take(6).map(|x| format!("{x:.4}")).collect();
                    format!("{t}\n  [{} …] ({} dims)", head.join(", "), v.len())
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
    }
}
