//! Reading one parquet file of `text`/`label` rows, as HF `datasets` writes them.

use std::path::Path;

use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use bertlab_run::MAX_CLASSES;

use crate::source::{read_file, FileIdentity};
use crate::DataError;

/// The rows of one parquet file plus the class names its schema metadata declares.
#[derive(Debug)]
pub(crate) struct ParquetRows {
    pub texts: Vec<String>,
    /// As stored; every Arrow integer type fits `i128` exactly, so an error can quote any label.
    pub labels: Vec<i128>,
    /// `ClassLabel` names from the `huggingface` schema metadata, if any.
    pub class_names: Option<Vec<String>>,
    /// The file and the identity of the bytes parsed.
    pub source: FileIdentity,
}

/// Read the `text` (string) and `label` (integer) columns of `path`.
pub(crate) fn read_labeled_parquet(path: &Path) -> Result<ParquetRows, DataError> {
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
        Some(meta) => class_names_from_hf_metadata(meta)
            .map_err(|message| DataError::BadMetadata { path: path.to_path_buf(), message })?,
        None => None,
    };
    for (column, want) in [("text", "a string"), ("label", "an integer")] {
        let field = schema.field_with_name(column).map_err(|_| DataError::MissingColumn {
            path: path.to_path_buf(),
            column,
            found: schema.fields().iter().map(|f| f.name().clone()).collect(),
        })?;
        let ok = match column {
            "text" => matches!(field.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View),
            _ => field.data_type().is_integer(),
        };
        if !ok {
            return Err(DataError::ColumnType {
                path: path.to_path_buf(),
                column,
                want,
                found: field.data_type().to_string(),
                hint: match column {
                    "text" => "",
                    _ => {
                        "; string and float labels are not supported: store class ids 0..k-1, with \
                         their names as a ClassLabel feature in the `huggingface` metadata"
                    }
                },
            });
        }
    }
    let mask = parquet::arrow::ProjectionMask::columns(builder.parquet_schema(), ["text", "label"]);
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
    let mut out = ParquetRows {
        texts: Vec::with_capacity(capacity),
        labels: Vec::with_capacity(capacity),
        class_names,
        source,
    };
    for batch in reader {
        let batch = batch.map_err(|e| not_parquet(e.to_string()))?;
        append_batch(path, &batch, &mut out)?;
    }
    if out.texts.is_empty() {
        return Err(DataError::NoRows { path: path.to_path_buf() });
    }
    Ok(out)
}

fn append_batch(path: &Path, batch: &RecordBatch, out: &mut ParquetRows) -> Result<(), DataError> {
    let first_row = out.texts.len();
    let text = batch.column_by_name("text").expect("projected column");
    let null_at = |array: &dyn Array, column: &'static str| -> Result<(), DataError> {
        if array.null_count() > 0 {
            let i = (0..array.len()).find(|&i| array.is_null(i)).unwrap_or(0);
            return Err(DataError::NullValue { path: path.to_path_buf(), column, row: first_row + i });
        }
        Ok(())
    };
    null_at(text.as_ref(), "text")?;
    use arrow_array::cast::AsArray;
    let strings: Box<dyn Iterator<Item = Option<&str>>> = match text.data_type() {
        DataType::Utf8 => Box::new(text.as_string::<i32>().iter()),
        DataType::LargeUtf8 => Box::new(text.as_string::<i64>().iter()),
        DataType::Utf8View => Box::new(text.as_string_view().iter()),
        other => unreachable!("text type {other} was checked against the schema"),
    };
    for (i, s) in strings.enumerate() {
        let s = s.unwrap_or("");
        // HF `datasets` and the tokenizer accept an empty review and make it `[CLS] [SEP]`, a row
        // that trains the model to tie its label to no text at all. An empty or blank text in a
        // labelled dataset is a broken export, not a review: refuse it, naming the row.
        if s.trim().is_empty() {
            return Err(DataError::EmptyText { path: path.to_path_buf(), row: first_row + i });
        }
        out.texts.push(s.to_owned());
    }
    let label = batch.column_by_name("label").expect("projected column");
    null_at(label.as_ref(), "label")?;
    out.labels.extend(arrow_cast_to_i128(label.as_ref()));
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

/// `{"info": {"features": {"label": {"_type": "ClassLabel", "names": [...]}}}}` → names.
fn class_names_from_hf_metadata(meta: &str) -> Result<Option<Vec<String>>, String> {
    let value: serde_json::Value =
        serde_json::from_str(meta).map_err(|e| format!("`huggingface` schema metadata is not JSON: {e}"))?;
    let label = &value["info"]["features"]["label"];
    if label["_type"] != "ClassLabel" {
        return Ok(None);
    }
    let names = label["names"]
        .as_array()
        .ok_or("`huggingface` metadata: features.label is a ClassLabel without `names`")?;
    if names.is_empty() {
        return Err("`huggingface` metadata: features.label is a ClassLabel with no names".into());
    }
    if names.len() > MAX_CLASSES {
        return Err(format!(
            "`huggingface` metadata: features.label declares {} class names, above the limit of \
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
