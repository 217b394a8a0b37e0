//! Reading and writing one parquet file of `text`/`label` rows, as HF `datasets` writes them.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::{DataError, LabeledTexts};

/// The rows of one parquet file plus the class names its schema metadata declares.
#[derive(Debug, Default)]
pub(crate) struct ParquetRows {
    pub texts: Vec<String>,
    pub labels: Vec<i64>,
    /// `ClassLabel` names from the `huggingface` schema metadata, if any.
    pub class_names: Option<Vec<String>>,
}

/// Read the `text` (string) and `label` (integer) columns of `path`.
pub(crate) fn read_labeled_parquet(path: &Path) -> Result<ParquetRows, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| DataError::NotParquet { path: path.to_path_buf(), message: e.to_string() })?;
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
            });
        }
    }
    let mask = parquet::arrow::ProjectionMask::columns(builder.parquet_schema(), ["text", "label"]);
    let rows = builder.metadata().file_metadata().num_rows().max(0) as usize;
    let reader = builder
        .with_projection(mask)
        .with_batch_size(8192)
        .build()
        .map_err(|e| DataError::NotParquet { path: path.to_path_buf(), message: e.to_string() })?;
    let mut out =
        ParquetRows { texts: Vec::with_capacity(rows), labels: Vec::with_capacity(rows), class_names };
    for batch in reader {
        let batch =
            batch.map_err(|e| DataError::NotParquet { path: path.to_path_buf(), message: e.to_string() })?;
        append_batch(path, &batch, &mut out)?;
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
    match text.data_type() {
        DataType::Utf8 => {
            out.texts.extend(text.as_string::<i32>().iter().map(|s| s.unwrap_or("").to_owned()))
        }
        DataType::LargeUtf8 => {
            out.texts.extend(text.as_string::<i64>().iter().map(|s| s.unwrap_or("").to_owned()))
        }
        DataType::Utf8View => {
            out.texts.extend(text.as_string_view().iter().map(|s| s.unwrap_or("").to_owned()))
        }
        other => unreachable!("text type {other} was checked against the schema"),
    }
    let label = batch.column_by_name("label").expect("projected column");
    null_at(label.as_ref(), "label")?;
    let casted = arrow_cast_to_i64(label.as_ref());
    out.labels.extend(casted);
    Ok(())
}

/// Integer column → i64 values (every Arrow integer width is accepted).
fn arrow_cast_to_i64(array: &dyn Array) -> Vec<i64> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    macro_rules! ints {
        ($($dt:ident => $t:ty),*) => {
            match array.data_type() {
                $(DataType::$dt => array.as_primitive::<$t>().values().iter().map(|&v| v as i64).collect(),)*
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
    names
        .iter()
        .map(|n| n.as_str().map(str::to_owned).ok_or_else(|| format!("ClassLabel name {n} is not a string")))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Write `data` to `path` (atomically) with a `text` string column, an int64 `label` column and
/// the `huggingface` schema metadata declaring the class names, so that the reader above (and HF
/// `datasets`) gets the same rows and `ClassLabel` names back.
pub(crate) fn write_labeled_parquet(path: &Path, data: &LabeledTexts) -> Result<(), DataError> {
    let failed = |message: String| DataError::Write { path: path.to_path_buf(), message };
    let features = serde_json::json!({
        "info": {"features": {
            "text": {"dtype": "string", "_type": "Value"},
            "label": {"names": data.class_names, "_type": "ClassLabel"},
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
    bertlab_hub::write_atomic(path, &bytes).map_err(|e| DataError::io(path, e))
}
