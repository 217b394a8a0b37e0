//! Reading CSV (or TSV) files with a header row, and JSON Lines files, into rows of text and
//! label. Rows are named by the line they start on, as an editor shows it.

use std::path::Path;

use serde_json::Value;

use crate::rows::{FileRows, Labels};
use crate::source::read_file;
use crate::{DataError, DataOptions, RowUnit};

/// The byte order mark some editors (Excel) put at the start of UTF-8 files.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

pub(crate) fn malformed(path: &Path, line: usize, message: impl Into<String>) -> DataError {
    DataError::Malformed { path: path.to_path_buf(), line, message: message.into() }
}

/// The line (from 1) holding byte `offset` of `text`.
fn line_of(text: &[u8], offset: usize) -> usize {
    1 + text[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count()
}

/// The line a record starting at byte `start` is on: past any line-break bytes the reader
/// left before it.
fn record_line(body: &[u8], start: usize) -> usize {
    let skipped = body[start.min(body.len())..].iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
    line_of(body, start + skipped)
}

/// Read a CSV (`delimiter` `,`) or TSV (`\t`) file whose first row names the columns. Fields
/// holding the delimiter, quotes or line breaks are in double quotes, as RFC 4180 has it.
/// Labels are integers when every label field is one, else class names.
pub(crate) fn read_csv(path: &Path, delimiter: u8, options: &DataOptions) -> Result<FileRows, DataError> {
    let format = if delimiter == b'\t' { "TSV" } else { "CSV" };
    let (content, source) = read_file(path)?;
    if content.is_empty() {
        let example = if delimiter == b'\t' { "text<TAB>label" } else { "text,label" };
        return Err(malformed(
            path,
            1,
            format!(
                "the file is empty (0 bytes): a {format} file starts with a header row naming its \
                 columns, e.g. `{example}`"
            ),
        ));
    }
    let body = content.strip_prefix(UTF8_BOM).unwrap_or(&content);
    let mut reader = csv::ReaderBuilder::new().delimiter(delimiter).has_headers(true).from_reader(body);
    let headers = reader.headers().map_err(|e| csv_error(path, format, e))?.clone();
    let mut columns = Vec::with_capacity(2);
    for (column, role) in [(&options.text_column, "text"), (&options.label_column, "label")] {
        let mut at = headers.iter().enumerate().filter(|(_, h)| h == column).map(|(i, _)| i);
        let index = at.next().ok_or_else(|| DataError::MissingColumn {
            path: path.to_path_buf(),
            column: column.clone(),
            role,
            found: headers.iter().map(str::to_owned).collect(),
        })?;
        if at.next().is_some() {
            return Err(malformed(
                path,
                1,
                format!("the header names two columns `{column}`; rename one of them"),
            ));
        }
        columns.push(index);
    }
    let (text_at, label_at) = (columns[0], columns[1]);
    let mut texts = Vec::new();
    let mut labels = Vec::new();
    let mut lines = Vec::new();
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record).map_err(|e| csv_error(path, format, e))? {
        // From the record's first byte: the csv crate's line count is one behind after a
        // CRLF (it counts the `\n` of the previous record's `\r\n` when it reads the next one).
        let line = record.position().map_or(0, |p| record_line(body, p.byte() as usize));
        let text = &record[text_at];
        if crate::is_blank_text(text) {
            return Err(DataError::EmptyText {
                path: path.to_path_buf(),
                column: options.text_column.clone(),
                row: line,
                unit: RowUnit::Line,
            });
        }
        let label = &record[label_at];
        if label.trim().is_empty() {
            return Err(DataError::NullValue {
                path: path.to_path_buf(),
                column: options.label_column.clone(),
                row: line,
                unit: RowUnit::Line,
                what: "empty",
            });
        }
        texts.push(text.to_owned());
        labels.push(label.to_owned());
        lines.push(line);
    }
    if texts.is_empty() {
        return Err(DataError::NoRows { path: path.to_path_buf() });
    }
    // A column of integers is class ids, as `datasets` (pandas) types it int64. Among numbers,
    // a fraction, NaN or infinity is no class (a float column in parquet is refused the same
    // way); whole numbers written as floats (`1.0`) stay names, which the spelling check holds
    // to one spelling a number.
    let numbers: Option<Vec<f64>> = labels.iter().map(|l| l.trim().parse::<f64>().ok()).collect();
    if let Some(numbers) = numbers {
        if let Some(at) = numbers.iter().position(|x| !(x.is_finite() && x.fract() == 0.0)) {
            let why = not_a_class_id(&options.label_column, labels[at].trim());
            return Err(malformed(path, lines[at], why));
        }
    }
    let ids: Option<Vec<i128>> = labels.iter().map(|l| l.trim().parse::<i128>().ok()).collect();
    let labels = match ids {
        Some(ids) => Labels::Ints(ids),
        None => Labels::Strings(labels),
    };
    Ok(FileRows { texts, labels, class_names: None, source, lines: Some(lines) })
}

pub(crate) fn csv_error(path: &Path, format: &str, error: csv::Error) -> DataError {
    let line = error.position().map_or(1, |p| p.line() as usize);
    let text = error.to_string();
    match error.into_kind() {
        csv::ErrorKind::Io(e) => DataError::io(path, e),
        csv::ErrorKind::Utf8 { err, .. } => malformed(
            path,
            line,
            format!("field {} is not UTF-8 text; save the file as UTF-8", err.field() + 1),
        ),
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => malformed(
            path,
            line,
            format!(
                "this row has {len} field(s) but the header has {expected_len}; in {format}, a field \
                 holding the delimiter, a quote or a line break must be in double quotes"
            ),
        ),
        // The reader makes no other kind of error while reading strings.
        _ => malformed(path, line, format!("not readable as {format}: {text}")),
    }
}

/// Why the number `value` of `column` is no class id: a fraction (a regression target), a
/// missing value (NaN), or out of range.
fn not_a_class_id(column: &str, value: &str) -> String {
    let why = match value.parse::<f64>() {
        Ok(x) if x.is_nan() => "NaN marks a missing label; give every row its class",
        Ok(x) if x.abs() < 2f64.powi(63) => {
            "labels are class ids (integers) or class names (strings); float labels are regression \
             targets, which bertlab does not train"
        }
        _ => "too large for a class id; labels are class ids (integers from 0) or class names (strings)",
    };
    format!("`{column}` is {value}: {why}")
}

/// What a JSON value is, for messages.
fn kind_of(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// Read a JSON Lines file: one object per line, blank lines skipped. Texts are JSON strings;
/// labels are integers (class ids) or strings (class names), one or the other throughout.
pub(crate) fn read_jsonl(path: &Path, options: &DataOptions) -> Result<FileRows, DataError> {
    let (content, source) = read_file(path)?;
    let body = content.strip_prefix(UTF8_BOM).unwrap_or(&content);
    let text = std::str::from_utf8(body).map_err(|e| {
        malformed(path, line_of(body, e.valid_up_to()), "not UTF-8 text; save the file as UTF-8")
    })?;
    if text.trim_start().starts_with('[') {
        let line = line_of(body, text.find('[').unwrap_or(0));
        return Err(malformed(
            path,
            line,
            "the file is one JSON array; bertlab reads JSON Lines, one object per line (datasets: \
             `ds.to_json(path)`; pandas: `df.to_json(path, orient=\"records\", lines=True)`)",
        ));
    }
    let (text_column, label_column) = (&options.text_column, &options.label_column);
    let mut texts = Vec::new();
    let mut ints = Vec::new();
    let mut strings = Vec::new();
    let mut lines = Vec::new();
    // The line of the first label and whether it was a string: the column's kind.
    let mut first_label: Option<(usize, bool)> = None;
    for (i, line) in text.split('\n').enumerate() {
        let number = i + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).map_err(|e| {
            malformed(path, number, format!("not valid JSON: {e}; JSON Lines holds one object per line"))
        })?;
        let Value::Object(object) = value else {
            return Err(malformed(
                path,
                number,
                format!(
                    "{}, not an object; JSON Lines holds one object per line, e.g. \
                     {{\"{text_column}\": \"…\", \"{label_column}\": …}}",
                    kind_of(&value)
                ),
            ));
        };
        if lines.is_empty() {
            for (column, role) in [(text_column, "text"), (label_column, "label")] {
                if !object.contains_key(column.as_str()) {
                    return Err(DataError::MissingColumn {
                        path: path.to_path_buf(),
                        column: column.clone(),
                        role,
                        found: object.keys().cloned().collect(),
                    });
                }
            }
        }
        let missing = |column: &String, what| DataError::NullValue {
            path: path.to_path_buf(),
            column: column.clone(),
            row: number,
            unit: RowUnit::Line,
            what,
        };
        match object.get(text_column.as_str()) {
            None | Some(Value::Null) => return Err(missing(text_column, "null or missing")),
            Some(Value::String(s)) if crate::is_blank_text(s) => {
                return Err(DataError::EmptyText {
                    path: path.to_path_buf(),
                    column: text_column.clone(),
                    row: number,
                    unit: RowUnit::Line,
                })
            }
            Some(Value::String(s)) => texts.push(s.clone()),
            Some(other) => {
                return Err(malformed(
                    path,
                    number,
                    format!("`{text_column}` must be a string, found {}", kind_of(other)),
                ))
            }
        }
        let is_string = match object.get(label_column.as_str()) {
            None | Some(Value::Null) => return Err(missing(label_column, "null or missing")),
            Some(Value::String(s)) if s.trim().is_empty() => return Err(missing(label_column, "empty")),
            Some(Value::String(s)) => {
                strings.push(s.clone());
                true
            }
            Some(Value::Number(n)) => {
                let Some(id) = n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from)) else {
                    return Err(malformed(path, number, not_a_class_id(label_column, &n.to_string())));
                };
                ints.push(id);
                false
            }
            Some(other) => {
                return Err(malformed(
                    path,
                    number,
                    format!(
                        "`{label_column}` must be a class id (integer) or a class name (string), found {}",
                        kind_of(other)
                    ),
                ))
            }
        };
        match first_label {
            None => first_label = Some((number, is_string)),
            Some((first, was_string)) if was_string != is_string => {
                let (here, there) =
                    if is_string { ("a string", "a number") } else { ("a number", "a string") };
                return Err(malformed(
                    path,
                    number,
                    format!(
                        "`{label_column}` is {here} here but {there} on line {first}; a label column \
                         holds class ids or class names, not both"
                    ),
                ));
            }
            Some(_) => {}
        }
        lines.push(number);
    }
    if texts.is_empty() {
        return Err(DataError::NoRows { path: path.to_path_buf() });
    }
    let labels = match first_label {
        Some((_, true)) => Labels::Strings(strings),
        _ => Labels::Ints(ints),
    };
    Ok(FileRows { texts, labels, class_names: None, source, lines: Some(lines) })
}
