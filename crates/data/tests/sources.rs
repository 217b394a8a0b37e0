//! Any text-classification dataset: every Hub layout through the local Hub stand-in and as a
//! local directory, one parquet, CSV or JSON Lines file, named columns, string labels and
//! ClassLabel names, and the data errors each of them can meet.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{Field, Schema};
use bertlab_data::{DataError, DataOptions, DatasetSource, DatasetSplits, HubOptions, LabeledTexts, Split};
use bertlab_hub::NetworkSettings;
use bertlab_hub_standin::{HubStandin, RepoKind};
use bertlab_run::{NamesSettings, SettingStyle};

const COMMIT: &str = "5d1e7a0c3b9f2e4d6a8c0b1e3f5a7c9e1b3d5f70";

/// The four topics of the news fixture, in the order rows cycle through them.
const TOPICS: [&str; 4] = ["world", "sports", "business", "sci/tech"];

/// Labels as a column stores them.
enum Column<'a> {
    Strings(&'a [String]),
    Ints(&'a [i64]),
}

/// Write a parquet file with a text column and a label column of these names, and optionally the
/// `huggingface` metadata declaring `names` for the label column.
fn write_table(
    path: &Path,
    text_column: &str,
    label_column: &str,
    texts: &[String],
    labels: Column,
    names: Option<&[&str]>,
) {
    let labels: ArrayRef = match labels {
        Column::Strings(v) => Arc::new(StringArray::from(v.to_vec())),
        Column::Ints(v) => Arc::new(Int64Array::from(v.to_vec())),
    };
    let texts: ArrayRef = Arc::new(StringArray::from(texts.to_vec()));
    let fields = vec![
        Field::new(text_column, texts.data_type().clone(), true),
        Field::new(label_column, labels.data_type().clone(), true),
    ];
    let mut meta = HashMap::new();
    if let Some(names) = names {
        let features = serde_json::json!({"info": {"features": {
            text_column: {"dtype": "string", "_type": "Value"},
            label_column: {"names": names, "_type": "ClassLabel"},
        }}});
        meta.insert("huggingface".to_string(), features.to_string());
    }
    let schema = Arc::new(Schema::new_with_metadata(fields, meta));
    let batch = RecordBatch::try_new(schema.clone(), vec![texts, labels]).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// `n` rows of split `split`, topics cycling through [`TOPICS`] from `offset`.
fn news(split: &str, n: usize, offset: usize) -> (Vec<String>, Vec<String>) {
    let topics: Vec<String> = (0..n).map(|i| TOPICS[(i + offset) % 4].to_string()).collect();
    let texts = topics.iter().enumerate().map(|(i, t)| format!("{split} headline {i} on {t}")).collect();
    (texts, topics)
}

/// Write split `split` of the news fixture, `n` rows, to `dir/rel`, labels as strings in
/// `headline`/`topic` columns.
fn write_news(dir: &Path, rel: &str, split: &str, n: usize) {
    let (texts, topics) = news(split, n, 0);
    write_table(&dir.join(rel), "headline", "topic", &texts, Column::Strings(&topics), None);
}

fn news_options() -> DataOptions {
    DataOptions { text_column: "headline".into(), label_column: "topic".into(), config: None }
}

/// The news fixture's class names: the sorted distinct topics.
fn sorted_topics() -> Vec<String> {
    let mut names: Vec<String> = TOPICS.iter().map(|t| t.to_string()).collect();
    names.sort();
    names
}

/// Class ids of `topics` under the sorted names.
fn ids(topics: &[String]) -> Vec<u32> {
    let names = sorted_topics();
    topics.iter().map(|t| names.iter().position(|n| n == t).unwrap() as u32).collect()
}

/// A stand-in Hub and options that talk to it only, with a fresh cache.
struct Hub {
    standin: HubStandin,
    cache: tempfile::TempDir,
}

impl Hub {
    fn start() -> Hub {
        Hub { standin: HubStandin::start().unwrap(), cache: tempfile::tempdir().unwrap() }
    }

    fn serve(&self, id: &str, revision: &str, dir: &Path) {
        self.standin.add_repo(RepoKind::Dataset, id, revision, COMMIT, dir).unwrap();
    }

    fn options(&self) -> HubOptions {
        HubOptions {
            endpoint: Some(self.standin.url()),
            cache_dir: Some(self.cache.path().to_path_buf()),
            network: Some(NetworkSettings {
                connect_timeout: Duration::from_secs(2),
                read_timeout: Duration::from_secs(2),
                retries: 0,
                backoff: Duration::from_millis(10),
            }),
            ignore_env: true,
            ..HubOptions::default()
        }
    }
}

fn local(dir: &Path) -> DatasetSource {
    DatasetSource::LocalDir(dir.to_path_buf())
}

fn hub_source(id: &str) -> DatasetSource {
    DatasetSource::parse(&format!("hub:{id}")).unwrap()
}

/// Texts and labels of a split, for comparing loads from different places.
fn rows(data: &LabeledTexts) -> (&[String], &[u32]) {
    (&data.texts, &data.labels)
}

fn same_rows(a: &DatasetSplits, b: &DatasetSplits) {
    assert_eq!(a.class_names(), b.class_names());
    assert_eq!(rows(&a.train), rows(&b.train));
    assert_eq!(a.validation.as_ref().map(rows), b.validation.as_ref().map(rows));
    assert_eq!(a.test.as_ref().map(rows), b.test.as_ref().map(rows));
    let digests = |s: &DatasetSplits| s.joined().content_digest();
    assert_eq!(digests(a), digests(b), "the same bytes were read");
}

#[test]
fn data_folder_layout_from_the_hub_and_from_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    write_news(dir.path(), "data/train-00000-of-00002.parquet", "train", 20);
    // A second shard: rows follow in shard order.
    let (texts, topics) = news("train2", 8, 1);
    write_table(
        &dir.path().join("data/train-00001-of-00002.parquet"),
        "headline",
        "topic",
        &texts,
        Column::Strings(&topics),
        None,
    );
    write_news(dir.path(), "data/validation-00000-of-00001.parquet", "validation", 8);
    write_news(dir.path(), "data/test-00000-of-00001.parquet", "test", 12);
    std::fs::write(dir.path().join("README.md"), "# news\n").unwrap();

    let from_dir = local(dir.path()).load_splits(&news_options(), &HubOptions::default()).unwrap();
    assert_eq!(from_dir.class_names(), ["business", "sci/tech", "sports", "world"]);
    assert_eq!(
        (
            from_dir.train.len(),
            from_dir.validation.as_ref().unwrap().len(),
            from_dir.test.as_ref().unwrap().len()
        ),
        (28, 8, 12)
    );
    assert_eq!(from_dir.train.texts[0], "train headline 0 on world");
    assert_eq!(from_dir.train.texts[20], "train2 headline 0 on sports");
    let (_, train_topics) = news("train", 20, 0);
    assert_eq!(from_dir.train.labels[..20], ids(&train_topics)[..]);
    assert_eq!(from_dir.train.class_counts(), [7, 7, 7, 7]);
    assert_eq!(from_dir.present(), [Split::Train, Split::Validation, Split::Test]);
    assert_eq!(from_dir.train.sources.len(), 2);

    let hub = Hub::start();
    hub.serve("org/news", "main", dir.path());
    let from_hub = hub_source("org/news").load_splits(&news_options(), &hub.options()).unwrap();
    same_rows(&from_dir, &from_hub);
    let requests: Vec<String> =
        hub.standin.requests().into_iter().filter(|r| r.is_api()).map(|r| r.path).collect();
    assert_eq!(requests, ["/api/datasets/org/news/revision/main"], "one listing finds the files");

    // Offline, the cached snapshot is the listing, and nothing is asked of the Hub.
    hub.standin.clear_requests();
    let offline = HubOptions { offline: true, ..hub.options() };
    let again = hub_source("org/news").load_splits(&news_options(), &offline).unwrap();
    same_rows(&from_hub, &again);
    assert!(hub.standin.requests().is_empty());
}

#[test]
fn config_folders_and_choosing_one() {
    let dir = tempfile::tempdir().unwrap();
    write_news(dir.path(), "news/train-00000-of-00001.parquet", "train", 8);
    write_news(dir.path(), "news/test-00000-of-00001.parquet", "test", 4);
    write_news(dir.path(), "tweets/train-00000-of-00001.parquet", "tweet", 12);
    let hub = Hub::start();
    hub.serve("org/multi", "main", dir.path());
    for (source, place) in [
        (local(dir.path()), dir.path().display().to_string()),
        (hub_source("org/multi"), "hub:org/multi@main".to_string()),
    ] {
        let err = source.load_splits(&news_options(), &hub.options()).unwrap_err();
        assert!(matches!(err, DataError::SeveralConfigs { .. }));
        assert_eq!(
            err.to_string(),
            format!(
                "{place}: the dataset has 2 configs (folders of data files): news, tweets; choose one \
                 with `dataset_config`"
            )
        );
        assert_eq!(
            err.render(SettingStyle::Flag),
            format!(
                "{place}: the dataset has 2 configs (folders of data files): news, tweets; choose one \
                 with --config"
            )
        );
        let tweets = DataOptions { config: Some("tweets".into()), ..news_options() };
        let data = source.load_splits(&tweets, &hub.options()).unwrap();
        assert_eq!((data.train.len(), data.validation.is_none(), data.test.is_none()), (12, true, true));
        assert_eq!(data.train.texts[0], "tweet headline 0 on world");
        let news = DataOptions { config: Some("news".into()), ..news_options() };
        assert_eq!(source.load_splits(&news, &hub.options()).unwrap().len(), 12);
        let nope = DataOptions { config: Some("nope".into()), ..news_options() };
        let err = source.load_splits(&nope, &hub.options()).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("{place}: no config `nope`; its configs (folders of data files): news, tweets")
        );
    }
}

#[test]
fn files_at_the_top_with_dev_as_validation() {
    let dir = tempfile::tempdir().unwrap();
    write_news(dir.path(), "train-00000-of-00001.parquet", "train", 8);
    write_news(dir.path(), "dev-00000-of-00001.parquet", "dev", 4);
    write_news(dir.path(), "test-00000-of-00001.parquet", "test", 4);
    // Other splits and hidden folders are passed over.
    write_news(dir.path(), "unsupervised-00000-of-00001.parquet", "unsupervised", 4);
    write_news(dir.path(), ".cache/huggingface/train-00000-of-00001.parquet", "hidden", 4);
    let hub = Hub::start();
    hub.serve("org/top", "main", dir.path());
    let from_dir = local(dir.path()).load_splits(&news_options(), &HubOptions::default()).unwrap();
    assert_eq!(from_dir.validation.as_ref().unwrap().texts[0], "dev headline 0 on world");
    assert_eq!(from_dir.len(), 16);
    let from_hub = hub_source("org/top").load_splits(&news_options(), &hub.options()).unwrap();
    same_rows(&from_dir, &from_hub);
}

#[test]
fn the_parquet_conversion_branch() {
    let dir = tempfile::tempdir().unwrap();
    write_news(dir.path(), "default/train/0000.parquet", "train", 8);
    write_news(dir.path(), "default/train/0001.parquet", "more", 4);
    write_news(dir.path(), "default/validation/0000.parquet", "validation", 4);
    write_news(dir.path(), "default/test/0000.parquet", "test", 4);
    let hub = Hub::start();
    hub.serve("org/converted", "refs/convert/parquet", dir.path());
    let source = DatasetSource::parse("hub:org/converted@refs/convert/parquet").unwrap();
    assert_eq!(
        source,
        DatasetSource::Hub { id: "org/converted".into(), revision: "refs/convert/parquet".into() }
    );
    let from_hub = source.load_splits(&news_options(), &hub.options()).unwrap();
    assert_eq!(from_hub.train.len(), 12);
    assert_eq!(from_hub.train.texts[8], "more headline 0 on world");
    assert!(hub
        .standin
        .requests()
        .iter()
        .any(|r| r.path == "/api/datasets/org/converted/revision/refs%2Fconvert%2Fparquet"));
    let from_dir = local(dir.path()).load_splits(&news_options(), &HubOptions::default()).unwrap();
    same_rows(&from_dir, &from_hub);
    // `default` is the config of these files; naming it is the same.
    let named = DataOptions { config: Some("default".into()), ..news_options() };
    same_rows(&from_dir, &local(dir.path()).load_splits(&named, &HubOptions::default()).unwrap());
}

#[test]
fn the_pinned_imdb_revision_needs_no_listing() {
    let dir = tempfile::tempdir().unwrap();
    for (split, n) in [("train", 6), ("test", 4)] {
        let texts: Vec<String> = (0..n).map(|i| format!("{split} review {i}")).collect();
        let labels: Vec<i64> = (0..n as i64).map(|i| i % 2).collect();
        let path = dir.path().join(format!("plain_text/{split}-00000-of-00001.parquet"));
        write_table(&path, "text", "label", &texts, Column::Ints(&labels), Some(&["neg", "pos"]));
    }
    let hub = Hub::start();
    hub.serve(bertlab_data::IMDB_DATASET_ID, bertlab_data::IMDB_REVISION, dir.path());
    let data = DatasetSource::parse("hub").unwrap().load(&hub.options()).unwrap();
    assert_eq!(data.len(), 10);
    assert_eq!(data.texts[6], "test review 0", "train rows, then test rows");
    assert_eq!(data.class_names, ["neg", "pos"]);
    assert_eq!(hub.standin.count(|r| r.is_api()), 0, "{:?}", hub.standin.requests());
    let splits = DatasetSource::default().load_splits(&DataOptions::default(), &hub.options()).unwrap();
    assert_eq!(splits.present(), [Split::Train, Split::Test]);
}

/// The same six rows, with commas, quotes and a line break inside texts.
fn tricky_rows() -> (Vec<String>, Vec<String>) {
    let texts = [
        "Stocks rise, bonds fall",
        "A \"historic\" win",
        "Two lines:\nthe second",
        "Rain in Spain",
        "Chips, again",
        "Goal!",
    ];
    let topics = ["business", "sports", "sci/tech", "world", "sci/tech", "sports"];
    (texts.iter().map(|s| s.to_string()).collect(), topics.iter().map(|s| s.to_string()).collect())
}

fn csv_of(texts: &[String], topics: &[String]) -> String {
    let mut out = String::from("id,headline,topic\n");
    for (i, (t, l)) in texts.iter().zip(topics).enumerate() {
        out.push_str(&format!("{i},\"{}\",{l}\n", t.replace('"', "\"\"")));
    }
    out
}

fn jsonl_of(texts: &[String], topics: &[String]) -> String {
    let mut out = String::new();
    for (t, l) in texts.iter().zip(topics) {
        out.push_str(&serde_json::json!({"headline": t, "topic": l, "extra": [1, 2]}).to_string());
        out.push_str("\n\n");
    }
    out
}

#[test]
fn one_file_of_each_format_is_the_train_split() {
    let dir = tempfile::tempdir().unwrap();
    let (texts, topics) = tricky_rows();
    let csv = dir.path().join("news.csv");
    std::fs::write(&csv, csv_of(&texts, &topics)).unwrap();
    let tsv = dir.path().join("news.tsv");
    let tsv_text: String = std::iter::once("headline\ttopic\n".to_string())
        .chain(texts.iter().zip(&topics).map(|(t, l)| format!("\"{}\"\t{l}\n", t.replace('"', "\"\""))))
        .collect();
    std::fs::write(&tsv, tsv_text).unwrap();
    let jsonl = dir.path().join("news.jsonl");
    std::fs::write(&jsonl, jsonl_of(&texts, &topics)).unwrap();
    let parquet = dir.path().join("news.parquet");
    write_table(&parquet, "headline", "topic", &texts, Column::Strings(&topics), None);

    for path in [&csv, &tsv, &jsonl, &parquet] {
        let source = DatasetSource::parse(path.to_str().unwrap()).unwrap();
        assert_eq!(source, DatasetSource::LocalFile(path.clone()));
        let splits = source.load_splits(&news_options(), &HubOptions::default()).unwrap();
        assert_eq!(splits.present(), [Split::Train], "{}", path.display());
        assert_eq!(splits.train.texts, texts, "{}", path.display());
        assert_eq!(splits.class_names(), ["business", "sci/tech", "sports", "world"]);
        assert_eq!(splits.train.labels, [0, 2, 1, 3, 1, 2], "{}", path.display());
        assert_eq!(splits.train.sources[0].path, *path);
        let err = source.load_split(Split::Test, &HubOptions::default()).unwrap_err().to_string();
        assert_eq!(err, format!("{}: no `test` split (splits found: train)", path.display()));
    }

    // Integer labels in a CSV are class ids; a byte order mark and CRLF line ends are read.
    std::fs::write(&csv, "\u{feff}text,label\r\ngood,1\r\nbad,0\r\n\"fine, really\",1\r\n").unwrap();
    let data = DatasetSource::LocalFile(csv.clone()).load(&HubOptions::default()).unwrap();
    assert_eq!((data.texts[2].as_str(), data.labels.as_slice()), ("fine, really", &[1, 0, 1][..]));
    assert_eq!(data.class_names, ["0", "1"]);
    // …and under the rule for undeclared ids, named by line.
    std::fs::write(&csv, "text,label\ngood,1\nbad,0\nodd,3\n").unwrap();
    let err = DatasetSource::LocalFile(csv.clone()).load(&HubOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::MissingClasses { row: 4, .. }));
    assert!(err.to_string().starts_with(&format!(
        "{}: line 4: label 3 implies classes 0 to 3, but no row has label 2;",
        csv.display()
    )));
}

#[test]
fn class_label_names_come_from_the_metadata() {
    let dir = tempfile::tempdir().unwrap();
    // Declared order, not sorted; a declared class with no rows is still a class.
    let names = ["world", "sports", "business", "sci/tech", "weather"];
    let write = |rel: &str, labels: &[i64]| {
        let texts: Vec<String> = (0..labels.len()).map(|i| format!("{rel} {i}")).collect();
        write_table(&dir.path().join(rel), "headline", "topic", &texts, Column::Ints(labels), Some(&names));
    };
    write("data/train-00000-of-00001.parquet", &[0, 1, 2, 3, 0, 1, 2, 3]);
    write("data/test-00000-of-00001.parquet", &[3, 2, 1, 0]);
    let data = local(dir.path()).load_splits(&news_options(), &HubOptions::default()).unwrap();
    assert_eq!(data.class_names(), names);
    assert_eq!(data.test.as_ref().unwrap().labels, [3, 2, 1, 0]);
    assert_eq!(data.joined().class_counts(), [3, 3, 3, 3, 0]);

    // A later split's label outside the declared names is named with file, row and names.
    let test = dir.path().join("data/test-00000-of-00001.parquet");
    write_table(&test, "headline", "topic", &["a".into(), "b".into()], Column::Ints(&[1, 5]), None);
    let err = local(dir.path()).load_splits(&news_options(), &HubOptions::default()).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}: row 1: label 5 is not a class id: {} declares 5 classes, ids 0..4 = world, sports, business, sci/tech, weather",
            test.display(),
            dir.path().join("data/train-00000-of-00001.parquet").display()
        )
    );
    let strings = ["sports".to_string(), "culture".to_string()];
    write_table(&test, "headline", "topic", &["a".into(), "b".into()], Column::Strings(&strings), None);
    let err = local(dir.path()).load_splits(&news_options(), &HubOptions::default()).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "{}: row 1: label \"culture\" is not one of the 5 class names ",
            test.display()
        )),
        "{err}"
    );
    assert!(err.ends_with("declares: world, sports, business, sci/tech, weather"), "{err}");
}

/// A dataset with string labels in the given splits.
fn splits_of(parts: &[(&str, usize)]) -> DatasetSplits {
    let dir = tempfile::tempdir().unwrap();
    for &(split, n) in parts {
        write_news(dir.path(), &format!("data/{split}-00000-of-00001.parquet"), split, n);
    }
    local(dir.path()).load_splits(&news_options(), &HubOptions::default()).unwrap()
}

mod given_splits {
    use super::*;
    use bertlab_data::{train_test_split, NotebookSplit, RunSplits, SplitMode, SplitSize};

    #[test]
    fn given_validation_and_test_are_used_whole() {
        let splits = splits_of(&[("train", 40), ("validation", 8), ("test", 12)]);
        let run = RunSplits::new(&splits, SplitMode::Given, 1.0, 42).unwrap();
        assert_eq!(run.pool, (0..40).collect::<Vec<_>>());
        assert_eq!(run.train, run.pool);
        assert_eq!(run.val, (40..48).collect::<Vec<_>>());
        assert_eq!(run.test, (48..60).collect::<Vec<_>>());

        // The subset is HF's `train_test_split(train_size=0.5, stratify_by_column=…)` of train.
        let run = RunSplits::new(&splits, SplitMode::Given, 0.5, 7).unwrap();
        let drawn =
            train_test_split(&splits.train.labels, SplitSize::TrainFraction(0.5), 7, true).unwrap().train;
        assert_eq!(run.pool, drawn);
        assert_eq!(run.train, drawn);
        assert_eq!((run.val.len(), run.test.len()), (8, 12));
        let joined = splits.joined();
        assert_eq!(joined.select(&run.train).class_counts(), [5, 5, 5, 5]);
        assert_eq!(joined.texts[run.val[0]], "validation headline 0 on world");
        // Reproducible on the seed, and another seed draws other rows.
        assert_eq!(RunSplits::new(&splits, SplitMode::Given, 0.5, 7).unwrap(), run);
        assert_ne!(RunSplits::new(&splits, SplitMode::Given, 0.5, 8).unwrap().train, run.train);
    }

    #[test]
    fn a_missing_validation_split_is_carved_from_the_drawn_train_rows() {
        let splits = splits_of(&[("train", 80), ("test", 12)]);
        let seed = 42;
        let run = RunSplits::new(&splits, SplitMode::Given, 0.5, seed).unwrap();
        let labels = &splits.train.labels;
        let pool = train_test_split(labels, SplitSize::TrainFraction(0.5), seed, true).unwrap().train;
        let pool_labels: Vec<u32> = pool.iter().map(|&r| labels[r]).collect();
        let carved = train_test_split(&pool_labels, SplitSize::TestFraction(0.125), seed, true).unwrap();
        assert_eq!(run.pool, pool);
        assert_eq!(run.train, carved.train.iter().map(|&i| pool[i]).collect::<Vec<_>>());
        assert_eq!(run.val, carved.test.iter().map(|&i| pool[i]).collect::<Vec<_>>());
        assert_eq!((run.train.len(), run.val.len()), (35, 5));
        assert_eq!(run.test, (80..92).collect::<Vec<_>>());
        // At subset 1.0 the carving is of every train row.
        let whole = RunSplits::new(&splits, SplitMode::Given, 1.0, seed).unwrap();
        let carved = train_test_split(labels, SplitSize::TestFraction(0.125), seed, true).unwrap();
        assert_eq!((whole.train, whole.val), (carved.train, carved.test));
    }

    #[test]
    fn notebook_mode_splits_all_rows_joined() {
        let splits = splits_of(&[("train", 80), ("validation", 16), ("test", 24)]);
        let run = RunSplits::new(&splits, SplitMode::Notebook, 0.5, 3).unwrap();
        let notebook = NotebookSplit::new(&splits.joined().labels, 0.5, 3).unwrap();
        assert_eq!(run, RunSplits::from(notebook));
        assert_eq!(splits.joined_labels(), splits.joined().labels);
        assert_eq!(splits.rows_of(Split::Validation), Some(80..96));
        assert_eq!((run.pool.len(), run.train.len(), run.val.len(), run.test.len()), (60, 42, 6, 12));
    }

    #[test]
    fn given_splits_errors_name_what_to_do() {
        let splits = splits_of(&[("train", 32), ("validation", 8)]);
        let err = RunSplits::new(&splits, SplitMode::Given, 1.0, 1).unwrap_err();
        assert!(matches!(err, DataError::NoTestSplit { .. }));
        assert_eq!(
            err.to_string(),
            "the dataset has no test split (its splits: train, validation); `splits = \"given\"` tests on \
             the dataset's own test split: use `splits = \"notebook\"` to split all its rows 70/10/20, or \
             add a test split"
        );
        assert_eq!(
            err.render(SettingStyle::Flag),
            "the dataset has no test split (its splits: train, validation); `--splits given` tests on \
             the dataset's own test split: use `--splits notebook` to split all its rows 70/10/20, or add \
             a test split"
        );
        // Notebook mode needs no test split.
        assert_eq!(RunSplits::new(&splits, SplitMode::Notebook, 1.0, 1).unwrap().test.len(), 8);

        // A class with one row cannot be stratified: named by its name, with its count.
        let dir = tempfile::tempdir().unwrap();
        let mut topics: Vec<String> =
            (0..12).map(|i| ["world", "sports", "business"][i % 3].to_string()).collect();
        topics.push("sci/tech".into());
        let texts: Vec<String> = (0..topics.len()).map(|i| format!("row {i}")).collect();
        write_table(
            &dir.path().join("data/train-0.parquet"),
            "headline",
            "topic",
            &texts,
            Column::Strings(&topics),
            None,
        );
        write_news(dir.path(), "data/test-0.parquet", "test", 3);
        let splits = local(dir.path()).load_splits(&news_options(), &HubOptions::default()).unwrap();
        let err = RunSplits::new(&splits, SplitMode::Given, 1.0, 1).unwrap_err();
        assert!(matches!(err, DataError::ClassTooSmall { count: 1, .. }));
        assert_eq!(
            err.to_string(),
            "cannot split the train rows 87.5/12.5 into train and validation (the dataset has no \
             validation split): class \"sci/tech\" has 1 row(s) there, and a stratified split needs at \
             least 2 of every class; add rows of that class, use a larger `subset`, or remove the class"
        );
        assert!(
            err.render(SettingStyle::Flag).ends_with("use a larger --subset, or remove the class"),
            "{err}"
        );
        let err = RunSplits::new(&splits, SplitMode::Given, 0.5, 1).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "cannot split the train split to a subset of 0.5: class \"sci/tech\" has 1 row(s)"
            ),
            "{err}"
        );
        let err = RunSplits::new(&splits, SplitMode::Notebook, 1.0, 1).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "cannot split the pool 80/20 into train+validation and test: class \"sci/tech\" has 1 row(s)"
            ),
            "{err}"
        );
        let err = RunSplits::new(&splits, SplitMode::Notebook, 0.5, 1).unwrap_err().to_string();
        assert!(
            err.starts_with("cannot split all rows to a subset of 0.5: class \"sci/tech\" has 1 row(s)"),
            "{err}"
        );

        // A class only the test split has cannot be learnt from train.
        let dir = tempfile::tempdir().unwrap();
        write_news(dir.path(), "data/train-0.parquet", "train", 3);
        write_news(dir.path(), "data/test-0.parquet", "test", 8);
        let splits = local(dir.path()).load_splits(&news_options(), &HubOptions::default()).unwrap();
        let err = RunSplits::new(&splits, SplitMode::Given, 1.0, 1).unwrap_err();
        assert_eq!(
            err.render(SettingStyle::Flag),
            "class \"sci/tech\" has no rows in the train split but 2 in the test split: a model cannot \
             learn it from the train split; use `--splits notebook` to split all rows together, or add \
             train rows of it"
        );
        assert_eq!(
            err.to_string(),
            "class \"sci/tech\" has no rows in the train split but 2 in the test split: a model cannot \
             learn it from the train split; use `splits = \"notebook\"` to split all rows together, or \
             add train rows of it"
        );
        let err = RunSplits::new(&splits, SplitMode::Given, 1.5, 1).unwrap_err().to_string();
        assert_eq!(err, "subset = 1.5 is out of range: it must be a fraction in (0, 1]");
    }
}

fn load_file(path: &Path) -> Result<DatasetSplits, DataError> {
    DatasetSource::LocalFile(path.to_path_buf()).load_splits(&news_options(), &HubOptions::default())
}

fn file_error(dir: &Path, name: &str, content: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    let err = load_file(&path).unwrap_err().to_string();
    (path, err)
}

#[test]
fn csv_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        ("", "line 1: the file is empty (0 bytes): a CSV file starts with a header row naming its columns, e.g. `text,label`"),
        ("headline,topic\n", "the file is empty: it holds 0 rows, and every data file must hold labelled rows"),
        (
            "title,topic\nx,world\n",
            "no `headline` column (columns: title, topic); name the text column with `text_column`",
        ),
        (
            "headline,category\nx,world\n",
            "no `topic` column (columns: headline, category); name the label column with `label_column`",
        ),
        // The quoted field spans lines 2-3: the empty text is on line 4.
        (
            "headline,topic\n\"one,\ntwo\",world\n  ,sports\n",
            "line 4: `headline` is empty or only whitespace; a labelled example needs text: remove the row or fix the export",
        ),
        // CRLF line ends (Excel, Python's csv module): the same lines.
        (
            "headline,topic\r\n\"one,\r\ntwo\",world\r\n  ,sports\r\n",
            "line 4: `headline` is empty or only whitespace; a labelled example needs text: remove the row or fix the export",
        ),
        // Only control characters is as blank to the tokenizer (its normaliser drops them).
        (
            "headline,topic\nx,world\n\u{0}\u{fffd},sports\n",
            "line 3: `headline` is empty or only whitespace; a labelled example needs text: remove the row or fix the export",
        ),
        (
            "headline,topic\nx,world\ny,\n",
            "line 3: `topic` is empty; every row needs a text and a label: remove the row or fix the export",
        ),
        (
            "headline,topic\nx,world\nRome, Paris and Oslo,world\n",
            "line 3: this row has 3 field(s) but the header has 2; in CSV, a field holding the delimiter, a quote or a line break must be in double quotes",
        ),
        ("headline,topic,headline\nx,world,y\n", "line 1: the header names two columns `headline`; rename one of them"),
        // A column of numbers with a float or a missing value among them is no column of
        // class names: the row is named, not a class `0.5` or `nan` made.
        (
            "headline,topic\nx,0\ny,1\nz,0.5\n",
            "line 4: `topic` is 0.5: labels are class ids (integers) or class names (strings); float labels are regression targets, which bertlab does not train",
        ),
        ("headline,topic\nx,1\ny,nan\n", "line 3: `topic` is nan: NaN marks a missing label; give every row its class"),
    ];
    for (content, want) in cases {
        let (path, err) = file_error(dir.path(), "news.csv", content);
        assert_eq!(err, format!("{}: {want}", path.display()), "for {content:?}");
    }
    let path = dir.path().join("latin1.csv");
    std::fs::write(&path, b"headline,topic\nna\xefve,world\n").unwrap();
    let err = load_file(&path).unwrap_err().to_string();
    assert_eq!(err, format!("{}: line 2: field 1 is not UTF-8 text; save the file as UTF-8", path.display()));
    // The binary names the column options by their flags.
    for (content, want) in [
        (
            "title,topic\nx,world\n",
            "no `headline` column (columns: title, topic); name the text column with --text-column",
        ),
        (
            "headline,category\nx,world\n",
            "no `topic` column (columns: headline, category); name the label column with --label-column",
        ),
    ] {
        let path = dir.path().join("news.csv");
        std::fs::write(&path, content).unwrap();
        let err = load_file(&path).unwrap_err();
        assert!(matches!(err, DataError::MissingColumn { .. }), "{err}");
        assert_eq!(err.render(SettingStyle::Flag), format!("{}: {want}", path.display()));
    }
}

#[test]
fn jsonl_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        ("", "the file is empty: it holds 0 rows, and every data file must hold labelled rows"),
        ("\n  \n", "the file is empty: it holds 0 rows, and every data file must hold labelled rows"),
        (
            "[{\"headline\": \"x\", \"topic\": \"world\"}]",
            "line 1: the file is one JSON array; bertlab reads JSON Lines, one object per line (datasets: `ds.to_json(path)`; pandas: `df.to_json(path, orient=\"records\", lines=True)`)",
        ),
        (
            "{\"title\": \"x\", \"topic\": \"world\"}\n",
            "no `headline` column (columns: title, topic); name the text column with `text_column`",
        ),
        (
            "{\"headline\": \"x\", \"topic\": \"world\"}\n\n{\"headline\": \"y\", \"topic\": \"world\"\n",
            "line 3: not valid JSON: EOF while parsing an object at line 1 column 34; JSON Lines holds one object per line",
        ),
        (
            "{\"headline\": \"x\", \"topic\": \"world\"}\n\"just text\"\n",
            "line 2: a string, not an object; JSON Lines holds one object per line, e.g. {\"headline\": \"…\", \"topic\": …}",
        ),
        (
            "{\"headline\": \"x\", \"topic\": \"world\"}\n\n\n{\"headline\": \" \", \"topic\": \"world\"}\n",
            "line 4: `headline` is empty or only whitespace; a labelled example needs text: remove the row or fix the export",
        ),
        (
            "{\"headline\": \"x\", \"topic\": \"world\"}\n{\"headline\": \"y\"}\n",
            "line 2: `topic` is null or missing; every row needs a text and a label: remove the row or fix the export",
        ),
        (
            "{\"headline\": \"x\", \"topic\": null}\n",
            "line 1: `topic` is null or missing; every row needs a text and a label: remove the row or fix the export",
        ),
        ("{\"headline\": 7, \"topic\": \"world\"}\n", "line 1: `headline` must be a string, found the number 7"),
        (
            "{\"headline\": \"x\", \"topic\": 0.5}\n",
            "line 1: `topic` is 0.5: labels are class ids (integers) or class names (strings); float labels are regression targets, which bertlab does not train",
        ),
        (
            "{\"headline\": \"x\", \"topic\": 1e30}\n",
            "line 1: `topic` is 1e+30: too large for a class id; labels are class ids (integers from 0) or class names (strings)",
        ),
        (
            "{\"headline\": \"x\", \"topic\": true}\n",
            "line 1: `topic` must be a class id (integer) or a class name (string), found the boolean true",
        ),
        (
            "{\"headline\": \"x\", \"topic\": 1}\n{\"headline\": \"y\", \"topic\": \"world\"}\n",
            "line 2: `topic` is a string here but a number on line 1; a label column holds class ids or class names, not both",
        ),
    ];
    for (content, want) in cases {
        let (path, err) = file_error(dir.path(), "news.jsonl", content);
        assert_eq!(err, format!("{}: {want}", path.display()), "for {content:?}");
    }
    // Integer labels, under the rule for undeclared ids, named by line.
    let (path, err) = file_error(
        dir.path(),
        "ids.jsonl",
        "{\"headline\": \"x\", \"topic\": 0}\n\n{\"headline\": \"y\", \"topic\": -1}\n",
    );
    assert!(err.starts_with(&format!("{}: line 3: label -1 is not a class id", path.display())), "{err}");
}

#[test]
fn source_and_option_errors_say_what_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubOptions::default();
    let xlsx = dir.path().join("news.xlsx");
    std::fs::write(&xlsx, "not read").unwrap();
    let err = DatasetSource::parse(xlsx.to_str().unwrap()).unwrap().load(&hub).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}: not a data file bertlab reads: expected a name ending in .parquet, .csv, .tsv, .jsonl \
             (or .json with one object per line)",
            xlsx.display()
        )
    );
    let csv = dir.path().join("news.csv");
    std::fs::write(&csv, "headline,topic\nx,world\n").unwrap();
    let with_config = DataOptions { config: Some("default".into()), ..news_options() };
    let err = DatasetSource::LocalFile(csv.clone()).load_splits(&with_config, &hub).unwrap_err();
    assert_eq!(
        err.render(SettingStyle::Flag),
        format!(
            "--config chooses among the configs of a Hub dataset or a directory, but {} is one file: \
             leave --config out",
            csv.display()
        )
    );
    assert_eq!(
        err.to_string(),
        format!(
            "`dataset_config` chooses among the configs of a Hub dataset or a directory, but {} is one \
             file: leave `dataset_config` out",
            csv.display()
        )
    );
    let same = DataOptions { label_column: "headline".into(), ..news_options() };
    let err = DatasetSource::LocalFile(csv.clone()).load_splits(&same, &hub).unwrap_err();
    assert_eq!(
        err.render(SettingStyle::Flag),
        "--text-column and --label-column are both `headline`: the texts and the labels are two columns"
    );
    assert_eq!(
        err.to_string(),
        "`text_column` and `label_column` are both `headline`: the texts and the labels are two columns"
    );
    let blank = DataOptions { text_column: " ".into(), ..news_options() };
    let err = DatasetSource::LocalFile(csv.clone()).load_splits(&blank, &hub).unwrap_err();
    assert_eq!(err.render(SettingStyle::Flag), "--text-column is empty: name a column of the data files");
    assert_eq!(err.to_string(), "`text_column` is empty: name a column of the data files");
    let no_config = DataOptions { config: Some(" ".into()), ..news_options() };
    let err = DatasetSource::LocalFile(csv.clone()).load_splits(&no_config, &hub).unwrap_err();
    assert!(matches!(err, DataError::EmptyConfig), "{err}");
    assert!(err.render(SettingStyle::Flag).starts_with("--config is empty: name a config"), "{err}");
    assert!(err.to_string().starts_with("`dataset_config` is empty: name a config"), "{err}");

    // A missing file of a known type is named when read; a directory of no known layout lists
    // what it holds.
    let gone = dir.path().join("gone.jsonl");
    assert_eq!(DatasetSource::parse(gone.to_str().unwrap()).unwrap(), DatasetSource::LocalFile(gone.clone()));
    let err = DatasetSource::LocalFile(gone.clone()).load(&hub).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}: cannot read it: ", gone.display())), "{err}");
    let err = local(dir.path()).load(&hub).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}: no data files in a layout bertlab knows: ", dir.path().display())),
        "{err}"
    );
    assert!(err.ends_with("; it holds news.csv, news.xlsx"), "{err}");
    // A directory whose only split is `test` has no train split to load.
    write_news(dir.path(), "data/test-0.parquet", "test", 4);
    let err = local(dir.path()).load_splits(&news_options(), &hub).unwrap_err().to_string();
    assert_eq!(err, format!("{}: no `train` split (splits found: test)", dir.path().display()));
    let err = local(dir.path()).load_split(Split::Test, &hub).unwrap_err().to_string();
    assert!(err.contains("no `text` column (columns: headline, topic)"), "the default columns: {err}");

    assert!(DatasetSource::parse("hub:org/name@").is_err());
    let err = DatasetSource::parse("").unwrap_err().to_string();
    assert!(err.contains("one .parquet, .csv, .tsv or .jsonl file"), "{err}");
}

#[test]
fn too_many_distinct_labels_is_probably_the_wrong_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ids.csv");
    let mut text = String::from("headline,topic\n");
    for i in 0..=bertlab_run::MAX_CLASSES {
        text.push_str(&format!("text {i},label {i}\n"));
    }
    std::fs::write(&path, text).unwrap();
    let err = load_file(&path).unwrap_err();
    assert_eq!(
        err.render(SettingStyle::Flag),
        format!(
            "`topic` holds 10001 distinct labels (the first in {}), above the limit of 10000 classes; is \
             `topic` the class column? Choose it with --label-column",
            path.display()
        )
    );
    assert_eq!(
        err.to_string(),
        format!(
            "`topic` holds 10001 distinct labels (the first in {}), above the limit of 10000 classes; is \
             `topic` the class column? Choose it with `label_column`",
            path.display()
        )
    );
}

#[test]
fn bad_files_found_in_a_layout_are_refused_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    write_news(dir.path(), "data/train-0.parquet", "train", 4);
    // A folder with a data file's name is reported, not walked into or passed over.
    std::fs::create_dir_all(dir.path().join("data/test-0.parquet")).unwrap();
    let err = local(dir.path()).load_splits(&news_options(), &HubOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::NotARegularFile { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: is a directory, not a regular file; a dataset is read from parquet, CSV or JSON Lines files",
            dir.path().join("data/test-0.parquet").display()
        )
    );
}

#[test]
fn written_parquet_reads_back_with_rows_and_class_names() {
    let dir = tempfile::tempdir().unwrap();
    let data = LabeledTexts {
        texts: vec!["a film".into(), "ünïcode, \"quotes\" and\nnewlines".into(), "third".into()],
        labels: vec![1, 0, 2],
        class_names: vec!["neg".into(), "pos".into(), "mixed".into()],
        sources: Vec::new(),
    };
    let path = dir.path().join("plain_text/train-00000-of-00001.parquet");
    bertlab_data::write_parquet(&path, &data).unwrap();
    let back = bertlab_data::load_files(std::slice::from_ref(&path)).unwrap();
    assert_eq!(
        (back.texts.as_slice(), back.labels.as_slice()),
        (data.texts.as_slice(), data.labels.as_slice())
    );
    assert_eq!(back.class_names, data.class_names);
    // The ClassLabel names bound the labels: a label outside them is refused on reading.
    let bad = LabeledTexts { labels: vec![1, 0, 3], ..data.clone() };
    bertlab_data::write_parquet(&path, &bad).unwrap();
    let err = bertlab_data::load_files(std::slice::from_ref(&path)).unwrap_err().to_string();
    assert!(err.contains("row 2: label 3 is not a class id"), "{err}");
    // A directory in the way of the file is named.
    let blocked = dir.path().join("plain_text");
    let err = bertlab_data::write_parquet(&blocked, &data).unwrap_err().to_string();
    assert!(err.starts_with(&blocked.display().to_string()), "{err}");
}

#[test]
fn shared_imdb_through_load_splits_is_the_notebook_table() {
    let Some(shared) = bertlab_test_support::shared_dir() else {
        eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
        return;
    };
    use bertlab_data::{NotebookSplit, RunSplits, SplitMode};
    let source = DatasetSource::parse(shared.join("data/hf-imdb").to_str().unwrap()).unwrap();
    let splits = source.load_splits(&DataOptions::default(), &HubOptions::default()).unwrap();
    assert_eq!(
        (splits.train.len(), splits.validation.is_none(), splits.test.as_ref().map(LabeledTexts::len)),
        (24_998, true, Some(24_996))
    );
    let joined = splits.joined();
    assert_eq!(joined, source.load(&HubOptions::default()).unwrap());
    let run = RunSplits::new(&splits, SplitMode::Notebook, 0.25, 42).unwrap();
    assert_eq!(run, RunSplits::from(NotebookSplit::new(&joined.labels, 0.25, 42).unwrap()));
    // Given splits: a quarter of train, validation carved from it, the whole test split.
    let given = RunSplits::new(&splits, SplitMode::Given, 0.25, 42).unwrap();
    assert_eq!(
        (given.pool.len(), given.train.len(), given.val.len(), given.test.len()),
        (6249, 5467, 782, 24_996)
    );
    assert!(given.train.iter().chain(&given.val).all(|&r| r < 24_998));
    assert_eq!(joined.select(&given.val).class_counts(), [391, 391]);
}
