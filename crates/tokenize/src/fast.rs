//! A fast path for the standard BERT pipeline (BertNormalizer → BertPreTokenizer → WordPiece)
//! that produces exactly the ids of the `tokenizers` engine, without its bookkeeping.
//!
//! The engine tracks, for every character, where it came from (alignments, offsets) and
//! allocates a `String` per token; bertlab needs only ids. This module reruns the same three
//! stages on plain strings, with the same Unicode tables the engine uses
//! (`unicode-normalization-alignments` for NFD, `unicode_categories` for general categories,
//! `char::to_lowercase`/`char::is_whitespace` from std), and replaces WordPiece's repeated
//! "try the longest substring, shorten by one char" hash lookups with one walk down a byte trie
//! per sub-token, which finds the same longest vocabulary match.
//!
//! Texts that contain an added token (e.g. a literal `[SEP]` in a review) are left to the engine,
//! whose added-vocabulary splitting has more rules (single word, strip flags) than are worth
//! copying; `FastWordPiece::encode` returns `None` for them. Parity with the engine is tested on
//! hand-made edge cases and on IMDB reviews (`tests/parity.rs`).

use std::collections::BTreeMap;

use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::Model;
use unicode_categories::UnicodeCategories;
use unicode_normalization_alignments::UnicodeNormalization;

const NO_ID: u32 = u32::MAX;

/// A byte trie over vocabulary entries, for longest-prefix matches.
#[derive(Debug, Clone)]
struct Trie {
    /// Children of the root, by first byte (the root is where every lookup starts: keep it dense).
    root: Box<[u32; 256]>,
    /// Per node: id of the entry ending here (or `NO_ID`), then the range of its edges.
    nodes: Vec<TrieNode>,
    /// Edges `(byte, child)`, sorted by byte within each node.
    edges: Vec<(u8, u32)>,
}

#[derive(Debug, Clone, Copy)]
struct TrieNode {
    id: u32,
    edges_start: u32,
    edges_len: u32,
}

impl Trie {
    fn build<'a>(entries: impl Iterator<Item = (&'a str, u32)>) -> Trie {
        // Build with maps, then flatten into sorted edge arrays for cache-friendly lookups.
        let mut maps: Vec<(u32, BTreeMap<u8, u32>)> = vec![(NO_ID, BTreeMap::new())];
        for (key, id) in entries {
            if key.is_empty() {
                continue; // never a sub-token: every match consumes at least one byte
            }
            let mut node = 0usize;
            for &b in key.as_bytes() {
                let next = match maps[node].1.get(&b) {
                    Some(&n) => n as usize,
                    None => {
                        maps.push((NO_ID, BTreeMap::new()));
                        let n = maps.len() - 1;
                        maps[node].1.insert(b, n as u32);
                        n
                    }
                };
                node = next;
            }
            maps[node].0 = id;
        }
        let mut root = Box::new([0u32; 256]);
        for (&b, &child) in &maps[0].1 {
            root[b as usize] = child;
        }
        let mut nodes = Vec::with_capacity(maps.len());
        let mut edges = Vec::new();
        for (id, children) in &maps {
            nodes.push(TrieNode {
                id: *id,
                edges_start: edges.len() as u32,
                edges_len: children.len() as u32,
            });
            edges.extend(children.iter().map(|(&b, &c)| (b, c)));
        }
        Trie { root, nodes, edges }
    }

    #[inline]
    fn child(&self, node: u32, byte: u8) -> Option<u32> {
        if node == 0 {
            let c = self.root[byte as usize];
            return (c != 0).then_some(c);
        }
        let n = self.nodes[node as usize];
        let edges = &self.edges[n.edges_start as usize..(n.edges_start + n.edges_len) as usize];
        if edges.len() <= 8 {
            edges.iter().find(|e| e.0 == byte).map(|e| e.1)
        } else {
            edges.binary_search_by_key(&byte, |e| e.0).ok().map(|i| edges[i].1)
        }
    }

    /// The longest entry that is a prefix of `bytes`: `(length in bytes, id)`.
    #[inline]
    fn longest_prefix(&self, bytes: &[u8]) -> Option<(usize, u32)> {
        let mut node = 0u32;
        let mut best = None;
        for (i, &b) in bytes.iter().enumerate() {
            match self.child(node, b) {
                Some(c) => node = c,
                None => break,
            }
            let id = self.nodes[node as usize].id;
            if id != NO_ID {
                best = Some((i + 1, id));
            }
        }
        best
    }
}

/// Scratch buffers reused across texts (one set per worker).
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    cleaned: String,
    normalized: String,
}

/// The ids-only reimplementation of one BERT WordPiece tokenizer.
#[derive(Debug, Clone)]
pub(crate) struct FastWordPiece {
    /// Entries that start a word.
    initial: Trie,
    /// Entries that continue a word, with the `##` prefix removed.
    continuing: Trie,
    unk_id: u32,
    max_input_chars_per_word: usize,
    clean_text: bool,
    handle_chinese_chars: bool,
    strip_accents: bool,
    lowercase: bool,
    /// Added-token contents, raw and normalized: a text containing one goes to the engine.
    guards: Vec<String>,
}

fn is_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

fn is_control(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r') && c.is_other()
}

fn is_chinese_char(c: char) -> bool {
    matches!(
        c as u32,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

fn is_bert_punc(c: char) -> bool {
    c.is_ascii_punctuation() || c.is_punctuation()
}

impl FastWordPiece {
    /// Mirror `model` + `normalizer` (+ BertPreTokenizer); `None` when the vocabulary lacks the
    /// unknown token (the engine then reports the error itself).
    pub(crate) fn new<'a>(
        model: &WordPiece,
        normalizer: &BertNormalizer,
        added_tokens: impl Iterator<Item = &'a str>,
    ) -> Option<FastWordPiece> {
        let vocab = model.get_vocab();
        let unk_id = *vocab.get(&model.unk_token)?;
        let prefix = model.continuing_subword_prefix.as_str();
        let initial = Trie::build(vocab.iter().map(|(k, &v)| (k.as_str(), v)));
        let continuing =
            Trie::build(vocab.iter().filter_map(|(k, &v)| k.strip_prefix(prefix).map(|rest| (rest, v))));
        let mut fast = FastWordPiece {
            initial,
            continuing,
            unk_id,
            max_input_chars_per_word: model.max_input_chars_per_word,
            clean_text: normalizer.clean_text,
            handle_chinese_chars: normalizer.handle_chinese_chars,
            strip_accents: normalizer.strip_accents.unwrap_or(normalizer.lowercase),
            lowercase: normalizer.lowercase,
            guards: Vec::new(),
        };
        let mut scratch = Scratch::default();
        let mut guards = Vec::new();
        for content in added_tokens {
            fast.normalize(content, &mut scratch);
            for g in [content, scratch.normalized.as_str()] {
                if !g.is_empty() && !guards.iter().any(|x: &String| x == g) {
                    guards.push(g.to_string());
                }
            }
        }
        fast.guards = guards;
        Some(fast)
    }

    /// BertNormalizer, into `scratch.normalized`.
    fn normalize(&self, text: &str, scratch: &mut Scratch) {
        let out = &mut scratch.normalized;
        out.clear();
        if text.is_ascii() {
            // ASCII only: no accents, no CJK, one-byte lowercase. Same rules as below.
            out.reserve(text.len());
            for &b in text.as_bytes() {
                let mut c = b;
                if self.clean_text {
                    if b == 0 || (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0x7f {
                        continue;
                    }
                    if matches!(b, b'\t' | b'\n' | b'\r') {
                        c = b' ';
                    }
                }
                if self.lowercase {
                    c = c.to_ascii_lowercase();
                }
                out.push(c as char);
            }
            return;
        }
        let cleaned = &mut scratch.cleaned;
        cleaned.clear();
        for c in text.chars() {
            let c = if self.clean_text {
                if c == '\0' || c == '\u{fffd}' || is_control(c) {
                    continue;
                }
                if is_whitespace(c) {
                    ' '
                } else {
                    c
                }
            } else {
                c
            };
            if self.handle_chinese_chars && is_chinese_char(c) {
                cleaned.push(' ');
                cleaned.push(c);
                cleaned.push(' ');
            } else {
                cleaned.push(c);
            }
        }
        let mut emit = |c: char| {
            if self.lowercase {
                out.extend(c.to_lowercase());
            } else {
                out.push(c);
            }
        };
        if self.strip_accents {
            // NFD reorders combining marks across the whole string, so decompose the string,
            // not char by char (as the engine does).
            for (c, _) in cleaned.as_str().nfd() {
                if !c.is_mark_nonspacing() {
                    emit(c);
                }
            }
        } else {
            cleaned.chars().for_each(emit);
        }
    }

    /// WordPiece of one pre-token, appended to `out`.
    fn word_piece(&self, word: &str, ascii: bool, out: &mut Vec<u32>) {
        let chars = if ascii { word.len() } else { word.chars().count() };
        if chars > self.max_input_chars_per_word {
            out.push(self.unk_id);
            return;
        }
        let mark = out.len();
        let bytes = word.as_bytes();
        let mut start = 0;
        while start < bytes.len() {
            let trie = if start == 0 { &self.initial } else { &self.continuing };
            match trie.longest_prefix(&bytes[start..]) {
                Some((len, id)) => {
                    out.push(id);
                    start += len;
                }
                None => {
                    // One unmatched piece makes the whole word unknown, as in WordPiece.
                    out.truncate(mark);
                    out.push(self.unk_id);
                    return;
                }
            }
        }
    }

    /// The WordPiece ids (no special tokens, untruncated) of `text`, appended to `out`; `None`
    /// (and `out` untouched) when the text holds an added token and must go to the engine.
    pub(crate) fn encode(&self, text: &str, scratch: &mut Scratch, out: &mut Vec<u32>) -> Option<()> {
        self.normalize(text, scratch);
        let normalized = scratch.normalized.as_str();
        if self.guards.iter().any(|g| text.contains(g.as_str()) || normalized.contains(g.as_str())) {
            return None;
        }
        // BertPreTokenizer: split on whitespace (dropped), then isolate punctuation.
        let ascii = normalized.is_ascii();
        let mut word_start: Option<usize> = None;
        for (i, c) in normalized.char_indices() {
            let (space, punct) = if c.is_ascii() {
                (matches!(c, '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' '), c.is_ascii_punctuation())
            } else {
                (c.is_whitespace(), is_bert_punc(c))
            };
            if space || punct {
                if let Some(s) = word_start.take() {
                    self.word_piece(&normalized[s..i], ascii, out);
                }
                if punct {
                    self.word_piece(&normalized[i..i + c.len_utf8()], ascii, out);
                }
            } else if word_start.is_none() {
                word_start = Some(i);
            }
        }
        if let Some(s) = word_start {
            self.word_piece(&normalized[s..], ascii, out);
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trie_finds_longest_prefix() {
        let trie = Trie::build([("a", 1), ("ab", 2), ("abcd", 3), ("b", 4)].into_iter());
        assert_eq!(trie.longest_prefix(b"abc"), Some((2, 2)));
        assert_eq!(trie.longest_prefix(b"abcde"), Some((4, 3)));
        assert_eq!(trie.longest_prefix(b"c"), None);
        assert_eq!(trie.longest_prefix(b""), None);
        assert_eq!(trie.longest_prefix(b"ba"), Some((1, 4)));
    }

    #[test]
    fn bert_punctuation_follows_the_engine() {
        // ASCII symbols count as punctuation; non-ASCII symbols (currency, modifiers) do not.
        assert!(is_bert_punc('$') && is_bert_punc('`') && is_bert_punc('«') && is_bert_punc('—'));
        assert!(!is_bert_punc('£') && !is_bert_punc('´') && !is_bert_punc('½'));
        assert!(is_control('\u{85}') && is_control('\u{200b}') && !is_control('\t'));
        assert!(is_whitespace('\u{a0}') && is_whitespace('\u{3000}'));
    }
}
