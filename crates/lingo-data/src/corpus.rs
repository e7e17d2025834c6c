//! Raw text corpora for pre-training: one or more files (plain or `.gz`), read as a stream of
//! documents — blank-line-separated blocks of lines (BERT's `create_pretraining_data` layout: one
//! sentence per line, a blank line between documents) or one document per line — so a corpus
//! larger than memory is never held at once.
//!
//! [`TokenCache`] tokenises a corpus once into three flat files (token ids, sentence starts,
//! document starts) that later runs memory-map: the second run starts at once, and the operating
//! system, not the process, decides how much of the corpus sits in memory.

use crate::tokenizer::Tokenizer;
use crate::{DataError, Result};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Where one document ends and the next begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DocumentBreak {
    /// A line holding only whitespace ends a document; each other line is a sentence.
    #[default]
    BlankLine,
    /// Every non-blank line is a document of one sentence.
    Line,
}

/// Text files read as documents of sentences.
#[derive(Clone, Debug)]
pub struct Corpus {
    pub files: Vec<PathBuf>,
    pub documents: DocumentBreak,
}

impl Corpus {
    /// A corpus of `files`, each of which must exist.
    pub fn new(files: Vec<PathBuf>, documents: DocumentBreak) -> Result<Self> {
        if files.is_empty() {
            return Err(DataError::Invalid("no corpus files given".into()));
        }
        for f in &files {
            if !f.is_file() {
                return Err(DataError::File {
                    path: f.clone(),
                    message: "no such file".into(),
                });
            }
        }
        Ok(Corpus { files, documents })
    }

    /// Every line of every file in order, without its line break; each file's end reads as a
    /// blank line.
    pub fn lines(&self) -> Lines {
        Lines {
            files: self.files.clone(),
            next_file: 0,
            current: None,
        }
    }

    /// Every document as its non-blank lines (sentences), in order.
    pub fn documents(&self) -> Documents {
        Documents {
            lines: self.lines(),
            mode: self.documents,
            done: false,
        }
    }
}

/// Opens a text file, decompressing it if its name ends in `.gz`.
fn open(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    let file = File::open(path).map_err(|e| DataError::File {
        path: path.into(),
        message: format!("cannot open ({e})"),
    })?;
    let reader: Box<dyn Read + Send> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    Ok(Box::new(BufReader::with_capacity(1 << 20, reader)))
}

/// The lines of a corpus, streamed; an error names the file and line.
pub struct Lines {
    files: Vec<PathBuf>,
    next_file: usize,
    /// The open file, its path and the number of lines read from it.
    current: Option<(Box<dyn BufRead + Send>, PathBuf, usize)>,
}

impl Iterator for Lines {
    type Item = Result<String>;

    fn next(&mut self) -> Option<Result<String>> {
        if self.current.is_none() {
            let path = self.files.get(self.next_file)?.clone();
            self.next_file += 1;
            match open(&path) {
                Ok(reader) => self.current = Some((reader, path, 0)),
                Err(e) => return Some(Err(e)),
            }
        }
        let (reader, path, line) = self.current.as_mut().expect("opened above");
        let mut buf = String::new();
        match reader.read_line(&mut buf) {
            // The end of a file ends its last document: a blank line stands for it.
            Ok(0) => {
                self.current = None;
                Some(Ok(String::new()))
            }
            Ok(_) => {
                *line += 1;
                let end = buf.trim_end_matches(['\n', '\r']).len();
                buf.truncate(end);
                Some(Ok(buf))
            }
            Err(e) => {
                let message = format!("line {}: cannot read ({e})", *line + 1);
                let path = path.clone();
                self.current = None;
                self.next_file = self.files.len();
                Some(Err(DataError::File { path, message }))
            }
        }
    }
}

/// The documents of a corpus, streamed.
pub struct Documents {
    lines: Lines,
    mode: DocumentBreak,
    done: bool,
}

impl Iterator for Documents {
    type Item = Result<Vec<String>>;

    fn next(&mut self) -> Option<Result<Vec<String>>> {
        let mut sentences = Vec::new();
        while !self.done {
            match self.lines.next() {
                None => self.done = true,
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Some(Ok(line)) if line.trim().is_empty() => {
                    if !sentences.is_empty() {
                        return Some(Ok(sentences));
                    }
                }
                Some(Ok(line)) => {
                    sentences.push(line);
                    if self.mode == DocumentBreak::Line {
                        return Some(Ok(sentences));
                    }
                }
            }
        }
        (!sentences.is_empty()).then_some(Ok(sentences))
    }
}

/// What a cache was built from; a cache whose key differs is rebuilt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct CacheKey {
    /// Each file with its size and modification time (seconds since the epoch).
    files: Vec<(String, u64, u64)>,
    documents: DocumentBreak,
    /// A hash of `tokenizer.json`.
    tokenizer: String,
}

impl CacheKey {
    fn of(corpus: &Corpus, tokenizer: &Tokenizer) -> Result<Self> {
        let mut files = Vec::new();
        for f in &corpus.files {
            let meta = std::fs::metadata(f).map_err(|e| DataError::File {
                path: f.clone(),
                message: e.to_string(),
            })?;
            let modified = (meta.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            let name = std::fs::canonicalize(f).unwrap_or_else(|_| f.clone());
            files.push((name.display().to_string(), meta.len(), modified));
        }
        Ok(CacheKey {
            files,
            documents: corpus.documents,
            tokenizer: format!("{:016x}", fnv1a(tokenizer.to_json()?.as_bytes())),
        })
    }
}

/// 64-bit FNV-1a: a stable hash (unlike `std`'s) for cache keys.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

const TOKENS_FILE: &str = "tokens.u32";
const SENTENCES_FILE: &str = "sentences.u64";
const DOCUMENTS_FILE: &str = "documents.u64";
const KEY_FILE: &str = "key.json";

/// A tokenised corpus on disk, memory-mapped: every token id in order, where each sentence starts
/// (an index into the ids, with the end appended) and where each document starts (an index into
/// the sentences, with the end appended). Ids are the tokenizer's without special tokens.
pub struct TokenCache {
    tokens: memmap2::Mmap,
    sentences: memmap2::Mmap,
    documents: memmap2::Mmap,
    pub dir: PathBuf,
}

/// Documents tokenised together (in parallel) before their ids are appended to the cache.
const CHUNK_DOCUMENTS: usize = 2048;

impl TokenCache {
    /// Opens the cache of `corpus` under `tokenizer` in `dir`, building it first if it is missing
    /// or was built from other files or another tokenizer. `progress` is told the documents done.
    pub fn open_or_build(
        corpus: &Corpus,
        tokenizer: &Tokenizer,
        dir: &Path,
        progress: &dyn Fn(usize),
    ) -> Result<Self> {
        Self::keyed(
            corpus,
            tokenizer,
            dir,
            &CacheKey::of(corpus, tokenizer)?,
            progress,
        )
    }

    /// The cache of `corpus` under `tokenizer` in its own folder under `root` — one per corpus
    /// and tokenizer, so every run on them shares it — opened, or built first.
    pub fn in_root(
        root: &Path,
        corpus: &Corpus,
        tokenizer: &Tokenizer,
        progress: &dyn Fn(usize),
    ) -> Result<Self> {
        let key = CacheKey::of(corpus, tokenizer)?;
        let text = serde_json::to_string(&key).expect("plain data");
        let dir = root.join(format!("{:016x}", fnv1a(text.as_bytes())));
        Self::keyed(corpus, tokenizer, &dir, &key, progress)
    }

    fn keyed(
        corpus: &Corpus,
        tokenizer: &Tokenizer,
        dir: &Path,
        key: &CacheKey,
        progress: &dyn Fn(usize),
    ) -> Result<Self> {
        if !Self::holds(dir, key) {
            Self::build(corpus, tokenizer, dir, key, progress)?;
        }
        Self::open(dir)
    }

    /// Whether `dir` holds a finished cache built with `key`.
    fn holds(dir: &Path, key: &CacheKey) -> bool {
        let existing = std::fs::read_to_string(dir.join(KEY_FILE))
            .ok()
            .and_then(|t| serde_json::from_str::<CacheKey>(&t).ok());
        existing.as_ref() == Some(key)
    }

    /// Tokenises `corpus` into `dir`, written beside it and renamed into place, so an interrupted
    /// build leaves no half-written cache behind. Processes building the same cache at once (the
    /// ranks of a distributed run on one machine) each write their own copy; the first renamed
    /// into place is kept.
    fn build(
        corpus: &Corpus,
        tokenizer: &Tokenizer,
        dir: &Path,
        key: &CacheKey,
        progress: &dyn Fn(usize),
    ) -> Result<()> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |e: std::io::Error| DataError::File {
                path: path.clone(),
                message: e.to_string(),
            }
        };
        let parent = dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        let tmp = parent.join(format!(
            ".{}.building.{}.{:?}",
            dir.file_name()
                .map_or("cache".into(), |n| n.to_string_lossy()),
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let writer = |name: &str| -> Result<BufWriter<File>> {
            let p = tmp.join(name);
            Ok(BufWriter::new(File::create(&p).map_err(io(&p))?))
        };
        let (mut tokens, mut sentences, mut documents) = (
            writer(TOKENS_FILE)?,
            writer(SENTENCES_FILE)?,
            writer(DOCUMENTS_FILE)?,
        );
        let (mut n_tokens, mut n_sentences, mut n_documents) = (0u64, 0u64, 0usize);
        let mut pending: Vec<Vec<String>> = Vec::with_capacity(CHUNK_DOCUMENTS);
        let mut docs = corpus.documents().peekable();
        while docs.peek().is_some() {
            pending.clear();
            while pending.len() < CHUNK_DOCUMENTS {
                match docs.next() {
                    Some(d) => pending.push(d?),
                    None => break,
                }
            }
            let lines: Vec<&str> = pending.iter().flatten().map(String::as_str).collect();
            let encoded = tokenizer.encode_many(&lines)?;
            let mut next = encoded.iter();
            for doc in &pending {
                documents
                    .write_all(&n_sentences.to_le_bytes())
                    .map_err(io(&tmp))?;
                for _ in doc {
                    let ids = next.next().expect("one encoding per line");
                    if ids.is_empty() {
                        continue;
                    }
                    sentences
                        .write_all(&n_tokens.to_le_bytes())
                        .map_err(io(&tmp))?;
                    for id in ids {
                        tokens.write_all(&id.to_le_bytes()).map_err(io(&tmp))?;
                    }
                    n_tokens += ids.len() as u64;
                    n_sentences += 1;
                }
            }
            n_documents += pending.len();
            progress(n_documents);
        }
        if n_tokens == 0 {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(DataError::Invalid(format!(
                "the corpus ({}) holds no text",
                corpus
                    .files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        sentences
            .write_all(&n_tokens.to_le_bytes())
            .map_err(io(&tmp))?;
        documents
            .write_all(&n_sentences.to_le_bytes())
            .map_err(io(&tmp))?;
        for mut w in [tokens, sentences, documents] {
            w.flush().map_err(io(&tmp))?;
        }
        let key_path = tmp.join(KEY_FILE);
        std::fs::write(
            &key_path,
            serde_json::to_string_pretty(key).expect("plain data"),
        )
        .map_err(io(&key_path))?;
        if Self::holds(dir, key) {
            // Another process finished first.
            let _ = std::fs::remove_dir_all(&tmp);
            return Ok(());
        }
        let _ = std::fs::remove_dir_all(dir);
        match std::fs::rename(&tmp, dir) {
            Err(_) if Self::holds(dir, key) => {
                let _ = std::fs::remove_dir_all(&tmp);
                Ok(())
            }
            done => done.map_err(io(dir)),
        }
    }

    /// Maps a cache built earlier.
    pub fn open(dir: &Path) -> Result<Self> {
        let map = |name: &str, width: usize| -> Result<memmap2::Mmap> {
            let path = dir.join(name);
            let file = File::open(&path).map_err(|e| DataError::File {
                path: path.clone(),
                message: format!("cannot open ({e})"),
            })?;
            // SAFETY: the cache files are written once, then renamed into place, and never
            // modified while mapped (a rebuild writes new files and replaces the folder).
            let m = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| DataError::File {
                path: path.clone(),
                message: format!("cannot map ({e})"),
            })?;
            if m.len() % width != 0 {
                return Err(DataError::File {
                    path,
                    message: "truncated: rebuild the cache".into(),
                });
            }
            Ok(m)
        };
        Ok(TokenCache {
            tokens: map(TOKENS_FILE, 4)?,
            sentences: map(SENTENCES_FILE, 8)?,
            documents: map(DOCUMENTS_FILE, 8)?,
            dir: dir.into(),
        })
    }

    /// Every token id, in order.
    pub fn tokens(&self) -> &[u32] {
        cast(&self.tokens)
    }

    /// The number of documents.
    pub fn num_documents(&self) -> usize {
        cast::<u64>(&self.documents).len().saturating_sub(1)
    }

    /// The sentences of document `d`, each as its token ids.
    pub fn document(&self, d: usize) -> Vec<&[u32]> {
        let docs: &[u64] = cast(&self.documents);
        let starts: &[u64] = cast(&self.sentences);
        let tokens = self.tokens();
        (docs[d] as usize..docs[d + 1] as usize)
            .map(|s| &tokens[starts[s] as usize..starts[s + 1] as usize])
            .collect()
    }

    /// The token range `[start, end)` documents `docs` span.
    pub fn span(&self, docs: std::ops::Range<usize>) -> std::ops::Range<usize> {
        let d: &[u64] = cast(&self.documents);
        let s: &[u64] = cast(&self.sentences);
        s[d[docs.start] as usize] as usize..s[d[docs.end] as usize] as usize
    }
}

/// A little-endian file of `T`s as a slice (the cache is written on this machine).
fn cast<T: plain::Int>(bytes: &[u8]) -> &[T] {
    let width = std::mem::size_of::<T>();
    assert_eq!(
        bytes.as_ptr() as usize % std::mem::align_of::<T>(),
        0,
        "mapped files are page-aligned"
    );
    // SAFETY: the pointer is aligned (checked above; mappings start on a page), the length is a
    // whole number of `T`s (checked when mapped), and every bit pattern is a valid `T`.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast(), bytes.len() / width) }
}

mod plain {
    /// Plain integers: every bit pattern is a value.
    pub trait Int: Copy {}
    impl Int for u32 {}
    impl Int for u64 {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn documents_are_blank_line_blocks_or_lines() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a.txt", "one.\ntwo.\n \nthree.\n\n\nfour.");
        let gz = dir.path().join("b.txt.gz");
        let mut enc =
            flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
        enc.write_all(b"five.\r\nsix.\r\n").unwrap();
        enc.finish().unwrap();
        let blocks = Corpus::new(vec![a.clone(), gz.clone()], DocumentBreak::BlankLine)?;
        let docs: Vec<Vec<String>> = blocks.documents().collect::<Result<_>>()?;
        assert_eq!(
            docs,
            [
                vec!["one.", "two."],
                vec!["three."],
                vec!["four."],
                vec!["five.", "six."]
            ]
        );
        let lines = Corpus::new(vec![a, gz], DocumentBreak::Line)?;
        assert_eq!(lines.documents().count(), 6);
        assert!(
            Corpus::new(vec![dir.path().join("missing.txt")], DocumentBreak::Line)
                .unwrap_err()
                .to_string()
                .contains("missing.txt")
        );
        Ok(())
    }

    #[test]
    fn the_cache_maps_what_it_tokenised_and_rebuilds_when_the_corpus_changes() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let text = "a b c\nd e\n\nf g h i\n";
        let file = write(dir.path(), "c.txt", text);
        let tok = Tokenizer::train(crate::TokenizerKind::Word { vocab_size: 20 }, text)?;
        let corpus = Corpus::new(vec![file.clone()], DocumentBreak::BlankLine)?;
        let cache_dir = dir.path().join("cache");
        let cache = TokenCache::open_or_build(&corpus, &tok, &cache_dir, &|_| {})?;
        assert_eq!(cache.num_documents(), 2);
        assert_eq!(cache.tokens().len(), 9);
        let first = cache.document(0);
        assert_eq!(first.len(), 2);
        assert_eq!(first[1], tok.encode("d e")?.as_slice());
        assert_eq!(cache.span(1..2), 5..9);
        // Same corpus: the cache is reused as it is.
        let built = std::fs::metadata(cache_dir.join(TOKENS_FILE)).unwrap();
        let again = TokenCache::open_or_build(&corpus, &tok, &cache_dir, &|_| {
            panic!("rebuilt an up-to-date cache")
        })?;
        assert_eq!(again.tokens(), cache.tokens());
        assert_eq!(
            std::fs::metadata(cache_dir.join(TOKENS_FILE))
                .unwrap()
                .modified()
                .unwrap(),
            built.modified().unwrap()
        );
        // A longer corpus: rebuilt.
        std::fs::write(&file, format!("{text}\nj\n")).unwrap();
        let grown = TokenCache::open_or_build(&corpus, &tok, &cache_dir, &|_| {})?;
        assert_eq!(grown.num_documents(), 3);
        Ok(())
    }

    #[test]
    fn an_empty_corpus_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "empty.txt", "\n \n");
        let tok = Tokenizer::train(crate::TokenizerKind::Char, "ab").unwrap();
        let corpus = Corpus::new(vec![file], DocumentBreak::BlankLine).unwrap();
        let err = TokenCache::open_or_build(&corpus, &tok, &dir.path().join("c"), &|_| {})
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("empty.txt") && err.contains("no text"),
            "{err}"
        );
        assert!(!dir.path().join("c").exists());
    }
}
