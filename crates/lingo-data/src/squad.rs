//! Extractive question answering data in the SQuAD v1.1 layout: `data` → articles → `paragraphs` →
//! `context` and `qas`, each question with `id`, `question` and `answers` (`text`, `answer_start`
//! in characters). The file may be gzip-compressed. Every answer is checked against its context, and
//! an error names the article, paragraph and question.

use crate::parallel::{file_err, read_file};
use crate::Result;
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;

/// One question about a context, with its reference answers.
#[derive(Clone, Debug, PartialEq)]
pub struct SquadQuestion {
    pub id: String,
    /// Leading white space removed, as `transformers`' `run_qa.py` does (it only costs tokens).
    pub question: String,
    /// Shared by the questions of one paragraph.
    pub context: Arc<str>,
    pub answers: Vec<SquadAnswer>,
}

/// A reference answer: its text and where it starts in the context, in bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct SquadAnswer {
    pub text: String,
    pub start: usize,
}

impl SquadAnswer {
    /// The byte just past the answer.
    pub fn end(&self) -> usize {
        self.start + self.text.len()
    }
}

#[derive(Deserialize)]
struct File {
    data: Vec<Article>,
}

#[derive(Deserialize)]
struct Article {
    #[serde(default)]
    title: String,
    paragraphs: Vec<Paragraph>,
}

#[derive(Deserialize)]
struct Paragraph {
    context: String,
    qas: Vec<Qa>,
}

#[derive(Deserialize)]
struct Qa {
    id: String,
    question: String,
    #[serde(default)]
    answers: Vec<Answer>,
}

#[derive(Deserialize)]
struct Answer {
    text: String,
    answer_start: usize,
}

/// Every question of `path`; with `need_answers`, a question without an answer is an error (it
/// cannot be trained on).
pub fn read_squad(path: &Path, need_answers: bool) -> Result<Vec<SquadQuestion>> {
    let text = read_file(path)?;
    let file: File = serde_json::from_str(&text)
        .map_err(|e| file_err(path, format!("not SQuAD v1.1 JSON ({e})")))?;
    let mut out = Vec::new();
    for (a, article) in file.data.iter().enumerate() {
        for (p, paragraph) in article.paragraphs.iter().enumerate() {
            let context: Arc<str> = paragraph.context.as_str().into();
            for (q, qa) in paragraph.qas.iter().enumerate() {
                let at = |m: String| {
                    file_err(
                        path,
                        format!(
                            "data[{a}] (`{}`) paragraphs[{p}] qas[{q}] (id {}): {m}",
                            article.title, qa.id
                        ),
                    )
                };
                if need_answers && qa.answers.is_empty() {
                    return Err(at("the question has no answer".into()));
                }
                let answers = qa
                    .answers
                    .iter()
                    .map(|ans| {
                        let start = byte_offset(&context, ans.answer_start).ok_or_else(|| {
                            at(format!(
                                "answer_start {} is beyond the context's {} characters",
                                ans.answer_start,
                                context.chars().count()
                            ))
                        })?;
                        if !context[start..].starts_with(&ans.text) {
                            let found: String =
                                context[start..].chars().take(ans.text.chars().count()).collect();
                            return Err(at(format!(
                                "answer `{}` does not match the context at answer_start {} (`{found}`)",
                                ans.text, ans.answer_start
                            )));
                        }
                        Ok(SquadAnswer {
                            text: ans.text.clone(),
                            start,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                out.push(SquadQuestion {
                    id: qa.id.clone(),
                    question: qa.question.trim_start().to_string(),
                    context: context.clone(),
                    answers,
                });
            }
        }
    }
    if out.is_empty() {
        return Err(file_err(path, "no questions".into()));
    }
    Ok(out)
}

/// The byte offset of character `chars` of `text` (SQuAD counts characters, Rust slices bytes).
fn byte_offset(text: &str, chars: usize) -> Option<usize> {
    text.char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(text.len()))
        .nth(chars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, json: serde_json::Value) -> std::path::PathBuf {
        let path = dir.join("squad.json");
        std::fs::write(&path, json.to_string()).expect("write");
        path
    }

    #[test]
    fn reads_answers_as_byte_spans_and_names_a_bad_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let context = "Zürich is in Switzerland.";
        let good = serde_json::json!({"data": [{"title": "T", "paragraphs": [{"context": context,
            "qas": [{"id": "q1", "question": "  Where?", "answers": [{"text": "Switzerland", "answer_start": 13}]}]}]}]});
        let qs = read_squad(&write(dir.path(), good), true).expect("read");
        let a = &qs[0].answers[0];
        // "ü" is two bytes: character 13 is byte 14.
        assert_eq!((a.start, &context[a.start..a.end()]), (14, "Switzerland"));
        assert_eq!(qs[0].question, "Where?");

        let bad = serde_json::json!({"data": [{"title": "T", "paragraphs": [{"context": context,
            "qas": [{"id": "q1", "question": "Where?", "answers": [{"text": "Switzerland", "answer_start": 12}]}]}]}]});
        let err = read_squad(&write(dir.path(), bad), true)
            .expect_err("offset")
            .to_string();
        assert!(
            err.contains("squad.json") && err.contains("id q1") && err.contains("does not match"),
            "{err}"
        );
        let none = serde_json::json!({"data": [{"paragraphs": [{"context": context,
            "qas": [{"id": "q2", "question": "Why?", "answers": []}]}]}]});
        let path = write(dir.path(), none);
        assert!(read_squad(&path, true).is_err());
        assert_eq!(read_squad(&path, false).expect("eval").len(), 1);
    }
}
