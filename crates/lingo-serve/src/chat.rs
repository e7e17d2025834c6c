//! Chat messages into one prompt. A model folder's `tokenizer_config.json` may carry a Jinja
//! `chat_template` (or the folder a `chat_template.jinja`), rendered as `transformers` renders it
//! — with `messages`, `add_generation_prompt`, `bos_token` and `eos_token`. Without one, the
//! documented fallback is one `role: content` line per message and then `assistant:`; generation
//! then also stops at a new `user:` line.

use crate::error::ApiError;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// How a model turns a conversation into its prompt.
#[derive(Clone, Debug)]
pub enum ChatTemplate {
    Jinja {
        source: String,
        bos_token: String,
        eos_token: String,
    },
    Fallback,
}

impl ChatTemplate {
    /// The template of the model folder `dir`, or the fallback if it has none.
    pub fn of_folder(dir: &Path) -> Result<ChatTemplate, String> {
        let config_path = dir.join("tokenizer_config.json");
        let config: serde_json::Value = match std::fs::read_to_string(&config_path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| format!("{}: not valid JSON ({e})", config_path.display()))?,
            Err(_) => serde_json::Value::Null,
        };
        // A special token is a string or an object with `content`.
        let token = |key: &str| -> String {
            match config.get(key) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) => v
                    .get("content")
                    .and_then(|c| c.as_str())
                    .unwrap_or_default()
                    .to_string(),
                None => String::new(),
            }
        };
        let source = match config.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            // Several named templates: the one called "default".
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
            _ => std::fs::read_to_string(dir.join("chat_template.jinja")).ok(),
        };
        let Some(source) = source else {
            return Ok(ChatTemplate::Fallback);
        };
        let template = ChatTemplate::Jinja {
            source,
            bos_token: token("bos_token"),
            eos_token: token("eos_token"),
        };
        // A template that does not compile is the folder's fault: say so at load time.
        template
            .render(&[Message {
                role: "user".into(),
                content: "hi".into(),
            }])
            .map_err(|e| format!("{}: chat_template: {}", config_path.display(), e.message))?;
        Ok(template)
    }

    /// The prompt for `messages`, ready for the assistant's reply.
    pub fn render(&self, messages: &[Message]) -> Result<String, ApiError> {
        if messages.is_empty() {
            return Err(ApiError::validation(
                "field `messages`: give at least one message",
            ));
        }
        match self {
            ChatTemplate::Fallback => {
                let mut prompt = String::new();
                for m in messages {
                    prompt.push_str(&format!("{}: {}\n", m.role, m.content));
                }
                prompt.push_str("assistant:");
                Ok(prompt)
            }
            ChatTemplate::Jinja {
                source,
                bos_token,
                eos_token,
            } => {
                let mut env = minijinja::Environment::new();
                env.add_function(
                    "raise_exception",
                    |message: String| -> Result<String, minijinja::Error> {
                        Err(minijinja::Error::new(
                            minijinja::ErrorKind::InvalidOperation,
                            message,
                        ))
                    },
                );
                let template = env
                    .template_from_str(source)
                    .map_err(|e| ApiError::internal(format!("the chat template: {e}")))?;
                template
                    .render(minijinja::context! {
                        messages => messages,
                        add_generation_prompt => true,
                        bos_token => bos_token,
                        eos_token => eos_token,
                    })
                    .map_err(|e| {
                        // The template's own checks (`raise_exception`) reject the conversation.
                        ApiError::validation(format!("the chat template refused the messages: {e}"))
                    })
            }
        }
    }

    /// Text at which a reply ends, beyond the model's end-of-text token.
    pub fn stop_strings(&self) -> Vec<String> {
        match self {
            ChatTemplate::Fallback => vec!["\nuser:".into()],
            ChatTemplate::Jinja { .. } => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages() -> Vec<Message> {
        vec![
            Message {
                role: "system".into(),
                content: "Be brief.".into(),
            },
            Message {
                role: "user".into(),
                content: "Hello".into(),
            },
        ]
    }

    #[test]
    fn fallback_writes_role_lines_then_the_assistant_cue() {
        let prompt = ChatTemplate::Fallback.render(&messages()).unwrap();
        assert_eq!(prompt, "system: Be brief.\nuser: Hello\nassistant:");
        assert!(ChatTemplate::Fallback.render(&[]).is_err());
    }

    #[test]
    fn a_folder_template_renders_like_transformers() {
        let dir = tempfile::tempdir().unwrap();
        // ChatML, as Qwen's and SmolLM's tokenizer_config.json carry it.
        let config = serde_json::json!({
            "eos_token": {"content": "<|im_end|>"},
            "chat_template": "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
        });
        std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
        let template = ChatTemplate::of_folder(dir.path()).unwrap();
        let prompt = template.render(&messages()).unwrap();
        assert_eq!(
            prompt,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
        );
        let raising =
            serde_json::json!({"chat_template": "{{ raise_exception('no system role') }}"});
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            raising.to_string(),
        )
        .unwrap();
        let err = ChatTemplate::of_folder(dir.path()).unwrap_err();
        assert!(err.contains("no system role"), "{err}");
    }
}
