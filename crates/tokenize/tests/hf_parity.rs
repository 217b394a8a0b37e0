//! Parity with python `transformers` (fixtures made by HF) and of the fast path with the
//! `tokenizers` engine. Needs ../shared (the MiniLM tokenizer); skips without it.

use std::path::{Path, PathBuf};

use bertlab_tokenize::{Truncation, WordPieceTokenizer};
use serde_json::Value;

fn minilm_dir() -> Option<PathBuf> {
    match bertlab_test_support::shared_dir() {
        Some(d) => Some(d.join("models/all-MiniLM-L6-v2")),
        None => {
            eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
            None
        }
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// Both paths (fast, engine) of the MiniLM tokenizer.
fn both(dir: &Path) -> [WordPieceTokenizer; 2] {
    let fast = WordPieceTokenizer::from_dir(dir).unwrap();
    assert!(fast.uses_fast_path(), "MiniLM is a standard BERT pipeline");
    assert_eq!((fast.vocab_size(), fast.id_bound()), (30_522, 30_522), "MiniLM's config.json vocab_size");
    let engine = fast.clone().with_fast_path(false);
    [fast, engine]
}

#[test]
fn minilm_fixture_ids_match_transformers_at_32() {
    let Some(dir) = minilm_dir() else { return };
    let fixture = read_json(&dir.join("../../fixtures/minilm-expected.json"));
    let max_len = fixture["max_length"].as_u64().unwrap() as usize;
    assert_eq!(max_len, 32);
    let texts = fixture["texts"].as_array().unwrap();
    for tok in both(&dir) {
        for (i, text) in texts.iter().enumerate() {
            // The fixture is padded to 32; the attention mask says how many ids are real.
            let padded = ids(&fixture["input_ids"][i]);
            let real = ids(&fixture["attention_mask"][i]).iter().filter(|&&m| m == 1).count();
            let got = tok.encode(text.as_str().unwrap(), max_len, Truncation::Head).unwrap();
            assert_eq!(got, padded[..real], "text {i}, fast path {}", tok.uses_fast_path());
            assert!(padded[real..].iter().all(|&id| id == tok.pad_id()));
        }
    }
}

fn golden() -> Value {
    read_json(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/imdb-golden.json"))
}

#[test]
fn imdb_reviews_match_transformers_at_128_and_512() {
    let Some(dir) = minilm_dir() else { return };
    let golden = golden();
    let reviews = golden["reviews"].as_array().unwrap();
    assert_eq!(reviews.len(), 50);
    assert!(reviews.iter().filter(|r| r["untruncated_len"].as_u64().unwrap() > 512).count() >= 10);
    for tok in both(&dir) {
        let texts: Vec<String> = reviews.iter().map(|r| r["text"].as_str().unwrap().to_string()).collect();
        for max_len in [128usize, 512] {
            let all = tok.encode_all(&texts, max_len, Truncation::Head, false).unwrap();
            let all_tail = tok.encode_all(&texts, max_len, Truncation::Tail, false).unwrap();
            for (i, r) in reviews.iter().enumerate() {
                let what =
                    format!("{} row {} at {max_len}, fast {}", r["split"], r["row"], tok.uses_fast_path());
                let head = ids(&r[format!("ids_{max_len}")]);
                let tail = ids(&r[format!("ids_tail_{max_len}")]);
                assert_eq!(tok.encode(&texts[i], max_len, Truncation::Head).unwrap(), head, "{what}");
                assert_eq!(all.ids(i), head, "{what} (encode_all)");
                assert_eq!(tok.encode(&texts[i], max_len, Truncation::Tail).unwrap(), tail, "{what} tail");
                assert_eq!(all_tail.ids(i), tail, "{what} tail (encode_all)");
            }
        }
        let lens = tok.token_lengths(&texts, false).unwrap();
        for (r, len) in reviews.iter().zip(lens) {
            assert_eq!(len as u64, r["untruncated_len"].as_u64().unwrap());
        }
    }
}

#[test]
fn head_tail_is_hf_head_then_hf_tail() {
    let Some(dir) = minilm_dir() else { return };
    let [tok, _] = both(&dir);
    for r in golden()["reviews"].as_array().unwrap() {
        let text = r["text"].as_str().unwrap();
        for max_len in [128usize, 512] {
            let head = ids(&r[format!("ids_{max_len}")]);
            let tail = ids(&r[format!("ids_tail_{max_len}")]);
            let got = tok.encode(text, max_len, Truncation::HeadTail).unwrap();
            if (r["untruncated_len"].as_u64().unwrap() as usize) <= max_len {
                assert_eq!(got, head);
                continue;
            }
            // budget = max_len - 2; head keeps max_len / 4 tokens (128 + 382 at 512).
            let h = max_len / 4;
            let t = max_len - 2 - h;
            let mut expected = vec![tok.cls_id()];
            expected.extend_from_slice(&head[1..1 + h]);
            expected.extend_from_slice(&tail[tail.len() - 1 - t..tail.len() - 1]);
            expected.push(tok.sep_id());
            assert_eq!(got, expected, "{} row {} at {max_len}", r["split"], r["row"]);
            assert_eq!(got.len(), max_len);
        }
    }
}

#[test]
fn truncation_and_padding_pinned_in_tokenizer_json_are_ignored() {
    let Some(dir) = minilm_dir() else { return };
    // MiniLM's tokenizer.json pins truncation at 128 and fixed padding to 128.
    let raw = read_json(&dir.join("tokenizer.json"));
    assert_eq!(raw["truncation"]["max_length"], 128);
    let [tok, engine] = both(&dir);
    let long = "word ".repeat(300);
    for t in [&tok, &engine] {
        assert_eq!(t.encode(&long, 512, Truncation::Head).unwrap().len(), 302);
        assert_eq!(t.encode("short", 512, Truncation::Head).unwrap().len(), 3);
        assert_eq!(t.encode("", 512, Truncation::Head).unwrap(), vec![101, 102]);
    }
    // model_max_length (512) comes from tokenizer_config.json.
    let err = tok.encode("x", 513, Truncation::Head).unwrap_err().to_string();
    assert!(err.contains("513") && err.contains("512") && err.contains("model_max_length"), "{err}");
}

/// Strings that exercise every rule of BertNormalizer, BertPreTokenizer and WordPiece.
fn edge_cases() -> Vec<String> {
    let mut cases: Vec<String> = [
        "",
        " ",
        "\t\n\r ",
        "Hello, World!",
        "ÜNÏCÖDÉ façade naïve Ångström",
        "İstanbul ǅemal ß ẞ Σίσυφος ὈΔΥΣΣΕΎΣ",
        "ﬁne ﬀ Ⅻ ² ₂ ½ … — «quoted» „low“",
        "x\u{301}\u{323} e\u{301} a\u{30a}\u{316}",
        "野口里佳 Noguchi Rika 漢字かなカナ 한국어",
        "zero\u{200b}width nb\u{a0}sp ideo\u{3000}space line\u{2028}sep",
        "\u{85}next line \u{96}en dash\u{97} \u{91}quote\u{92}",
        "control\u{1}\u{7f}\u{b}\u{c}\u{1c}chars \u{0}nul \u{fffd}replacement",
        "private\u{e000}use unassigned\u{378}x",
        "[CLS] inside [SEP] and [sep] lower [MASK]x y[PAD] [UNK]",
        "emoji 😀👍🏽 flags 🇫🇷",
        "supercalifragilisticexpialidocious antidisestablishmentarianism",
        "can't won't 12,345.67 $5 £10 €20 100% a+b=c <br /><br /> http://x.y/z?q=1&r=2",
        "مرحبا بالعالم עברית हिन्दी ไทย",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ＦＵＬＬＷＩＤＴＨ",
        "~`!@#$%^&*()_-+={}[]|\\:;\"'<>,.?/",
        "__init__ --flag ...",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    cases.push("a".repeat(100));
    cases.push("a".repeat(101)); // over max_input_chars_per_word: [UNK]
    cases.push("é".repeat(100) + " " + &"é".repeat(101));
    cases.push(format!("{} tail", "xq".repeat(60)));
    cases
}

fn assert_paths_agree(fast: &WordPieceTokenizer, what: &str) {
    assert!(fast.uses_fast_path());
    let engine = fast.clone().with_fast_path(false);
    for text in edge_cases() {
        assert_eq!(fast.word_pieces(&text).unwrap(), engine.word_pieces(&text).unwrap(), "{what}: {text:?}");
    }
}

#[test]
fn fast_path_matches_engine_on_edge_cases() {
    let Some(dir) = minilm_dir() else { return };
    let [fast, _] = both(&dir);
    assert_paths_agree(&fast, "tokenizer.json");
    // Sanity: the cases do reach the interesting rules.
    assert_eq!(fast.word_pieces(&"a".repeat(101)).unwrap(), vec![100]);
    assert_eq!(fast.word_pieces("[CLS] x").unwrap()[0], 101);
    assert_eq!(fast.word_pieces("ÉTÉ").unwrap(), fast.word_pieces("ete").unwrap());
}

#[test]
fn vocab_txt_builds_the_same_tokenizer_and_honours_config_flags() {
    let Some(dir) = minilm_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join("vocab.txt"), tmp.path().join("vocab.txt")).unwrap();
    std::fs::copy(dir.join("tokenizer_config.json"), tmp.path().join("tokenizer_config.json")).unwrap();
    let from_vocab = WordPieceTokenizer::from_dir(tmp.path()).unwrap();
    assert!(from_vocab.source().ends_with("vocab.txt"));
    let [from_json, _] = both(&dir);
    assert_ne!(from_vocab.files_fingerprint(), from_json.files_fingerprint());
    assert_eq!((from_vocab.cls_id(), from_vocab.sep_id(), from_vocab.pad_id()), (101, 102, 0));
    assert_eq!(from_vocab.vocab_size(), from_json.vocab_size());
    for text in edge_cases() {
        assert_eq!(from_vocab.word_pieces(&text).unwrap(), from_json.word_pieces(&text).unwrap(), "{text:?}");
    }
    for r in golden()["reviews"].as_array().unwrap().iter().take(10) {
        let got = from_vocab.encode(r["text"].as_str().unwrap(), 128, Truncation::Head).unwrap();
        assert_eq!(got, ids(&r["ids_128"]));
    }
    assert_paths_agree(&from_vocab, "vocab.txt uncased");

    // Other normalizer settings: the fast path must follow each flag as the engine does.
    for config in [
        r#"{"do_lower_case": false}"#,
        r#"{"do_lower_case": false, "strip_accents": true}"#,
        r#"{"do_lower_case": true, "strip_accents": false, "tokenize_chinese_chars": false}"#,
    ] {
        std::fs::write(tmp.path().join("tokenizer_config.json"), config).unwrap();
        let tok = WordPieceTokenizer::from_dir(tmp.path()).unwrap();
        assert_paths_agree(&tok, config);
    }
    // Cased: "Hello" is not in the uncased vocabulary, so it is no longer "hello".
    std::fs::write(tmp.path().join("tokenizer_config.json"), r#"{"do_lower_case": false}"#).unwrap();
    let cased = WordPieceTokenizer::from_dir(tmp.path()).unwrap();
    assert_ne!(cased.word_pieces("Hello").unwrap(), from_json.word_pieces("Hello").unwrap());
}

/// Every 5th review of the shared IMDB copy: the fast path equals the engine.
#[test]
fn fast_path_matches_engine_on_imdb_reviews() {
    let Some(dir) = minilm_dir() else { return };
    let source = bertlab_data::DatasetSource::LocalDir(dir.join("../../data/hf-imdb"));
    let data = source.load_split(bertlab_data::Split::Test, &Default::default()).unwrap();
    let texts: Vec<&str> = data.texts.iter().step_by(5).map(String::as_str).collect();
    assert!(texts.len() > 4000);
    let [fast, engine] = both(&dir);
    let a = fast.encode_all(&texts, 512, Truncation::Head, false).unwrap();
    let b = engine.encode_all(&texts, 512, Truncation::Head, false).unwrap();
    for (row, text) in texts.iter().enumerate() {
        assert_eq!(a.ids(row), b.ids(row), "review {}: {text:?}", row * 5);
    }
    assert_eq!(a, b);
}
