//! Loading a BERT WordPiece tokenizer and packing texts into `[CLS] … [SEP]` ids.

use std::path::{Path, PathBuf};

use bertlab_hub::{HubOptions, RepoRef};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::{AddedToken, ModelWrapper, NormalizerWrapper, PreTokenizerWrapper};

use crate::encoded::{EncodedTexts, IdStore};
use crate::error::{io_err, preview, Result, TokenizeError};
use crate::fast::{FastWordPiece, Scratch};
use crate::max_len::{check_max_len, longest_max_len};
use crate::truncation::{pack_into, Truncation};

/// Texts per parallel work item: small enough to balance two threads over uneven review
/// lengths, large enough that scratch buffers are reused many times.
const CHUNK: usize = 64;

/// `model_max_length` values at or above this are HF's "no limit" sentinel (`int(1e30)`).
const NO_LIMIT_SENTINEL: u64 = 1 << 40;

/// A BERT WordPiece tokenizer that packs texts as `[CLS] tokens [SEP]`.
///
/// Built on the `tokenizers` engine (the one python `transformers` uses); any truncation or
/// padding stored in `tokenizer.json` is switched off, because the caller decides the length.
/// For the standard BERT pipeline (BertNormalizer → BertPreTokenizer → WordPiece) a faster
/// ids-only path with identical output is used; see [`WordPieceTokenizer::with_fast_path`].
#[derive(Debug, Clone)]
pub struct WordPieceTokenizer {
    engine: tokenizers::Tokenizer,
    fast: Option<FastWordPiece>,
    use_fast: bool,
    cls_id: u32,
    sep_id: u32,
    pad_id: u32,
    vocab_size: usize,
    /// One more than the largest id, which decides the stored id width.
    id_bound: usize,
    model_max_length: Option<usize>,
    max_positions: Option<usize>,
    fingerprint: [u8; 32],
    source: PathBuf,
}

/// The files a tokenizer is built from.
enum Files {
    /// `tokenizer.json` (+ `tokenizer_config.json` for special-token names and the max length).
    Json { tokenizer: PathBuf, config: Option<PathBuf> },
    /// `vocab.txt` (+ `tokenizer_config.json` for casing, accents, CJK and special tokens).
    Vocab { vocab: PathBuf, config: Option<PathBuf> },
}

/// What `tokenizer_config.json` says that matters here.
#[derive(Debug)]
struct TokenizerConfig {
    cls: String,
    sep: String,
    pad: String,
    unk: String,
    mask: String,
    do_lower_case: bool,
    strip_accents: Option<bool>,
    tokenize_chinese_chars: bool,
    model_max_length: Option<usize>,
}

impl TokenizerConfig {
    fn read(path: Option<&Path>) -> Result<(TokenizerConfig, Option<Vec<u8>>)> {
        let mut config = TokenizerConfig {
            cls: "[CLS]".into(),
            sep: "[SEP]".into(),
            pad: "[PAD]".into(),
            unk: "[UNK]".into(),
            mask: "[MASK]".into(),
            do_lower_case: true,
            strip_accents: None,
            tokenize_chinese_chars: true,
            model_max_length: None,
        };
        let Some(path) = path else { return Ok((config, None)) };
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        let bad = |message: String| TokenizeError::InvalidConfig { path: path.to_path_buf(), message };
        let json: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let obj = json.as_object().ok_or_else(|| bad("expected a JSON object".into()))?;
        // Special tokens are strings, or `{"content": "...", ...}` objects in older files.
        let token = |key: &str, slot: &mut String| -> Result<()> {
            match obj.get(key) {
                None | Some(serde_json::Value::Null) => Ok(()),
                Some(serde_json::Value::String(s)) => {
                    *slot = s.clone();
                    Ok(())
                }
                Some(v) => match v.get("content").and_then(|c| c.as_str()) {
                    Some(s) => {
                        *slot = s.to_string();
                        Ok(())
                    }
                    None => {
                        Err(bad(format!("`{key}` must be a string or an object with `content`, got {v}")))
                    }
                },
            }
        };
        token("cls_token", &mut config.cls)?;
        token("sep_token", &mut config.sep)?;
        token("pad_token", &mut config.pad)?;
        token("unk_token", &mut config.unk)?;
        token("mask_token", &mut config.mask)?;
        let flag = |key: &str| -> Result<Option<bool>> {
            match obj.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::Bool(b)) => Ok(Some(*b)),
                Some(v) => Err(bad(format!("`{key}` must be true, false or null, got {v}"))),
            }
        };
        config.do_lower_case = flag("do_lower_case")?.unwrap_or(true);
        config.strip_accents = flag("strip_accents")?;
        config.tokenize_chinese_chars = flag("tokenize_chinese_chars")?.unwrap_or(true);
        config.model_max_length = match obj.get("model_max_length") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) if v.as_u64().is_some_and(|n| n < crate::MIN_MAX_LEN as u64) => {
                return Err(bad(format!(
                    "`model_max_length` is {v}: no room for a token between [CLS] and [SEP] (at least {})",
                    crate::MIN_MAX_LEN
                )))
            }
            Some(v) if v.as_u64().is_some_and(|n| n < NO_LIMIT_SENTINEL) => v.as_u64().map(|n| n as usize),
            Some(v) if v.is_number() => None, // int(1e30) or a float: HF's "unlimited"
            Some(v) => return Err(bad(format!("`model_max_length` must be a number, got {v}"))),
        };
        Ok((config, Some(bytes)))
    }
}

fn fingerprint_update(hasher: &mut Sha256, name: &str, bytes: &[u8]) {
    hasher.update((name.len() as u64).to_le_bytes());
    hasher.update(name.as_bytes());
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

impl WordPieceTokenizer {
    /// Load the tokenizer of a model: a local snapshot directory or a Hub id (downloaded into
    /// the HF cache, or read from it when offline).
    ///
    /// `tokenizer.json` is preferred; without it, `vocab.txt` (+ `tokenizer_config.json`)
    /// builds the BERT tokenizer `transformers` would build from the same files.
    pub fn from_repo(repo: &RepoRef, hub: &HubOptions) -> Result<Self> {
        // Optional: special-token names and model_max_length; absent in some repositories.
        let config = repo.file("tokenizer_config.json", hub).ok();
        match repo.file("tokenizer.json", hub) {
            Ok(tokenizer) => Self::load(Files::Json { tokenizer, config }),
            Err(json_err) => match repo.file("vocab.txt", hub) {
                Ok(vocab) => Self::load(Files::Vocab { vocab, config }),
                Err(vocab_err) => Err(TokenizeError::MissingFiles {
                    model: repo.display_name(),
                    tokenizer_json: json_err.to_string(),
                    vocab_txt: vocab_err.to_string(),
                }),
            },
        }
    }

    /// Load the tokenizer files of a local directory (see [`WordPieceTokenizer::from_repo`]).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        Self::from_repo(&RepoRef::Local(dir.to_path_buf()), &HubOptions::default())
    }

    /// Load `tokenizer.json`, with an optional `tokenizer_config.json`.
    pub fn from_tokenizer_json(tokenizer: &Path, config: Option<&Path>) -> Result<Self> {
        Self::load(Files::Json { tokenizer: tokenizer.into(), config: config.map(Into::into) })
    }

    /// Build from `vocab.txt`, with an optional `tokenizer_config.json`.
    pub fn from_vocab_txt(vocab: &Path, config: Option<&Path>) -> Result<Self> {
        Self::load(Files::Vocab { vocab: vocab.into(), config: config.map(Into::into) })
    }

    fn load(files: Files) -> Result<Self> {
        let mut hasher = Sha256::new();
        let (mut engine, config, source) = match files {
            Files::Json { tokenizer, config } => {
                let bytes = std::fs::read(&tokenizer).map_err(io_err(&tokenizer))?;
                fingerprint_update(&mut hasher, "tokenizer.json", &bytes);
                let engine = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| {
                    // Valid JSON the library cannot read is another file under the name (its
                    // position in the text would only confuse).
                    let message = match serde_json::from_slice::<serde_json::Value>(&bytes) {
                        Ok(json) if json.get("model").is_none() => {
                            "valid JSON but no tokenizer: it has no `model` (a `tokenizers` file, as \
                             `tokenizer.save(path)` writes, has `model`, `normalizer`, `pre_tokenizer`, …)"
                                .to_string()
                        }
                        _ => e.to_string(),
                    };
                    TokenizeError::InvalidTokenizerFile { path: tokenizer.clone(), message }
                })?;
                let (config, config_bytes) = TokenizerConfig::read(config.as_deref())?;
                if let Some(b) = config_bytes {
                    fingerprint_update(&mut hasher, "tokenizer_config.json", &b);
                }
                (engine, config, tokenizer)
            }
            Files::Vocab { vocab, config } => {
                let bytes = std::fs::read(&vocab).map_err(io_err(&vocab))?;
                fingerprint_update(&mut hasher, "vocab.txt", &bytes);
                let (config, config_bytes) = TokenizerConfig::read(config.as_deref())?;
                if let Some(b) = config_bytes {
                    fingerprint_update(&mut hasher, "tokenizer_config.json", &b);
                }
                let engine = build_from_vocab(&vocab, &bytes, &config)?;
                (engine, config, vocab)
            }
        };
        // bertlab decides the length; MiniLM's tokenizer.json pins truncation and padding to 128.
        engine.with_truncation(None).map_err(|e| TokenizeError::InvalidTokenizerFile {
            path: source.clone(),
            message: e.to_string(),
        })?;
        engine.with_padding(None);

        let id = |role: &'static str, token: &str| {
            engine.token_to_id(token).ok_or_else(|| TokenizeError::MissingSpecialToken {
                role,
                token: token.to_string(),
                path: source.clone(),
            })
        };
        let cls_id = id("cls", &config.cls)?;
        let sep_id = id("sep", &config.sep)?;
        let pad_id = id("pad", &config.pad)?;
        let vocab = engine.get_vocab(true);
        let id_bound = vocab.values().map(|&i| i as usize + 1).max().unwrap_or(0);
        let vocab_size = engine.get_vocab_size(true);

        let added: Vec<String> = engine.get_added_tokens_decoder().into_values().map(|t| t.content).collect();
        let fast = match (engine.get_model(), engine.get_normalizer(), engine.get_pre_tokenizer()) {
            (
                ModelWrapper::WordPiece(model),
                Some(NormalizerWrapper::BertNormalizer(normalizer)),
                Some(PreTokenizerWrapper::BertPreTokenizer(_)),
            ) => FastWordPiece::new(model, normalizer, added.iter().map(String::as_str)),
            _ => None,
        };
        Ok(WordPieceTokenizer {
            engine,
            fast,
            use_fast: true,
            cls_id,
            sep_id,
            pad_id,
            vocab_size,
            id_bound,
            model_max_length: config.model_max_length,
            max_positions: None,
            fingerprint: hasher.finalize().into(),
            source,
        })
    }

    /// Also refuse `max_len` above `max_positions` (the model's `max_position_embeddings`).
    pub fn with_max_positions(mut self, max_positions: usize) -> Self {
        self.max_positions = Some(max_positions);
        self
    }

    /// Use (default) or bypass the ids-only fast path. Both give the same ids; bypassing it
    /// is for measuring the engine and for parity tests.
    pub fn with_fast_path(mut self, enabled: bool) -> Self {
        self.use_fast = enabled;
        self
    }

    /// True when encoding uses the ids-only fast path (standard BERT pipeline, enabled).
    pub fn uses_fast_path(&self) -> bool {
        self.use_fast && self.fast.is_some()
    }

    /// The id of `[CLS]` (or the config's `cls_token`).
    pub fn cls_id(&self) -> u32 {
        self.cls_id
    }

    /// The id of `[SEP]` (or the config's `sep_token`).
    pub fn sep_id(&self) -> u32 {
        self.sep_id
    }

    /// The id of `[PAD]` (or the config's `pad_token`), for the batcher.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Number of entries in the vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// One more than the largest id this tokenizer can produce, added tokens included: the
    /// rows a model's word-embedding table needs (`bertlab_models::check_tokenizer_fits`).
    /// Equal to [`Self::vocab_size`] unless the vocabulary skips ids.
    pub fn id_bound(&self) -> usize {
        self.id_bound
    }

    /// The id of `token`, if in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.engine.token_to_id(token)
    }

    /// The token of `id`, if any.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.engine.id_to_token(id)
    }

    /// SHA-256 over the tokenizer files read (`tokenizer.json` or `vocab.txt`, and
    /// `tokenizer_config.json`), for cache keys.
    pub fn files_fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// The main file the tokenizer was built from (`tokenizer.json` or `vocab.txt`).
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The tokenizer's own limit on `max_len` (`model_max_length` in `tokenizer_config.json`;
    /// `None` when absent or HF's "no limit" sentinel).
    pub fn model_max_length(&self) -> Option<usize> {
        self.model_max_length
    }

    /// The largest allowed `max_len`, with where it comes from, if known: the tighter of
    /// [`Self::with_max_positions`] and [`Self::model_max_length`] ([`crate::longest_max_len`]).
    pub fn max_len_limit(&self) -> Option<(usize, &'static str)> {
        longest_max_len(self.max_positions, self.model_max_length).map(|l| (l.tokens, l.source.as_str()))
    }

    /// Check that `max_len` leaves room for `[CLS]` and `[SEP]` and fits the model
    /// ([`crate::check_max_len`] with the positions given to [`Self::with_max_positions`]);
    /// errors name the tokenizer's directory, as the tokenizer does not know the model's name.
    pub fn check_max_len(&self, max_len: usize) -> Result<()> {
        let dir = self.source.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(&self.source);
        check_max_len(&dir.display().to_string(), max_len, self.max_positions, self.model_max_length)?;
        Ok(())
    }

    /// The WordPiece ids of `text` without special tokens or truncation, appended to `out`.
    fn word_piece_into(
        &self,
        text: &str,
        row: usize,
        scratch: &mut Scratch,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        if self.use_fast {
            if let Some(fast) = &self.fast {
                if fast.encode(text, scratch, out).is_some() {
                    return Ok(());
                }
            }
        }
        let encoding = self.engine.encode_fast(text, false).map_err(|e| TokenizeError::Encode {
            row,
            preview: preview(text),
            message: e.to_string(),
        })?;
        out.extend_from_slice(encoding.get_ids());
        Ok(())
    }

    /// The WordPiece ids of `text`: no special tokens, no truncation.
    pub fn word_pieces(&self, text: &str) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        self.word_piece_into(text, 0, &mut Scratch::default(), &mut out)?;
        Ok(out)
    }

    /// `[CLS] tokens [SEP]` for one text, at most `max_len` ids, unpadded.
    ///
    /// Empty text gives `[CLS] [SEP]`. With [`Truncation::Head`] the ids equal
    /// `transformers`' `tokenizer(text, truncation=True, max_length=max_len)["input_ids"]`.
    pub fn encode(&self, text: &str, max_len: usize, truncation: Truncation) -> Result<Vec<u32>> {
        self.check_max_len(max_len)?;
        let tokens = self.word_pieces(text)?;
        let mut out = Vec::with_capacity(max_len.min(tokens.len() + 2));
        pack_into(truncation, &tokens, self.cls_id, self.sep_id, max_len, &mut out);
        Ok(out)
    }

    /// Encode many texts in parallel (rayon), in order, into compact storage; `progress` draws
    /// a bar on stderr.
    pub fn encode_all<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        max_len: usize,
        truncation: Truncation,
        progress: bool,
    ) -> Result<EncodedTexts> {
        self.check_max_len(max_len)?;
        let bar = progress_bar(texts.len(), progress, "tokenizing");
        let parts = texts
            .par_chunks(CHUNK)
            .enumerate()
            .map(|(chunk_index, chunk)| {
                let mut scratch = Scratch::default();
                let (mut tokens, mut packed) = (Vec::new(), Vec::new());
                let mut ids = IdStore::for_vocab(self.id_bound);
                let mut lens = Vec::with_capacity(chunk.len());
                for (j, text) in chunk.iter().enumerate() {
                    tokens.clear();
                    self.word_piece_into(text.as_ref(), chunk_index * CHUNK + j, &mut scratch, &mut tokens)?;
                    packed.clear();
                    pack_into(truncation, &tokens, self.cls_id, self.sep_id, max_len, &mut packed);
                    ids.extend_from_u32(&packed);
                    lens.push(packed.len());
                }
                bar.inc(chunk.len() as u64);
                Ok((lens, ids))
            })
            .collect::<Result<Vec<_>>>();
        bar.finish_and_clear();
        let parts = parts?;
        let mut ids = IdStore::for_vocab(self.id_bound);
        ids.reserve(parts.iter().map(|p| p.1.len()).sum());
        let mut offsets = Vec::with_capacity(texts.len() + 1);
        offsets.push(0);
        for (lens, part) in parts {
            for len in lens {
                offsets.push(offsets.last().copied().unwrap_or(0) + len);
            }
            ids.append(part);
        }
        Ok(EncodedTexts { ids, offsets, max_len, truncation })
    }

    /// The untruncated length of every text in ids, `[CLS]` and `[SEP]` included (parallel).
    pub fn token_lengths<S: AsRef<str> + Sync>(&self, texts: &[S], progress: bool) -> Result<Vec<usize>> {
        let bar = progress_bar(texts.len(), progress, "counting tokens");
        let lens = texts
            .par_chunks(CHUNK)
            .enumerate()
            .map(|(chunk_index, chunk)| {
                let mut scratch = Scratch::default();
                let mut tokens = Vec::new();
                let mut lens = Vec::with_capacity(chunk.len());
                for (j, text) in chunk.iter().enumerate() {
                    tokens.clear();
                    self.word_piece_into(text.as_ref(), chunk_index * CHUNK + j, &mut scratch, &mut tokens)?;
                    lens.push(tokens.len() + 2);
                }
                bar.inc(chunk.len() as u64);
                Ok(lens)
            })
            .collect::<Result<Vec<_>>>();
        bar.finish_and_clear();
        Ok(lens?.concat())
    }
}

/// The BERT tokenizer `transformers` builds from `vocab.txt` (its `BertConverter`): BertNormalizer
/// with the config's casing/accents/CJK options, BertPreTokenizer, WordPiece with `##`
/// continuations and 100-character words, and the special tokens matched whole in raw text.
fn build_from_vocab(path: &Path, bytes: &[u8], config: &TokenizerConfig) -> Result<tokenizers::Tokenizer> {
    let invalid = |message: String| TokenizeError::InvalidTokenizerFile { path: path.to_path_buf(), message };
    if std::str::from_utf8(bytes).is_err() {
        return Err(invalid("not UTF-8 text (expected one token per line)".into()));
    }
    let vocab = WordPiece::read_bytes(bytes).map_err(|e| invalid(e.to_string()))?;
    if !vocab.contains_key(&config.unk) {
        return Err(TokenizeError::MissingSpecialToken {
            role: "unk",
            token: config.unk.clone(),
            path: path.into(),
        });
    }
    let model = WordPiece::builder()
        .vocab(vocab.clone())
        .unk_token(config.unk.clone())
        .continuing_subword_prefix("##".into())
        .max_input_chars_per_word(100)
        .build()
        .map_err(|e| invalid(e.to_string()))?;
    let mut engine = tokenizers::Tokenizer::new(model);
    engine.with_normalizer(Some(BertNormalizer::new(
        true,
        config.tokenize_chinese_chars,
        config.strip_accents,
        config.do_lower_case,
    )));
    engine.with_pre_tokenizer(Some(BertPreTokenizer));
    let specials: Vec<AddedToken> = [&config.pad, &config.unk, &config.cls, &config.sep, &config.mask]
        .into_iter()
        .filter(|t| vocab.contains_key(t.as_str()))
        .map(|t| AddedToken::from(t.clone(), true))
        .collect();
    engine.add_special_tokens(&specials);
    Ok(engine)
}

fn progress_bar(len: usize, visible: bool, message: &'static str) -> indicatif::ProgressBar {
    if !visible {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} texts ({per_sec}, eta {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message);
    bar
}
