//! The models being served: each loaded once through [`Pretrained::load`] and handed to the thread
//! that runs it, with what the routes need to validate requests without touching the model.

use crate::chat::ChatTemplate;
use crate::engine::Engine;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::workers::{spawn_encoder, spawn_seq2seq, Batching, EncoderJob, Seq2SeqJob};
use lingo_data::Tokenizer;
use lingo_generate::BeamConfig;
use lingo_models::auto::{AutoModel, LoadOptions};
use lingo_models::bert::Head;
use lingo_tasks::encoder::{EncoderPipeline, Pooling};
use lingo_tasks::{LanguageModel, Pretrained, Translator};
use serde::Serialize;
use std::path::Path;
use std::sync::{mpsc, Arc};

/// `NAME=DIR|HUB_ID`, or just the folder or Hub id (named after its last path part).
#[derive(Clone, Debug)]
pub struct ModelSpec {
    pub name: String,
    pub source: String,
    /// Load it with int8 linear layers (`lingo serve --int8`).
    pub quantize: Option<lingo_models::Quantization>,
}

impl std::str::FromStr for ModelSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, source) = match s.split_once('=') {
            Some((name, source)) => (name.trim().to_string(), source.trim().to_string()),
            None => {
                let source = s.trim().trim_end_matches('/');
                let name = if Path::new(source).is_dir() {
                    Path::new(source)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| source.to_string())
                } else {
                    source.to_string()
                };
                (name, source.to_string())
            }
        };
        if name.is_empty() || source.is_empty() {
            return Err(format!("`{s}`: give a model as DIR, HUB_ID or NAME=DIR"));
        }
        Ok(ModelSpec {
            name,
            source,
            quantize: None,
        })
    }
}

/// A task route a model may serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    Completions,
    Chat,
    Generate,
    Embed,
    Classify,
    FillMask,
    Ner,
    Qa,
    Attention,
    Translate,
    Summarize,
    Tokenize,
}

impl Task {
    /// What the route does, for errors ("… cannot classify").
    pub fn verb(self) -> &'static str {
        match self {
            Task::Completions | Task::Chat | Task::Generate => "generate text",
            Task::Embed => "embed text",
            Task::Classify => "classify text",
            Task::FillMask => "fill masks",
            Task::Ner => "find named entities",
            Task::Qa => "answer questions",
            Task::Attention => "show attention",
            Task::Translate => "translate",
            Task::Summarize => "summarise",
            Task::Tokenize => "tokenize",
        }
    }
}

pub enum Runner {
    Decoder {
        engine: Engine,
        chat: ChatTemplate,
        /// End-of-text token: generation stops there; an empty prompt starts from it.
        eos: Option<u32>,
    },
    Encoder {
        jobs: mpsc::Sender<EncoderJob>,
        head: Head,
        /// Embeddings are scaled to unit length (a sentence-transformers `Normalize` module).
        normalize: bool,
    },
    Seq2Seq {
        jobs: mpsc::Sender<Seq2SeqJob>,
        translator: Arc<Translator>,
        /// Decoding settings of the folder (`generation_config.json` or the recipe).
        beam: BeamConfig,
        /// `task_specific_params.summarization.prefix` (T5's `summarize: `).
        summary_prefix: String,
    },
}

pub struct ServedModel {
    pub name: String,
    /// `bert`, `gpt2`, `t5`, … as `config.json` names it.
    pub family: String,
    pub tokenizer: Tokenizer,
    /// Longest input the model's positions take (`None`: no limit of its own).
    pub max_positions: Option<usize>,
    pub runner: Runner,
}

impl ServedModel {
    pub fn tasks(&self) -> Vec<Task> {
        let mut tasks = match &self.runner {
            Runner::Decoder { .. } => vec![Task::Completions, Task::Chat, Task::Generate],
            Runner::Encoder { head, .. } => {
                let mut t = vec![Task::Embed, Task::Attention];
                t.extend(match head {
                    Head::SequenceClassification => Some(Task::Classify),
                    Head::MaskedLm | Head::PreTraining => Some(Task::FillMask),
                    Head::TokenClassification => Some(Task::Ner),
                    Head::QuestionAnswering => Some(Task::Qa),
                    Head::Base | Head::ReplacedToken => None,
                });
                t
            }
            Runner::Seq2Seq { .. } => vec![Task::Translate, Task::Summarize],
        };
        tasks.push(Task::Tokenize);
        tasks
    }

    /// `text`'s token ids as the model sees them (with its special tokens, for encoders).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ApiError> {
        let ids = match &self.runner {
            Runner::Decoder { .. } => self.tokenizer.encode(text),
            Runner::Encoder { .. } => self.tokenizer.encode_input(text).map(|e| e.ids),
            Runner::Seq2Seq { translator, .. } => {
                return translator.encode_source(text).map_err(ApiError::from)
            }
        };
        ids.map_err(|e| ApiError::validation(format!("tokenizing: {e}")))
    }
}

pub struct Registry {
    pub models: Vec<Arc<ServedModel>>,
}

impl Registry {
    /// Loads every model and starts its thread.
    pub fn load(
        specs: &[ModelSpec],
        batching: Batching,
        metrics: &Arc<Metrics>,
    ) -> Result<Registry, String> {
        let mut models = Vec::new();
        for spec in specs {
            if models
                .iter()
                .any(|m: &Arc<ServedModel>| m.name == spec.name)
            {
                return Err(format!(
                    "two models are called `{}`: name them with NAME=DIR",
                    spec.name
                ));
            }
            let model = load_one(spec, batching, metrics)
                .map_err(|e| format!("model `{}` ({}): {e}", spec.name, spec.source))?;
            models.push(Arc::new(model));
        }
        Ok(Registry { models })
    }

    /// The model a request names, or the first that can do `task`.
    pub fn pick(&self, name: Option<&str>, task: Task) -> Result<Arc<ServedModel>, ApiError> {
        match name {
            Some(name) => {
                let model = self.models.iter().find(|m| m.name == name).ok_or_else(|| {
                    ApiError::not_found(format!(
                        "no model called `{name}`; this server has: {}",
                        self.names()
                    ))
                })?;
                if !model.tasks().contains(&task) {
                    return Err(ApiError::validation(format!(
                        "model `{name}` (a {}) cannot {}",
                        model.family,
                        task.verb()
                    )));
                }
                Ok(model.clone())
            }
            None => self
                .models
                .iter()
                .find(|m| m.tasks().contains(&task))
                .cloned()
                .ok_or_else(|| {
                    ApiError::validation(format!(
                        "no model on this server can {} (models: {})",
                        task.verb(),
                        self.names()
                    ))
                }),
        }
    }

    fn names(&self) -> String {
        let names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
        names.join(", ")
    }
}

fn load_one(
    spec: &ModelSpec,
    batching: Batching,
    metrics: &Arc<Metrics>,
) -> Result<ServedModel, String> {
    let options = LoadOptions {
        quantize: spec.quantize,
        ..LoadOptions::default()
    };
    let pretrained = Pretrained::load(&spec.source, &options).map_err(|e| e.to_string())?;
    let dir = pretrained.dir.clone();
    let family = pretrained
        .config
        .get("model_type")
        .and_then(|t| t.as_str())
        .unwrap_or(pretrained.model.family())
        .to_string();
    let tokenizer = pretrained.tokenizer.clone();
    match &pretrained.model {
        AutoModel::Encoder(bert) => {
            let head = bert.head;
            let max_positions = Some(bert.config.max_position_embeddings);
            let pooling = pooling_of_folder(&dir)?;
            let normalize = normalizes(&dir);
            let pipeline =
                EncoderPipeline::from_pretrained(pretrained).map_err(|e| e.to_string())?;
            let jobs = spawn_encoder(pipeline, pooling, &spec.name, batching, metrics.clone());
            Ok(ServedModel {
                name: spec.name.clone(),
                family,
                tokenizer,
                max_positions,
                runner: Runner::Encoder {
                    jobs,
                    head,
                    normalize,
                },
            })
        }
        AutoModel::Gpt(_) => {
            let chat = ChatTemplate::of_folder(&dir)?;
            let lm = LanguageModel::from_pretrained(pretrained).map_err(|e| e.to_string())?;
            let max_positions = Some(lingo_models::CausalLm::context_length(&lm.model));
            let engine = Engine::spawn(Box::new(lm.model), &spec.name, metrics.clone());
            Ok(ServedModel {
                name: spec.name.clone(),
                family,
                tokenizer,
                max_positions,
                runner: Runner::Decoder {
                    engine,
                    chat,
                    eos: lm.eos,
                },
            })
        }
        _ => {
            let summary_prefix = pretrained
                .config
                .pointer("/task_specific_params/summarization/prefix")
                .and_then(|p| p.as_str())
                .unwrap_or_default()
                .to_string();
            let translator =
                Arc::new(Translator::from_pretrained(pretrained).map_err(|e| e.to_string())?);
            let jobs = spawn_seq2seq(translator.clone(), &spec.name, batching, metrics.clone());
            Ok(ServedModel {
                name: spec.name.clone(),
                family,
                tokenizer: translator.source_tokenizer.clone(),
                max_positions: translator.max_source_length,
                runner: Runner::Seq2Seq {
                    jobs,
                    beam: translator.beam.clone(),
                    translator,
                    summary_prefix,
                },
            })
        }
    }
}

/// A sentence-transformers folder's pooling (`1_Pooling/config.json`); mean pooling otherwise.
/// Normalisation (`2_Normalize` in `modules.json`) is [`normalizes`]'s to find.
fn pooling_of_folder(dir: &Path) -> Result<Pooling, String> {
    let path = dir.join("1_Pooling/config.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(Pooling::Mean);
    };
    let config: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not valid JSON ({e})", path.display()))?;
    let on = |key: &str| config.get(key).and_then(|v| v.as_bool()) == Some(true);
    Ok(if on("pooling_mode_cls_token") {
        Pooling::Cls
    } else if on("pooling_mode_max_tokens") {
        Pooling::Max
    } else {
        Pooling::Mean
    })
}

/// Whether a sentence-transformers folder normalises its embeddings (a `Normalize` module).
fn normalizes(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("modules.json"))
        .map(|t| t.contains("sentence_transformers.models.Normalize"))
        .unwrap_or(false)
}
