//! Loading, packing, bad input and the token cache, on small hand-made vocabularies (no
//! ../shared needed).

use std::path::Path;

use bertlab_hub::{HubOptions, RepoKind, RepoRef};
use bertlab_tokenize::{CacheStatus, TokenCache, TokenizeError, Truncation, WordPieceTokenizer};

const VOCAB: &str =
    "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\nfilm\nwas\ngreat\n.\n,\n##s\nbad\nfun\n##ny\n!\n";

fn model_dir(vocab: &str, config: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vocab.txt"), vocab).unwrap();
    if let Some(config) = config {
        std::fs::write(dir.path().join("tokenizer_config.json"), config).unwrap();
    }
    dir
}

fn tokenizer() -> (tempfile::TempDir, WordPieceTokenizer) {
    let dir = model_dir(VOCAB, None);
    let tok = WordPieceTokenizer::from_dir(dir.path()).unwrap();
    (dir, tok)
}

#[test]
fn packs_cls_tokens_sep_and_truncates_by_strategy() {
    let (_dir, tok) = tokenizer();
    assert_eq!((tok.pad_id(), tok.cls_id(), tok.sep_id(), tok.vocab_size()), (0, 2, 3, 16));
    assert_eq!(tok.id_bound(), 16);
    let text = "The films was GREAT, funny bad!";
    // the film ##s was great , fun ##ny bad !
    let pieces = vec![5, 6, 11, 7, 8, 10, 13, 14, 12, 15];
    assert_eq!(tok.word_pieces(text).unwrap(), pieces);
    assert_eq!(tok.encode(text, 512, Truncation::Head).unwrap(), [&[2][..], &pieces, &[3]].concat());
    assert_eq!(tok.encode(text, 6, Truncation::Head).unwrap(), vec![2, 5, 6, 11, 7, 3]);
    assert_eq!(tok.encode(text, 6, Truncation::Tail).unwrap(), vec![2, 13, 14, 12, 15, 3]);
    // budget 8: head 2 (round(8/4)), tail 6
    assert_eq!(tok.encode(text, 10, Truncation::HeadTail).unwrap(), vec![2, 5, 6, 8, 10, 13, 14, 12, 15, 3]);
    // budget 1: head 0 (round(1/4)), tail 1
    assert_eq!(tok.encode(text, 3, Truncation::HeadTail).unwrap(), vec![2, 15, 3]);
    // Unknown words become [UNK] whole.
    assert_eq!(tok.word_pieces("great xyz films").unwrap(), vec![8, 1, 6, 11]);
}

#[test]
fn tokenizer_and_encoded_texts_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<WordPieceTokenizer>();
    assert_send_sync::<bertlab_tokenize::EncodedTexts>();
    assert_send_sync::<TokenCache>();
}

#[test]
fn empty_and_blank_text_encode_to_cls_sep() {
    let (_dir, tok) = tokenizer();
    for text in ["", "   ", "\n\t", "\u{0}\u{1}"] {
        for t in Truncation::ALL {
            assert_eq!(tok.encode(text, 8, t).unwrap(), vec![2, 3], "{text:?}");
        }
    }
}

#[test]
fn encode_all_keeps_order_and_matches_encode() {
    let (_dir, tok) = tokenizer();
    // More texts than one parallel chunk, of varying length.
    let texts: Vec<String> =
        (0..300).map(|i| "the film was fun ".repeat(i % 9) + &"bad ".repeat(i % 4)).collect();
    for t in Truncation::ALL {
        let all = tok.encode_all(&texts, 12, t, false).unwrap();
        assert_eq!(all.len(), texts.len());
        assert_eq!(all.max_len(), 12);
        assert_eq!(all.truncation(), t);
        assert_eq!(all.id_width(), 2);
        for (i, text) in texts.iter().enumerate() {
            assert_eq!(all.ids(i), tok.encode(text, 12, t).unwrap(), "row {i}");
        }
        assert!(all.longest() <= 12);
    }
    assert!(tok.encode_all(&Vec::<String>::new(), 12, Truncation::Head, false).unwrap().is_empty());
    let lens = tok.token_lengths(&texts[..3], false).unwrap();
    assert_eq!(lens, vec![2, 2 + 5, 2 + 10]);
}

#[test]
fn max_len_out_of_range_is_an_error_naming_both_numbers() {
    let (_dir, tok) = tokenizer();
    for bad in [0, 1, 2] {
        let err = tok.encode("the film", bad, Truncation::Head).unwrap_err();
        assert!(matches!(&err, TokenizeError::MaxLen(e) if e.max_len == bad));
        assert!(err.to_string().contains("below 3"), "{err}");
        assert!(tok.encode_all(&["x"], bad, Truncation::Head, false).is_err());
    }
    let tok = tok.with_max_positions(128);
    assert_eq!(tok.max_len_limit(), Some((128, "the model's max_position_embeddings")));
    let err = tok.encode("the film", 129, Truncation::Head).unwrap_err().to_string();
    assert!(err.contains("129") && err.contains("128") && err.contains("max_position_embeddings"), "{err}");
    assert_eq!(tok.encode("the film", 128, Truncation::Head).unwrap().len(), 4);

    // The tighter of model_max_length and max_position_embeddings wins.
    let dir = model_dir(VOCAB, Some(r#"{"model_max_length": 64}"#));
    let tok = WordPieceTokenizer::from_dir(dir.path()).unwrap();
    assert!(tok.check_max_len(64).is_ok());
    let err = tok.check_max_len(65).unwrap_err().to_string();
    assert!(err.contains("65") && err.contains("64") && err.contains("model_max_length"), "{err}");
    assert_eq!(tok.clone().with_max_positions(32).max_len_limit().unwrap().0, 32);
    // HF's "no limit" sentinel is not a limit.
    let dir = model_dir(VOCAB, Some(r#"{"model_max_length": 1000000000000000019884624838656}"#));
    assert_eq!(WordPieceTokenizer::from_dir(dir.path()).unwrap().max_len_limit(), None);
    // A limit that leaves no room for a token is a broken config, named, not `[CLS] [SEP]`.
    let dir = model_dir(VOCAB, Some(r#"{"model_max_length": 2}"#));
    let err = WordPieceTokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("tokenizer_config.json") && err.contains("`model_max_length` is 2"), "{err}");
    // The shortest max_len holds one token of the text.
    let dir = model_dir(VOCAB, None);
    let tok = WordPieceTokenizer::from_dir(dir.path()).unwrap();
    assert!(tok.check_max_len(2).is_err());
    assert_eq!(tok.encode("the film", 3, Truncation::Head).unwrap().len(), 3);
}

#[test]
fn vocab_without_special_tokens_is_rejected() {
    for (missing, vocab) in [
        ("[CLS]", VOCAB.replace("[CLS]\n", "")),
        ("[SEP]", VOCAB.replace("[SEP]\n", "")),
        ("[PAD]", VOCAB.replace("[PAD]\n", "")),
        ("[UNK]", VOCAB.replace("[UNK]\n", "")),
    ] {
        let dir = model_dir(&vocab, None);
        let err = WordPieceTokenizer::from_dir(dir.path()).unwrap_err();
        assert!(matches!(err, TokenizeError::MissingSpecialToken { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(missing) && msg.contains("vocab.txt"), "{msg}");
    }
}

#[test]
fn special_token_names_come_from_tokenizer_config() {
    let vocab = "<pad>\n<unk>\n<cls>\n<sep>\nthe\n";
    let config = r#"{"cls_token": "<cls>", "sep_token": {"content": "<sep>"}, "pad_token": "<pad>", "unk_token": "<unk>"}"#;
    let dir = model_dir(vocab, Some(config));
    let tok = WordPieceTokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(tok.encode("the x", 8, Truncation::Head).unwrap(), vec![2, 4, 1, 3]);
    // A special token in the text is matched whole, as HF does.
    assert_eq!(tok.word_pieces("the<sep>the").unwrap(), vec![4, 3, 4]);
}

#[test]
fn bad_files_are_reported_with_their_path() {
    let empty = tempfile::tempdir().unwrap();
    let err = WordPieceTokenizer::from_dir(empty.path()).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json") && err.contains("vocab.txt"), "{err}");
    assert!(err.contains(&empty.path().display().to_string()), "{err}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), "{\"not\": \"a tokenizer\"}").unwrap();
    let err = WordPieceTokenizer::from_dir(dir.path()).unwrap_err();
    assert!(matches!(err, TokenizeError::InvalidTokenizerFile { .. }), "{err}");
    let err = err.to_string();
    assert!(err.contains("tokenizer.json") && err.contains("valid JSON but no tokenizer"), "{err}");

    let dir = model_dir(VOCAB, Some(r#"{"do_lower_case": "yes"}"#));
    let err = WordPieceTokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("do_lower_case") && err.contains("tokenizer_config.json"), "{err}");
    let dir = model_dir(VOCAB, Some("not json"));
    let err = WordPieceTokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("not valid JSON"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vocab.txt"), b"[PAD]\n\xff\xfe\n").unwrap();
    let err = WordPieceTokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("vocab.txt") && err.contains("UTF-8"), "{err}");
}

#[test]
fn offline_hub_id_without_cache_names_the_model() {
    let cache = tempfile::tempdir().unwrap();
    let hub = HubOptions { offline: true, cache_dir: Some(cache.path().into()), ..HubOptions::default() };
    let repo = RepoRef::parse("google-bert/bert-base-uncased", RepoKind::Model);
    let err = WordPieceTokenizer::from_repo(&repo, &hub).unwrap_err().to_string();
    assert!(err.contains("google-bert/bert-base-uncased") && err.contains("offline"), "{err}");
}

#[test]
fn hub_cache_layout_is_read_offline() {
    let cache = tempfile::tempdir().unwrap();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo_dir = cache.path().join("models--org--tiny");
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), commit).unwrap();
    let snap = repo_dir.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::write(snap.join("vocab.txt"), VOCAB).unwrap();
    let hub = HubOptions { offline: true, cache_dir: Some(cache.path().into()), ..HubOptions::default() };
    let tok = WordPieceTokenizer::from_repo(&RepoRef::parse("org/tiny", RepoKind::Model), &hub).unwrap();
    assert_eq!(tok.encode("the film", 8, Truncation::Head).unwrap(), vec![2, 5, 6, 3]);
}

#[test]
fn fingerprint_follows_file_contents() {
    let a = model_dir(VOCAB, None);
    let b = model_dir(VOCAB, None);
    let c = model_dir(VOCAB, Some("{}"));
    let fp = |d: &Path| WordPieceTokenizer::from_dir(d).unwrap().files_fingerprint();
    assert_eq!(fp(a.path()), fp(b.path()));
    assert_ne!(fp(a.path()), fp(c.path()));
}

fn cache_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[test]
fn cache_hits_misses_and_rebuilds_damaged_files() {
    let (_dir, tok) = tokenizer();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = TokenCache::new(cache_dir.path().join("tokens"));
    let texts: Vec<String> = (0..200).map(|i| "the film was great ".repeat(i % 7)).collect();
    let fresh = tok.encode_all(&texts, 16, Truncation::Tail, false).unwrap();

    let (first, status) = cache.encode_all_with_status(&tok, &texts, 16, Truncation::Tail, false).unwrap();
    assert_eq!((status, &first), (CacheStatus::Miss, &fresh));
    let files = cache_files(cache.dir());
    assert_eq!(files.len(), 1, "one file, no temporary left: {files:?}");
    let (second, status) = cache.encode_all_with_status(&tok, &texts, 16, Truncation::Tail, false).unwrap();
    assert_eq!((status, &second), (CacheStatus::Hit, &fresh));

    // Every input of the key matters.
    let key = TokenCache::key(&tok, &texts, 16, Truncation::Tail);
    assert_eq!(files[0], cache.path_for(&key));
    assert_ne!(key, TokenCache::key(&tok, &texts, 17, Truncation::Tail));
    assert_ne!(key, TokenCache::key(&tok, &texts, 16, Truncation::Head));
    assert_ne!(key, TokenCache::key(&tok, &texts[1..], 16, Truncation::Tail));
    assert_ne!(
        TokenCache::key(&tok, &["ab", "c"], 16, Truncation::Tail),
        TokenCache::key(&tok, &["a", "bc"], 16, Truncation::Tail)
    );
    let (_, status) = cache.encode_all_with_status(&tok, &texts, 17, Truncation::Tail, false).unwrap();
    assert_eq!(status, CacheStatus::Miss);

    // A truncated file is detected, rebuilt, and then hits again.
    let bytes = std::fs::read(&files[0]).unwrap();
    std::fs::write(&files[0], &bytes[..bytes.len() / 2]).unwrap();
    let (third, status) = cache.encode_all_with_status(&tok, &texts, 16, Truncation::Tail, false).unwrap();
    assert!(matches!(&status, CacheStatus::Rebuilt { reason } if reason.contains("bytes")), "{status:?}");
    assert_eq!(third, fresh);
    assert_eq!(std::fs::read(&files[0]).unwrap(), bytes);

    // A flipped id byte fails the checksum.
    let mut flipped = bytes.clone();
    let at = bytes.len() - 40;
    flipped[at] ^= 0x40;
    std::fs::write(&files[0], &flipped).unwrap();
    let (fourth, status) = cache.encode_all_with_status(&tok, &texts, 16, Truncation::Tail, false).unwrap();
    assert!(matches!(&status, CacheStatus::Rebuilt { reason } if reason.contains("checksum")), "{status:?}");
    assert_eq!(fourth, fresh);
    let (_, status) = cache.encode_all_with_status(&tok, &texts, 16, Truncation::Tail, false).unwrap();
    assert_eq!(status, CacheStatus::Hit);

    // Bad max_len fails before touching the cache.
    assert!(cache.encode_all(&tok, &texts, 1, Truncation::Tail, false).is_err());
}

#[test]
fn cache_io_failure_names_the_file() {
    let (_dir, tok) = tokenizer();
    let blocker = tempfile::NamedTempFile::new().unwrap();
    // The "directory" is a regular file: creating it fails.
    let cache = TokenCache::new(blocker.path().join("sub"));
    let err = cache.encode_all(&tok, &["the film"], 8, Truncation::Head, false).unwrap_err().to_string();
    assert!(
        err.contains(&blocker.path().join("sub").display().to_string()) && err.contains(".tokens"),
        "{err}"
    );
}

/// A token listed twice in vocab.txt keeps its last line's id, so the vocabulary skips the id
/// of its first line: `id_bound` (the rows an embedding table needs) is then above
/// `vocab_size` (the number of distinct tokens), and a model check must use the former.
#[test]
fn id_bound_is_one_past_the_largest_id_even_when_ids_are_skipped() {
    let dir = model_dir(&format!("{VOCAB}the\n"), None);
    let tok = WordPieceTokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(tok.token_to_id("the"), Some(16));
    assert_eq!(tok.id_to_token(5), None, "line 6 lost its token to line 17");
    assert_eq!((tok.vocab_size(), tok.id_bound()), (16, 17));
}
