//! An on-disk cache of encoded datasets.
//!
//! One file per (tokenizer files, texts, max_len, truncation), named by the SHA-256 of all
//! four, so a change to any of them is a miss, never a stale hit. Files are written to a
//! temporary name in the cache directory and renamed into place, so a killed run leaves no
//! half-written file under the final name; a file that is damaged anyway (truncated, bit
//! flips, another format) fails its length or checksum test and is rebuilt.
//!
//! Layout (little-endian):
//!
//! ```text
//! 0    8   magic "BLTOKCA1"
//! 8    4   format version (u32)
//! 12   4   bytes per id, 2 or 4 (u32)
//! 16   32  the cache key
//! 48   8   rows (u64)
//! 56   8   total ids (u64)
//! 64   8   max_len (u64)
//! 72   8   truncation code (u64)
//! 80       rows × u32 row lengths, then total × id width ids
//! end-32   SHA-256 of everything before it
//! ```

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::encoded::{EncodedTexts, IdStore};
use crate::error::{io_err, Result, TokenizeError};
use crate::tokenizer::WordPieceTokenizer;
use crate::truncation::Truncation;

const MAGIC: &[u8; 8] = b"BLTOKCA1";
const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 80;
/// Part of every key: bump it when encoding output changes for the same inputs (a fix in the
/// fast path, new packing rules), so old files stop matching.
const KEY_DOMAIN: &[u8] = b"bertlab-tokenize token cache v1\0";

/// How a [`TokenCache`] lookup went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheStatus {
    /// The file existed and was valid: nothing was tokenized.
    Hit,
    /// No file: the texts were tokenized and the file written.
    Miss,
    /// A file existed but was damaged (the reason says how): tokenized again and rewritten.
    Rebuilt {
        /// What was wrong with the old file.
        reason: String,
    },
}

/// A directory of encoded datasets, keyed by a hash of everything the ids depend on.
///
/// ```no_run
/// # use bertlab_tokenize::{TokenCache, Truncation, WordPieceTokenizer};
/// # fn main() -> Result<(), bertlab_tokenize::TokenizeError> {
/// let tokenizer = WordPieceTokenizer::from_dir("../shared/models/all-MiniLM-L6-v2".as_ref())?;
/// let texts = vec!["A fine film.".to_string()];
/// let cache = TokenCache::new("target/token-cache");
/// let encoded = cache.encode_all(&tokenizer, &texts, 512, Truncation::Head, true)?; // tokenizes
/// let again = cache.encode_all(&tokenizer, &texts, 512, Truncation::Head, true)?; // loads
/// assert_eq!(encoded, again);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct TokenCache {
    dir: PathBuf,
}

impl TokenCache {
    /// A cache in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> TokenCache {
        TokenCache { dir: dir.into() }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// SHA-256 of (cache format, tokenizer files, max_len, truncation, every text).
    pub fn key<S: AsRef<str>>(
        tokenizer: &WordPieceTokenizer,
        texts: &[S],
        max_len: usize,
        truncation: Truncation,
    ) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(KEY_DOMAIN);
        h.update(tokenizer.files_fingerprint());
        h.update((max_len as u64).to_le_bytes());
        h.update([truncation.code()]);
        h.update((texts.len() as u64).to_le_bytes());
        for text in texts {
            // Length-prefixed, so ["ab", "c"] and ["a", "bc"] differ.
            let text = text.as_ref().as_bytes();
            h.update((text.len() as u64).to_le_bytes());
            h.update(text);
        }
        h.finalize().into()
    }

    /// The file that holds (or would hold) the entry for `key`.
    pub fn path_for(&self, key: &[u8; 32]) -> PathBuf {
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{hex}.tokens"))
    }

    /// [`WordPieceTokenizer::encode_all`] through the cache: a valid file is loaded without
    /// tokenizing; otherwise the texts are encoded and the file (re)written atomically.
    pub fn encode_all<S: AsRef<str> + Sync>(
        &self,
        tokenizer: &WordPieceTokenizer,
        texts: &[S],
        max_len: usize,
        truncation: Truncation,
        progress: bool,
    ) -> Result<EncodedTexts> {
        self.encode_all_with_status(tokenizer, texts, max_len, truncation, progress).map(|(e, _)| e)
    }

    /// Like [`TokenCache::encode_all`], also saying whether it was a hit.
    pub fn encode_all_with_status<S: AsRef<str> + Sync>(
        &self,
        tokenizer: &WordPieceTokenizer,
        texts: &[S],
        max_len: usize,
        truncation: Truncation,
        progress: bool,
    ) -> Result<(EncodedTexts, CacheStatus)> {
        tokenizer.check_max_len(max_len)?;
        let key = Self::key(tokenizer, texts, max_len, truncation);
        let path = self.path_for(&key);
        // Only a regular file is read: opening a named pipe would block for ever.
        if std::fs::metadata(&path).is_ok_and(|m| !m.is_file()) {
            return Err(io_err(&path)(std::io::Error::other(
                "not a regular file (a cache entry is one file bertlab wrote): remove it",
            )));
        }
        let status = match std::fs::read(&path) {
            Ok(bytes) => match decode(&bytes, &key) {
                Ok(encoded) if encoded.len() == texts.len() => return Ok((encoded, CacheStatus::Hit)),
                Ok(encoded) => CacheStatus::Rebuilt {
                    reason: format!("{} rows for {} texts", encoded.len(), texts.len()),
                },
                Err(reason) => CacheStatus::Rebuilt { reason },
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CacheStatus::Miss,
            Err(e) => return Err(io_err(&path)(e)),
        };
        let encoded = tokenizer.encode_all(texts, max_len, truncation, progress)?;
        write_atomic(&path, &encode(&encoded, &key))?;
        Ok((encoded, status))
    }
}

/// Serialise `encoded` under `key` (see the module docs for the layout).
fn encode(encoded: &EncodedTexts, key: &[u8; 32]) -> Vec<u8> {
    let rows = encoded.len();
    let width = encoded.ids.width();
    let mut out = Vec::with_capacity(HEADER_LEN + rows * 4 + encoded.ids.len() * width + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(width as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(rows as u64).to_le_bytes());
    out.extend_from_slice(&(encoded.ids.len() as u64).to_le_bytes());
    out.extend_from_slice(&(encoded.max_len as u64).to_le_bytes());
    out.extend_from_slice(&(encoded.truncation.code() as u64).to_le_bytes());
    debug_assert_eq!(out.len(), HEADER_LEN);
    for len in encoded.seq_lens() {
        out.extend_from_slice(&(len as u32).to_le_bytes());
    }
    encoded.ids.write_le(&mut out);
    let checksum: [u8; 32] = Sha256::digest(&out).into();
    out.extend_from_slice(&checksum);
    out
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Parse and verify a cache file; `Err` says what is wrong with it.
fn decode(bytes: &[u8], key: &[u8; 32]) -> std::result::Result<EncodedTexts, String> {
    if bytes.len() < HEADER_LEN + 32 {
        return Err(format!("{} bytes, shorter than the {}-byte header", bytes.len(), HEADER_LEN + 32));
    }
    if &bytes[..8] != MAGIC {
        return Err("not a bertlab token cache file (bad magic)".into());
    }
    let version = u32_at(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(format!("format version {version}, expected {FORMAT_VERSION}"));
    }
    let width = u32_at(bytes, 12) as usize;
    if width != 2 && width != 4 {
        return Err(format!("id width {width}, expected 2 or 4"));
    }
    if &bytes[16..48] != key {
        return Err("key in the header does not match the file name".into());
    }
    let rows = u64_at(bytes, 48);
    let total = u64_at(bytes, 56);
    let max_len = u64_at(bytes, 64);
    let truncation = u8::try_from(u64_at(bytes, 72))
        .ok()
        .and_then(Truncation::from_code)
        .ok_or("unknown truncation code")?;
    let expected = rows
        .checked_mul(4)
        .and_then(|r| total.checked_mul(width as u64).and_then(|t| r.checked_add(t)))
        .and_then(|n| n.checked_add((HEADER_LEN + 32) as u64));
    if expected != Some(bytes.len() as u64) {
        return Err(format!(
            "{} bytes where the header ({rows} rows, {total} ids of {width} bytes) implies {}",
            bytes.len(),
            expected.map_or("an overflow".to_string(), |n| n.to_string())
        ));
    }
    let body_end = bytes.len() - 32;
    let checksum: [u8; 32] = Sha256::digest(&bytes[..body_end]).into();
    if checksum[..] != bytes[body_end..] {
        return Err("checksum mismatch (file damaged)".into());
    }
    let (rows, max_len) = (rows as usize, max_len as usize);
    let ids_start = HEADER_LEN + rows * 4;
    let mut offsets = Vec::with_capacity(rows + 1);
    offsets.push(0usize);
    for row in 0..rows {
        let len = u32_at(bytes, HEADER_LEN + row * 4) as usize;
        if len > max_len {
            return Err(format!("row {row} has {len} ids, above max_len {max_len}"));
        }
        offsets.push(offsets[row] + len);
    }
    if offsets[rows] as u64 != total {
        return Err(format!("row lengths sum to {}, header says {total} ids", offsets[rows]));
    }
    let ids = IdStore::read_le(width, &bytes[ids_start..body_end]).ok_or("bad id width")?;
    Ok(EncodedTexts { ids, offsets, max_len, truncation })
}

/// [`bertlab_run::write_atomic`], as a cache-write error naming the file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    bertlab_run::write_atomic(path, bytes)
        .map_err(|source| TokenizeError::CacheWrite { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EncodedTexts {
        EncodedTexts::from_rows([vec![101u32, 5, 6, 102], vec![101, 102]], 30_522, 4, Truncation::HeadTail)
    }

    #[test]
    fn file_round_trips() {
        let key = [7u8; 32];
        let bytes = encode(&sample(), &key);
        assert_eq!(decode(&bytes, &key).unwrap(), sample());
        let wide = EncodedTexts::from_rows([vec![1u32, 70_000]], 80_000, 2, Truncation::Tail);
        assert_eq!(decode(&encode(&wide, &key), &key).unwrap(), wide);
    }

    #[test]
    fn damage_is_detected() {
        let key = [7u8; 32];
        let bytes = encode(&sample(), &key);
        let truncated = &bytes[..bytes.len() - 3];
        assert!(decode(truncated, &key).unwrap_err().contains("implies"));
        let mut flipped = bytes.clone();
        flipped[HEADER_LEN + 9] ^= 1;
        assert!(decode(&flipped, &key).unwrap_err().contains("checksum"));
        assert!(decode(&bytes, &[8u8; 32]).unwrap_err().contains("key"));
        assert!(decode(&bytes[..20], &key).is_err());
        assert!(decode(&[b'x'; 200], &key).unwrap_err().contains("magic"));
    }
}
