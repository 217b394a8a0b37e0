//! Loading tests: the shared IMDB copy, and every kind of bad input on hand-made parquet files.

use super::*;
use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, UInt64Array};
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

const TRAIN: &str = "plain_text/train-00000-of-00001.parquet";
const TEST: &str = "plain_text/test-00000-of-00001.parquet";

/// Rewrite `file` of `dir` with these labels (texts `t0`, `t1`, …) and metadata.
fn write_labels(dir: &Path, file: &str, values: &[i64], hf_meta: Option<&str>) {
    let t: Vec<String> = (0..values.len()).map(|i| format!("t{i}")).collect();
    let t: Vec<&str> = t.iter().map(String::as_str).collect();
    write_parquet(&dir.join(file), vec![("text", texts(&t)), ("label", labels(values))], hf_meta);
}

fn meta_with_names<S: AsRef<str>>(names: &[S]) -> String {
    let names: Vec<String> = names.iter().map(|n| format!("{:?}", n.as_ref())).collect();
    format!(
        r#"{{"info": {{"features": {{"label": {{"names": [{}], "_type": "ClassLabel"}}}}}}}}"#,
        names.join(", ")
    )
}

fn load_error(dir: &Path) -> (DataError, String) {
    let err = load_dir(dir).unwrap_err();
    let msg = err.to_string();
    (err, msg)
}

#[test]
fn undeclared_labels_must_be_class_ids_below_the_bound() {
    let dir = good_dir(2, 2);
    write_labels(dir.path(), TRAIN, &[0, 1, 1_000_000_000_000, 1], None);
    write_labels(dir.path(), TEST, &[0, 1], None);
    let (err, msg) = load_error(dir.path());
    assert!(matches!(err, DataError::NotAClassId { row: 2, .. }), "{msg}");
    assert!(
        msg.contains(&format!(
            "{TRAIN}: row 2: label 1000000000000 is not a class id: without ClassLabel names in the \
             files' `huggingface` metadata, labels must be class ids 0..k-1 with k at most 10000; \
             renumber the labels 0..k-1, or declare the class names as a ClassLabel feature"
        )),
        "{msg}"
    );
    write_labels(dir.path(), TRAIN, &[0, 1, -3], None);
    let (_, msg) = load_error(dir.path());
    assert!(msg.contains(&format!("{TRAIN}: row 2: label -3 is not a class id")), "{msg}");
    write_labels(dir.path(), TRAIN, &[0, 1, 10_000], None);
    let (_, msg) = load_error(dir.path());
    assert!(msg.contains("label 10000 is not a class id"), "the bound is exclusive: {msg}");

    // The largest unsigned label is quoted as stored, not wrapped to a negative number.
    let big: ArrayRef = Arc::new(UInt64Array::from(vec![0, 1, u64::MAX]));
    write_parquet(&dir.path().join(TRAIN), vec![("text", texts(&["a", "b", "c"])), ("label", big)], None);
    let (_, msg) = load_error(dir.path());
    assert!(msg.contains("row 2: label 18446744073709551615 is not a class id"), "{msg}");
}

#[test]
fn undeclared_labels_that_skip_classes_are_an_error_naming_the_row() {
    let dir = good_dir(2, 2);
    write_labels(dir.path(), TRAIN, &[0, 1, 1, 0], None);
    write_labels(dir.path(), TEST, &[1, 0, 5, 0], None);
    let (err, msg) = load_error(dir.path());
    assert!(matches!(err, DataError::MissingClasses { row: 2, .. }), "{msg}");
    assert!(
        msg.contains(&format!(
            "{TEST}: row 2: label 5 implies classes 0 to 5, but no row has label 2, 3, 4; without \
             ClassLabel names in the files' `huggingface` metadata, labels must be 0..k-1 with every \
             class present"
        )),
        "{msg}"
    );
    // A class present in one file only is present.
    write_labels(dir.path(), TEST, &[1, 0, 2, 0], None);
    let data = load_dir(dir.path()).unwrap();
    assert_eq!(data.class_names, ["0", "1", "2"]);
    assert_eq!(data.class_counts(), [4, 3, 1]);
}

#[test]
fn a_label_outside_the_declared_names_is_named_with_file_row_and_names() {
    let dir = good_dir(3, 3);
    write_labels(dir.path(), TEST, &[0, 1, 0, 5], None);
    let (err, msg) = load_error(dir.path());
    assert!(matches!(err, DataError::LabelOutOfRange { row: 3, label: 5, .. }), "{msg}");
    let train = dir.path().join(TRAIN);
    assert!(
        msg.contains(&format!(
            "{TEST}: row 3: label 5 is not a class id: {} declares 2 classes, ids 0..1 = neg, pos",
            train.display()
        )),
        "{msg}"
    );
    // Names declared by the second file bind the first as well.
    write_labels(dir.path(), TRAIN, &[0, 2], None);
    write_labels(dir.path(), TEST, &[0, 1], Some(HF_META));
    let (_, msg) = load_error(dir.path());
    assert!(msg.contains(&format!("{TRAIN}: row 1: label 2 is not a class id:")), "{msg}");
    assert!(msg.contains(&format!("{} declares 2 classes", dir.path().join(TEST).display())), "{msg}");
    // Each split alone is read under the same rule.
    let source = DatasetSource::LocalDir(dir.path().to_path_buf());
    let train = source.load_split(Split::Train, &HubOptions::default()).unwrap_err().to_string();
    assert!(train.contains("label 2 implies classes 0 to 2, but no row has label 1"), "{train}");
}

#[test]
fn declared_names_must_agree_differ_and_be_bounded() {
    let dir = good_dir(2, 2);
    write_labels(dir.path(), TEST, &[0, 1], Some(&meta_with_names(&["negative", "positive"])));
    let (err, msg) = load_error(dir.path());
    assert!(matches!(err, DataError::ClassNamesDiffer { .. }), "{msg}");
    assert!(msg.contains("declares classes [neg, pos] but") && msg.contains("[negative, positive]"), "{msg}");

    for (names, want) in [
        (meta_with_names(&["neg", "neg"]), "ClassLabel classes 0 and 1 are both named \"neg\""),
        (meta_with_names::<&str>(&[]), "a ClassLabel with no names"),
        (
            meta_with_names(&(0..=10_000).map(|i| format!("c{i}")).collect::<Vec<_>>()),
            "declares 10001 class names, above the limit of 10000",
        ),
    ] {
        write_labels(dir.path(), TEST, &[0, 1], Some(&names));
        let (err, msg) = load_error(dir.path());
        assert!(matches!(err, DataError::BadMetadata { .. }), "{msg}");
        assert!(msg.contains(TEST) && msg.contains(want), "{msg}");
    }
}

#[test]
fn paths_that_are_not_regular_files_are_refused_without_blocking() {
    let dir = good_dir(2, 2);
    let test = dir.path().join(TEST);
    std::fs::remove_file(&test).unwrap();

    std::fs::create_dir(&test).unwrap();
    let (err, msg) = load_error(dir.path());
    assert!(matches!(err, DataError::NotARegularFile { .. }), "{msg}");
    assert_eq!(
        msg,
        format!(
            "{}: is a directory, not a regular file; a dataset is read from parquet, CSV or JSON Lines files",
            test.display()
        )
    );
    std::fs::remove_dir(&test).unwrap();

    #[cfg(unix)]
    {
        // Opening a FIFO for reading would wait for a writer forever.
        let c_path = std::ffi::CString::new(test.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0, "mkfifo");
        let (_, msg) = load_error(dir.path());
        assert!(msg.ends_with("test-00000-of-00001.parquet: is a FIFO (named pipe), not a regular file; a dataset is read from parquet, CSV or JSON Lines files"), "{msg}");
        std::fs::remove_file(&test).unwrap();

        std::os::unix::fs::symlink(dir.path().join("gone.parquet"), &test).unwrap();
        let (_, msg) = load_error(dir.path());
        assert!(
            msg.contains(&format!(
                "is a dangling symbolic link (its target {} does not exist), not a regular file",
                dir.path().join("gone.parquet").display()
            )),
            "{msg}"
        );
        std::fs::remove_file(&test).unwrap();

        // A symbolic link to a regular file (the HF cache's snapshot layout) is read.
        let real = dir.path().join("blob");
        write_labels(dir.path(), "blob", &[0, 1], Some(HF_META));
        std::os::unix::fs::symlink(&real, &test).unwrap();
        assert_eq!(load_dir(dir.path()).unwrap().len(), 4);
    }
}

#[cfg(unix)]
#[test]
fn an_unreadable_file_is_named() {
    use std::os::unix::fs::PermissionsExt;
    let dir = good_dir(2, 2);
    let test = dir.path().join(TEST);
    std::fs::set_permissions(&test, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::File::open(&test).is_err() {
        let (err, msg) = load_error(dir.path());
        assert!(matches!(err, DataError::Io { .. }), "{msg}");
        assert!(msg.starts_with(&format!("{}: cannot read it: Permission denied", test.display())), "{msg}");
    } else if cfg!(target_os = "linux") {
        // Root reads files of mode 000; /proc/self/mem is a regular file that no one can read
        // from offset 0 (EIO), so the read error path is still exercised.
        std::fs::remove_file(&test).unwrap();
        std::os::unix::fs::symlink("/proc/self/mem", &test).unwrap();
        let (err, msg) = load_error(dir.path());
        assert!(matches!(err, DataError::Io { .. }), "{msg}");
        assert!(msg.starts_with(&format!("{}: cannot read it: ", test.display())), "{msg}");
    } else {
        eprintln!("skipping the unreadable-file case: this user (root?) reads files of mode 000");
    }
}

#[test]
fn empty_truncated_and_corrupt_files_are_named() {
    let dir = good_dir(50, 50);
    let test = dir.path().join(TEST);
    let good = std::fs::read(&test).unwrap();

    std::fs::write(&test, b"").unwrap();
    let (err, msg) = load_error(dir.path());
    assert!(matches!(err, DataError::NotParquet { .. }), "{msg}");
    assert!(
        msg.contains("test-00000-of-00001.parquet: not a readable parquet file: the file is empty (0 bytes)"),
        "{msg}"
    );

    for cut in [4, good.len() / 2, good.len() - 1] {
        std::fs::write(&test, &good[..cut]).unwrap();
        let (err, msg) = load_error(dir.path());
        assert!(matches!(err, DataError::NotParquet { .. }), "cut at {cut}: {msg}");
        assert!(msg.contains("may be truncated: fetch it again"), "{msg}");
    }
    // The footer's metadata (just before the trailing length and `PAR1`) overwritten.
    let mut bad = good.clone();
    let end = bad.len() - 8;
    bad[end - 40..end].fill(0xff);
    std::fs::write(&test, &bad).unwrap();
    let (err, msg) = load_error(dir.path());
    assert!(matches!(err, DataError::NotParquet { .. }), "{msg}");
}

#[test]
fn a_file_with_zero_rows_is_an_error_naming_it() {
    let dir = good_dir(2, 0);
    let (err, msg) = load_error(dir.path());
    assert!(matches!(err, DataError::NoRows { .. }), "{msg}");
    assert_eq!(
        msg,
        format!(
            "{}: the file is empty: it holds 0 rows, and every data file must hold labelled rows",
            dir.path().join(TEST).display()
        )
    );
}

#[test]
fn empty_and_blank_texts_are_named_with_their_row() {
    let dir = good_dir(2, 2);
    for text in ["", "  \n\t "] {
        write_parquet(
            &dir.path().join(TRAIN),
            vec![("text", texts(&["fine", "also fine", text])), ("label", labels(&[0, 1, 0]))],
            Some(HF_META),
        );
        let (err, msg) = load_error(dir.path());
        assert!(matches!(err, DataError::EmptyText { row: 2, .. }), "{msg}");
        assert!(msg.contains(&format!("{TRAIN}: row 2: `text` is empty or only whitespace")), "{msg}");
    }
}

#[test]
fn string_labels_are_class_names_declared_or_sorted() {
    let dir = good_dir(2, 2);
    // Where a file declares names, string labels of any file must be among them.
    write_parquet(
        &dir.path().join(TRAIN),
        vec![("text", texts(&["a", "b"])), ("label", texts(&["pos", "neg"]))],
        None,
    );
    let data = load_dir(dir.path()).unwrap();
    assert_eq!(
        (data.class_names.as_slice(), &data.labels[..2]),
        (&["neg".to_string(), "pos".into()][..], &[1, 0][..])
    );
    write_parquet(
        &dir.path().join(TRAIN),
        vec![("text", texts(&["a", "b", "c"])), ("label", texts(&["pos", "neg", "Pos"]))],
        None,
    );
    let (err, msg) = load_error(dir.path());
    assert!(matches!(err, DataError::UnknownLabel { row: 2, .. }), "{msg}");
    assert_eq!(
        msg,
        format!(
            "{}: row 2: label \"Pos\" is not one of the 2 class names {} declares: neg, pos",
            dir.path().join(TRAIN).display(),
            dir.path().join(TEST).display()
        )
    );
    // Without declared names, integer labels in one file and strings in another do not mix.
    write_labels(dir.path(), TEST, &[0, 1], None);
    let (err, msg) = load_error(dir.path());
    assert!(matches!(err, DataError::MixedLabelTypes { .. }), "{msg}");
    assert_eq!(
        msg,
        format!(
            "{} holds integer labels but {} holds string labels; the files of one dataset label their \
             rows alike: class ids 0..k-1 everywhere, or class names everywhere",
            dir.path().join(TEST).display(),
            dir.path().join(TRAIN).display()
        )
    );
    // Strings everywhere: the sorted distinct labels of all files.
    write_parquet(
        &dir.path().join(TEST),
        vec![("text", texts(&["d", "e"])), ("label", texts(&["meh", "neg"]))],
        None,
    );
    let data = load_dir(dir.path()).unwrap();
    assert_eq!(data.class_names, ["Pos", "meh", "neg", "pos"]);
    assert_eq!(data.labels, [3, 2, 0, 1, 2]);
    // An empty string is no label.
    write_parquet(
        &dir.path().join(TEST),
        vec![("text", texts(&["d", "e"])), ("label", texts(&["meh", " "]))],
        None,
    );
    let (err, msg) = load_error(dir.path());
    assert!(matches!(err, DataError::NullValue { row: 1, .. }), "{msg}");
    assert!(msg.ends_with("test-00000-of-00001.parquet: row 1: `label` is empty; every row needs a text and a label: remove the row or fix the export"), "{msg}");
}

#[test]
fn sources_identify_the_bytes_read() {
    use sha2::Digest;
    let dir = good_dir(3, 2);
    let data = load_dir(dir.path()).unwrap();
    assert_eq!(data.sources.len(), 2);
    for (source, file) in data.sources.iter().zip([TRAIN, TEST]) {
        let path = dir.path().join(file);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(source.path, path);
        assert_eq!(source.bytes, bytes.len() as u64);
        let want: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(source.sha256, want);
        assert_eq!(source.modified, std::fs::metadata(&path).unwrap().modified().ok());
        source.check_unchanged().unwrap();
    }
    assert_eq!(data.select(&[0, 4]).sources, data.sources, "a subset keeps its sources");

    // The digest depends on content and order, not on the folder.
    let copy = tempfile::tempdir().unwrap();
    for file in [TRAIN, TEST] {
        std::fs::create_dir_all(copy.path().join("plain_text")).unwrap();
        std::fs::copy(dir.path().join(file), copy.path().join(file)).unwrap();
    }
    let copied = load_dir(copy.path()).unwrap();
    assert_eq!(copied.content_digest(), data.content_digest());
    assert_eq!(data.content_digest().len(), 64);
    let files = [dir.path().join(TEST), dir.path().join(TRAIN)];
    assert_ne!(load_files(&files).unwrap().content_digest(), data.content_digest());

    // A file rewritten or touched after it was read is noticed.
    let train = &data.sources[0];
    let mut bytes = std::fs::read(&train.path).unwrap();
    bytes.push(0);
    std::fs::write(&train.path, &bytes).unwrap();
    let msg = train.check_unchanged().unwrap_err().to_string();
    assert!(
        msg.contains(&format!(
            "{TRAIN}: changed since it was read (its size was {} bytes and is now {})",
            train.bytes,
            train.bytes + 1
        )),
        "{msg}"
    );
    let test = &data.sources[1];
    let later = test.modified.unwrap() + std::time::Duration::from_secs(5);
    std::fs::File::options().write(true).open(&test.path).unwrap().set_modified(later).unwrap();
    let msg = test.check_unchanged().unwrap_err().to_string();
    assert!(msg.contains("changed since it was read (its modification time was "), "{msg}");
}

#[test]
fn shared_imdb_has_the_documented_rows() {
    let Some(shared) = bertlab_test_support::shared_dir() else {
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
    let identity: Vec<(&str, u64, &str)> = all
        .sources
        .iter()
        .map(|s| (s.path.file_name().unwrap().to_str().unwrap(), s.bytes, s.sha256.as_str()))
        .collect();
    assert_eq!(
        identity,
        [
            (
                "train-00000-of-00001.parquet",
                20_599_028,
                "3465b6894885fe8c5b1d688ce170d81fe9b807cac76f47a473126115e503fd5d"
            ),
            (
                "test-00000-of-00001.parquet",
                20_102_262,
                "cd5eab45180e962cff791a0c92b6076e1e65bec018845067ad74460efbe3e002"
            ),
        ],
        "sizes and sha256sum of the shared copy"
    );
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

    let two_texts =
        vec![("text", texts(&["a", "b"])), ("text", texts(&["c", "d"])), ("label", labels(&[0, 1]))];
    write_parquet(&path, two_texts, Some(HF_META));
    let err = load_dir(dir.path()).unwrap_err().to_string();
    assert!(err.ends_with("the schema names two columns `text`; rename one of them"), "{err}");

    let floats: ArrayRef = Arc::new(Float64Array::from(vec![0.0, 1.0]));
    write_parquet(&path, vec![("text", texts(&["a", "b"])), ("label", floats)], Some(HF_META));
    let err = load_dir(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains(
            "column `label` must be an integer or a string, found Float64; labels are class ids 0..k-1 \
             or class names (float labels are regression targets, which bertlab does not train)"
        ),
        "{err}"
    );

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
        DatasetSource::Hub { id: "org/data".into(), revision: "v1".into() }
    );
    assert!(matches!(DatasetSource::parse("../shared/data/hf-imdb").unwrap(), DatasetSource::LocalDir(_)));
    let e = DatasetSource::parse("hub:nodash").unwrap_err();
    assert!(e.to_string().contains("source = \"hub:nodash\""), "{e}");
    assert!(
        bertlab_run::NamesSettings::render(&e, bertlab_run::SettingStyle::Flag).contains("--source"),
        "{e}"
    );
}

#[test]
fn offline_hub_source_says_which_file_is_missing() {
    let cache = tempfile::tempdir().unwrap();
    let hub =
        HubOptions { offline: true, cache_dir: Some(cache.path().to_path_buf()), ..HubOptions::default() };
    let err = DatasetSource::default().load(&hub).unwrap_err().to_string();
    assert!(err.contains("plain_text/train-00000-of-00001.parquet"), "{err}");
    assert!(err.contains("stanfordnlp/imdb") && err.contains(IMDB_REVISION), "{err}");
}

#[test]
fn written_parquet_reads_back_with_rows_and_class_names() {
    let dir = tempfile::tempdir().unwrap();
    let data = LabeledTexts {
        texts: vec!["a film".into(), "ünïcode, \"quotes\" and\nnewlines".into(), " x ".into()],
        labels: vec![1, 0, 2],
        class_names: vec!["neg".into(), "pos".into(), "mixed".into()],
        ..LabeledTexts::default()
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
