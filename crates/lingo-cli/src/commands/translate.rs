use clap::Args;
use lingo_data::read_lines;
use lingo_tasks::Translator;
use std::io::{BufRead, Write};
use std::path::PathBuf;

#[derive(Args)]
pub struct Translate {
    /// A model folder written by `lingo train seq2seq` or `lingo quickstart`, a Hugging Face T5,
    /// BART or Marian folder (with tokenizer.json), or a Hub id.
    #[arg(long)]
    model: String,
    /// Never download (also: HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    #[command(flatten)]
    quantize: super::QuantizeArg,
    /// Sentences to translate; with none and no --input, lines are read from standard input.
    sentences: Vec<String>,
    /// A file of sentences, one per line (.gz allowed).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Reference translations, line-aligned with the input: prints corpus BLEU (sacreBLEU's defaults).
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Beam width (1 = greedy); default from the model's recipe.
    #[arg(long)]
    beam: Option<usize>,
    #[arg(long)]
    max_length: Option<usize>,
    /// Text put before every input (T5's task prefixes, e.g. "summarize: "); default: the
    /// `source_prefix` of a folder `lingo finetune seq2seq` wrote.
    #[arg(long)]
    prefix: Option<String>,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
}

impl Translate {
    pub fn run(self) -> anyhow::Result<()> {
        let dir = lingo_models::hub::resolve_model(&self.model, self.offline)?;
        let mut translator = Translator::from_pretrained(lingo_tasks::Pretrained::open(
            &dir,
            &self.quantize.options(),
        )?)?;
        if let Some(prefix) = &self.prefix {
            translator.source_prefix = prefix.clone();
        }
        let sentences = match (&self.input, self.sentences.is_empty()) {
            (Some(path), _) => read_lines(path)?,
            (None, false) => self.sentences.clone(),
            (None, true) => std::io::stdin().lock().lines().collect::<Result<_, _>>()?,
        };
        let mut beam = translator.beam.clone();
        if let Some(b) = self.beam {
            beam.beam_size = b;
        }
        if let Some(m) = self.max_length {
            beam.max_length = m;
        }
        let out = translator.translate(&sentences, &beam, self.batch_size)?;
        let mut stdout = std::io::stdout().lock();
        for t in &out {
            writeln!(stdout, "{}", t.text)?;
        }
        if let Some(path) = &self.reference {
            let refs = read_lines(path)?;
            let hyps: Vec<&str> = out.iter().map(|t| t.text.as_str()).collect();
            let bleu = lingo_eval::corpus_bleu(&hyps, &[refs]).map_err(anyhow::Error::msg)?;
            eprintln!("{bleu}");
        }
        Ok(())
    }
}

#[derive(Args)]
pub struct Attention {
    /// A model folder written by `lingo train seq2seq` or `lingo quickstart`.
    #[arg(long)]
    model: PathBuf,
    /// The sentence to translate and show.
    #[arg(long)]
    sentence: String,
    /// Output path without extension: writes OUT.png and OUT.html.
    #[arg(long, default_value = "attention")]
    out: PathBuf,
    #[arg(long)]
    beam: Option<usize>,
}

impl Attention {
    pub fn run(self) -> anyhow::Result<()> {
        let translator = Translator::load(&self.model)?;
        let mut beam = translator.beam.clone();
        if let Some(b) = self.beam {
            beam.beam_size = b;
        }
        let t = translator
            .translate(std::slice::from_ref(&self.sentence), &beam, 1)?
            .remove(0);
        if t.attention.is_empty() {
            anyhow::bail!("this model has no attention (attention: none) — nothing to draw");
        }
        let title = format!("{} → {}", self.sentence, t.text);
        lingo_viz::attention_map(
            &t.source_tokens,
            &t.target_tokens,
            &t.attention,
            &self.out,
            &title,
        )?;
        println!("{}", t.text);
        println!(
            "attention map: {}.png and {}.html",
            self.out.display(),
            self.out.display()
        );
        Ok(())
    }
}
