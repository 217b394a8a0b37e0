//! Reading and writing one parquet file of text/label rows, as HF `datasets` writes them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use bertlab_run::MAX_CLASSES;

use crate::rows::{FileRows, Labels};
use crate::source::read_file;
use crate::{DataError, DataOptions, LabeledTexts, RowUnit};

/// Read the text (string) and label (integer or string) columns of `path`.
pub(crate) fn read_parquet(path: &Path, options: &DataOptions) -> Result<FileRows, DataError> {
    let not_parquet = |message: String| DataError::NotParquet { path: path.to_path_buf(), message };
    let (content, source) = read_file(path)?;
    if content.is_empty() {
        return Err(not_parquet("the file is empty (0 bytes)".into()));
    }
    // Parsed from the bytes that were hashed, so the hash is of exactly the data used.
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(content))
        .map_err(|e| not_parquet(e.to_string()))?;
    let schema = builder.schema().clone();
    let class_names = match schema.metadata().get("huggingface") {
        Some(meta) => class_names_from_hf_metadata(meta, &options.label_column)
            .map_err(|message| DataError::BadMetadata { path: path.to_path_buf(), message })?,
        None => None,
    };
    let (text_column, label_column) = (options.text_column.as_str(), options.label_column.as_str());
    let mut indices = Vec::with_capacity(2);
    let mut string_labels = false;
    for (column, role) in [(text_column, "text"), (label_column, "label")] {
        let index = schema.index_of(column).map_err(|_| DataError::MissingColumn {
            path: path.to_path_buf(),
            column: column.to_string(),
            role,
            found: schema.fields().iter().map(|f| f.name().clone()).collect(),
        })?;
        // (`index_of` takes the first of two same-named columns; a CSV header with two is
        // refused too.)
        if schema.fields().iter().filter(|f| f.name() == column).count() > 1 {
            return Err(DataError::BadMetadata {
                path: path.to_path_buf(),
                message: format!("the schema names two columns `{column}`; rename one of them"),
            });
        }
        indices.push(index);
        let data_type = schema.field(index).data_type();
        let is_string = matches!(data_type, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
        let ok = match role {
            "text" => is_string,
            _ => is_string || data_type.is_integer(),
        };
        if role == "label" {
            string_labels = is_string;
        }
        if !ok {
            return Err(DataError::ColumnType {
                path: path.to_path_buf(),
                column: column.to_string(),
                want: if role == "text" { "a string" } else { "an integer or a string" },
                found: data_type.to_string(),
                hint: match role {
                    "text" => "",
                    _ => {
                        "; labels are class ids 0..k-1 or class names (float labels are regression \
                         targets, which bertlab does not train)"
                    }
                },
            });
        }
    }
    let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), indices);
    let rows = builder.metadata().file_metadata().num_rows().max(0) as usize;
    if rows == 0 {
        return Err(DataError::NoRows { path: path.to_path_buf() });
    }
    let reader = builder
        .with_projection(mask)
        .with_batch_size(8192)
        .build()
        .map_err(|e| not_parquet(e.to_string()))?;
    // The row count comes from the footer: a corrupt one must not size an allocation, so a
    // larger file grows the vectors as rows actually arrive.
    let capacity = rows.min(1 << 20);
    let mut out = FileRows {
        texts: Vec::with_capacity(capacity),
        labels: if string_labels {
            Labels::Strings(Vec::with_capacity(capacity))
        } else {
            Labels::Ints(Vec::with_capacity(capacity))
        },
        class_names,
        source,
        lines: None,
    };
    for batch in reader {
        let batch = batch.map_err(|e| not_parquet(e.to_string()))?;
        append_batch(path, &batch, options, &mut out)?;
    }
    if out.texts.is_empty() {
        return Err(DataError::NoRows { path: path.to_path_buf() });
    }
    Ok(out)
}

/// The values of a string column.
fn strings(array: &dyn Array) -> Box<dyn Iterator<Item = Option<&str>> + '_> {
    use arrow_array::cast::AsArray;
    match array.data_type() {
        DataType::Utf8 => Box::new(array.as_string::<i32>().iter()),
        DataType::LargeUtf8 => Box::new(array.as_string::<i64>().iter()),
        DataType::Utf8View => Box::new(array.as_string_view().iter()),
        other => unreachable!("string type {other} was checked against the schema"),
    }
}

fn append_batch(
    path: &Path,
    batch: &RecordBatch,
    options: &DataOptions,
    out: &mut FileRows,
) -> Result<(), DataError> {
    let first_row = out.texts.len();
    let null_at = |array: &dyn Array, column: &str| -> Result<(), DataError> {
        if array.null_count() > 0 {
            let i = (0..array.len()).find(|&i| array.is_null(i)).unwrap_or(0);
            return Err(DataError::NullValue {
                path: path.to_path_buf(),
                column: column.to_string(),
                row: first_row + i,
                unit: RowUnit::Row,
                what: "null",
            });
        }
        Ok(())
    };
    let text = batch.column_by_name(&options.text_column).expect("projected column");
    null_at(text.as_ref(), &options.text_column)?;
    for (i, s) in strings(text.as_ref()).enumerate() {
        let s = s.unwrap_or("");
        // HF `datasets` and the tokenizer accept an empty review and make it `[CLS] [SEP]`, a row
        // that trains the model to tie its label to no text at all. An empty or blank text in a
        // labelled dataset is a broken export, not a review: refuse it, naming the row.
        if crate::is_blank_text(s) {
            return Err(DataError::EmptyText {
                path: path.to_path_buf(),
                column: options.text_column.clone(),
                row: first_row + i,
                unit: RowUnit::Row,
            });
        }
        out.texts.push(s.to_owned());
    }
    let label = batch.column_by_name(&options.label_column).expect("projected column");
    null_at(label.as_ref(), &options.label_column)?;
    match &mut out.labels {
        Labels::Ints(values) => values.extend(arrow_cast_to_i128(label.as_ref())),
        Labels::Strings(values) => {
            for (i, s) in strings(label.as_ref()).enumerate() {
                let s = s.unwrap_or("");
                if s.trim().is_empty() {
                    return Err(DataError::NullValue {
                        path: path.to_path_buf(),
                        column: options.label_column.clone(),
                        row: first_row + i,
                        unit: RowUnit::Row,
                        what: "empty",
                    });
                }
                values.push(s.to_owned());
            }
        }
    }
    Ok(())
}

/// Integer column → i128 values (every Arrow integer width is accepted, exactly).
fn arrow_cast_to_i128(array: &dyn Array) -> Vec<i128> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    macro_rules! ints {
        ($($dt:ident => $t:ty),*) => {
            match array.data_type() {
                $(DataType::$dt => array.as_primitive::<$t>().values().iter().map(|&v| v as i128).collect(),)*
                other => unreachable!("label type {other} was checked against the schema"),
            }
        };
    }
    ints!(Int8 => Int8Type, Int16 => Int16Type, Int32 => Int32Type, Int64 => Int64Type,
          UInt8 => UInt8Type, UInt16 => UInt16Type, UInt32 => UInt32Type, UInt64 => UInt64Type)
}

/// `{"info": {"features": {"<column>": {"_type": "ClassLabel", "names": [...]}}}}` → names.
fn class_names_from_hf_metadata(meta: &str, column: &str) -> Result<Option<Vec<String>>, String> {
    let value: serde_json::Value =
        serde_json::from_str(meta).map_err(|e| format!("`huggingface` schema metadata is not JSON: {e}"))?;
    let label = &value["info"]["features"][column];
    if label["_type"] != "ClassLabel" {
        return Ok(None);
    }
    let names = label["names"].as_array().ok_or_else(|| {
        format!("`huggingface` metadata: features.{column} is a ClassLabel without `names`")
    })?;
    if names.is_empty() {
        return Err(format!("`huggingface` metadata: features.{column} is a ClassLabel with no names"));
    }
    if names.len() > MAX_CLASSES {
        return Err(format!(
            "`huggingface` metadata: features.{column} declares {} class names, above the limit of \
             {MAX_CLASSES} (bertlab_run::MAX_CLASSES)",
            names.len()
        ));
    }
    let names = names
        .iter()
        .map(|n| n.as_str().map(str::to_owned).ok_or_else(|| format!("ClassLabel name {n} is not a string")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = std::collections::HashMap::new();
    for (id, name) in names.iter().enumerate() {
        if let Some(first) = seen.insert(name.as_str(), id) {
            return Err(format!(
                "`huggingface` metadata: ClassLabel classes {first} and {id} are both named {name:?}; \
                 class names must differ"
            ));
        }
    }
    Ok(Some(names))
}

/// Write `data` to `path` (atomically) with a `text` string column, an int64 `label` column and
/// the `huggingface` schema metadata declaring the class names, so that the reader above (and HF
/// `datasets`) gets the same rows and `ClassLabel` names back.
pub(crate) fn write_labeled_parquet(path: &Path, data: &LabeledTexts) -> Result<(), DataError> {
    let failed = |message: String| DataError::Write { path: path.to_path_buf(), message };
    // Without names the labels are plain class ids: a ClassLabel with no names is refused on reading.
    let label_feature = if data.class_names.is_empty() {
        serde_json::json!({"dtype": "int64", "_type": "Value"})
    } else {
        serde_json::json!({"names": data.class_names, "_type": "ClassLabel"})
    };
    let features = serde_json::json!({
        "info": {"features": {
            "text": {"dtype": "string", "_type": "Value"},
            "label": label_feature,
        }}
    });
    let metadata = HashMap::from([("huggingface".to_string(), features.to_string())]);
    let schema = Arc::new(Schema::new_with_metadata(
        vec![Field::new("text", DataType::Utf8, false), Field::new("label", DataType::Int64, false)],
        metadata,
    ));
    let texts = StringArray::from_iter_values(data.texts.iter());
    let labels = Int64Array::from_iter_values(data.labels.iter().map(|&l| i64::from(l)));
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(texts), Arc::new(labels)])
        .map_err(|e| failed(e.to_string()))?;
    // Snappy, as the Hub's parquet conversion writes (and the only codec this build reads).
    let properties = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut bytes = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut bytes, schema, Some(properties)).map_err(|e| failed(e.to_string()))?;
    writer.write(&batch).map_err(|e| failed(e.to_string()))?;
    writer.close().map_err(|e| failed(e.to_string()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    }
    bertlab_run::write_atomic(path, &bytes).map_err(|e| DataError::io(path, e))
}
