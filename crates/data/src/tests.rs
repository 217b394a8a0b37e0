//! Loading tests: the shared IMDB copy, and every kind of bad input on hand-made parquet files.

use super::*;
use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{Field, Schema};

const HF_META: &str = r#"{"info": {"features": {"text": {"dtype": "string", "_type": "Value"}, "label": {"names": ["neg", "pos"], "_type": "ClassLabel"}}}}"#;

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>, hf_meta: Option<&str>) {
    let fields: Vec<Field> =
        columns.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect();
    let mut meta = HashMap::new();
    if let Some(m) = hf_meta {
        meta.insert("huggingface".to_string(), m.to_string());
    }
    let schema = Arc::new(Schema::new_with_metadata(fields, meta));
    let batch = RecordBatch::try_new(schema.clone(), columns.into_iter().map(|(_, a)| a).collect()).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn texts(v: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from(v.to_vec()))
}

fn labels(v: &[i64]) -> ArrayRef {
    Arc::new(Int64Array::from(v.to_vec()))
}

/// A good dataset dir with `n_train` and `n_test` alternating-label rows.
fn good_dir(n_train: usize, n_test: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (split, n) in [("train", n_train), ("test", n_test)] {
        let t: Vec<String> = (0..n).map(|i| format!("{split} review {i}")).collect();
        let t: Vec<&str> = t.iter().map(String::as_str).collect();
        let l: Vec<i64> = (0..n as i64).map(|i| i % 2).collect();
        write_parquet(
            &dir.path().join(format!("plain_text/{split}-00000-of-00001.parquet")),
            vec![("text", texts(&t)), ("label", labels(&l))],
            Some(HF_META),
        );
    }
    dir
}

fn load_dir(dir: &Path) -> Result<LabeledTexts, DataError> {
    DatasetSource::LocalDir(dir.to_path_buf()).load(&HubOptions::default())
}

#[test]
fn joins_train_then_test_with_class_names() {
    let dir = good_dir(4, 3);
    let data = load_dir(dir.path()).unwrap();
    assert_eq!(data.len(), 7);
    assert_eq!(data.texts[0], "train review 0");
    assert_eq!(data.texts[4], "test review 0");
    assert_eq!(data.labels, vec![0, 1, 0, 1, 0, 1, 0]);
    assert_eq!(data.class_names, vec!["neg", "pos"]);
    assert_eq!(data.class_counts(), vec![4, 3]);
}

#[test]
fn shared_imdb_has_the_documented_rows() {
    let Some(shared) = bertlab_hub::shared_dir() else {
        eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
        return;
    };
    let source = DatasetSource::LocalDir(shared.join("data/hf-imdb"));
    let train = source.load_split(Split::Train, &HubOptions::default()).unwrap();
    assert_eq!(train.len(), 24_998);
    assert_eq!(train.class_counts(), vec![12_500, 12_498]);
    let all = source.load(&HubOptions::default()).unwrap();
    assert_eq!(all.len(), 49_994);
    assert_eq!(all.class_names, vec!["neg", "pos"]);
    assert_eq!(all.texts[24_998], source.load_split(Split::Test, &HubOptions::default()).unwrap().texts[0]);
    let split = NotebookSplit::new(&all.labels, 0.25, 42).unwrap();
    let counts = |rows: &[usize]| class_counts(&all.select(rows).labels, 2);
    assert_eq!((split.pool.len(), split.train.len()), (12_498, 8_748));
    assert_eq!(counts(&split.train), vec![4375, 4373]);
    assert_eq!(counts(&split.val), vec![625, 625]);
    assert_eq!(counts(&split.test), vec![1250, 1250]);
}

#[test]
fn missing_directory_and_files_are_named() {
    let err = load_dir(Path::new("/nonexistent/bertlab-data")).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/bertlab-data"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let err = load_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("plain_text/train-*.parquet"), "{err}");
}

#[test]
fn not_parquet_is_named() {
    let dir = good_dir(2, 2);
    let bad = dir.path().join("plain_text/test-00000-of-00001.parquet");
    std::fs::write(&bad, b"this is not parquet at all").unwrap();
    let err = load_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("test-00000-of-00001.parquet") && err.contains("not a readable parquet"), "{err}");
}

#[test]
fn missing_and_mistyped_columns_are_named() {
    let dir = good_dir(2, 2);
    let path = dir.path().join("plain_text/train-00000-of-00001.parquet");
    write_parquet(&path, vec![("review", texts(&["a", "b"])), ("label", labels(&[0, 1]))], Some(HF_META));
    let err = load_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("train-00000-of-00001.parquet") && err.contains("no `text` column"), "{err}");
    assert!(err.contains("review"), "lists the columns found: {err}");

    write_parquet(&path, vec![("text", texts(&["a", "b"]))], Some(HF_META));
    let err = load_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("no `label` column"), "{err}");

    let floats: ArrayRef = Arc::new(Float64Array::from(vec![0.0, 1.0]));
    write_parquet(&path, vec![("text", texts(&["a", "b"])), ("label", floats)], Some(HF_META));
    let err = load_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("column `label` must be an integer, found Float64"), "{err}");

    write_parquet(&path, vec![("text", labels(&[1, 2])), ("label", labels(&[0, 1]))], Some(HF_META));
    let err = load_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("column `text` must be a string, found Int64"), "{err}");
}

#[test]
fn label_outside_class_names_is_named_with_its_row() {
    let dir = good_dir(2, 2);
    let path = dir.path().join("plain_text/test-00000-of-00001.parquet");
    write_parquet(
        &path,
        vec![("text", texts(&["a", "b", "c"])), ("label", labels(&[0, 1, -1]))],
        Some(HF_META),
    );
    let err = load_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("test-00000-of-00001.parquet: row 2: label -1 is not a class id"), "{err}");
    assert!(err.contains("neg, pos"), "{err}");
}

#[test]
fn null_text_is_named_with_its_row() {
    let dir = good_dir(2, 2);
    let path = dir.path().join("plain_text/train-00000-of-00001.parquet");
    let with_null: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), None]));
    write_parquet(&path, vec![("text", with_null), ("label", labels(&[0, 1]))], Some(HF_META));
    let err = load_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("row 1: `text` is null"), "{err}");
}

#[test]
fn empty_dataset_is_an_error() {
    let dir = good_dir(0, 0);
    let err = load_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("is empty"), "{err}");
}

#[test]
fn source_parsing() {
    assert_eq!(DatasetSource::parse("hub").unwrap(), DatasetSource::default());
    assert_eq!(
        DatasetSource::parse("hub:org/data@v1").unwrap(),
        DatasetSource::Hub { id: "org/data".into(), config: "plain_text".into(), revision: "v1".into() }
    );
    assert!(matches!(DatasetSource::parse("../shared/data/hf-imdb").unwrap(), DatasetSource::LocalDir(_)));
    assert!(DatasetSource::parse("hub:nodash").unwrap_err().to_string().contains("--source"));
}

#[test]
fn offline_hub_source_says_which_file_is_missing() {
    let cache = tempfile::tempdir().unwrap();
    let hub = HubOptions { offline: true, cache_dir: Some(cache.path().to_path_buf()), progress: false };
    let err = DatasetSource::default().load(&hub).unwrap_err().to_string();
    assert!(err.contains("plain_text/train-00000-of-00001.parquet"), "{err}");
    assert!(err.contains("stanfordnlp/imdb") && err.contains(IMDB_REVISION), "{err}");
}

#[test]
fn written_parquet_reads_back_with_rows_and_class_names() {
    let dir = tempfile::tempdir().unwrap();
    let data = LabeledTexts {
        texts: vec!["a film".into(), "ünïcode, \"quotes\" and\nnewlines".into(), String::new()],
        labels: vec![1, 0, 2],
        class_names: vec!["neg".into(), "pos".into(), "mixed".into()],
    };
    let path = dir.path().join("plain_text/train-00000-of-00001.parquet");
    crate::write_parquet(&path, &data).unwrap();
    let back = load_files(std::slice::from_ref(&path)).unwrap();
    assert_eq!(back.texts, data.texts);
    assert_eq!(back.labels, data.labels);
    assert_eq!(back.class_names, data.class_names);
    // The `ClassLabel` names bound the labels: a label outside them is refused on reading.
    let bad = LabeledTexts { labels: vec![1, 0, 3], ..data };
    crate::write_parquet(&path, &bad).unwrap();
    let err = load_files(&[path]).unwrap_err().to_string();
    assert!(err.contains("row 2") && err.contains("label 3"), "{err}");
    // A directory in the way of the file is named.
    let blocked = dir.path().join("plain_text");
    let err = crate::write_parquet(&blocked, &back).unwrap_err().to_string();
    assert!(err.contains("plain_text"), "{err}");
}
