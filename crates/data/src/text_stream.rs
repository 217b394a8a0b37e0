//! Streaming a file of unlabelled texts (one per line, a CSV column or a JSON Lines field), a
//! chunk at a time, so a file of any size, or standard input, is read in bounded memory.
//! Errors name the file and the line, as the labelled readers' do.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::text_io::{csv_error, malformed};
use crate::DataError;

/// How a file holds its texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextFormat {
    /// One text per line; blank lines are skipped.
    Lines,
    /// CSV with a header row naming the columns; the texts are one column.
    Csv,
    /// One JSON object per line; the texts are one string field. Blank lines are skipped.
    Jsonl,
}

impl TextFormat {
    /// The format a file's name says: `.csv`, `.jsonl` or `.ndjson`, else one text per line
    /// (standard input, `-`, included).
    pub fn of_path(path: &Path) -> TextFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some("csv") => TextFormat::Csv,
            Some("jsonl") | Some("ndjson") => TextFormat::Jsonl,
            _ => TextFormat::Lines,
        }
    }
}

/// Where the texts come from.
enum Records {
    Lines(Box<dyn BufRead>),
    Csv { reader: csv::Reader<Box<dyn Read>>, column: usize },
    Jsonl(Box<dyn BufRead>),
}

/// Texts read from a file a chunk at a time ([`TextStream::next_chunk`]).
pub struct TextStream {
    /// The file as errors name it (`standard input` for `-`).
    name: PathBuf,
    /// The JSON field holding the texts (JSON Lines).
    column: String,
    records: Records,
    /// Lines read so far (Lines and JSON Lines).
    line: usize,
}

impl TextStream {
    /// Open `path` (`-`: standard input), texts in `column` for CSV and JSON Lines. A CSV
    /// file's header is read here, so a missing column is an error before any text is used.
    pub fn open(path: &Path, format: TextFormat, column: &str) -> Result<TextStream, DataError> {
        if path == Path::new("-") {
            return TextStream::from_reader("standard input", Box::new(std::io::stdin()), format, column);
        }
        let file = crate::source::open_regular(path).map_err(|e| match e {
            DataError::NotARegularFile { what, .. } => DataError::io(
                path,
                std::io::Error::other(format!(
                    "is {what}, not a regular file; texts are read from a file or from standard input (-)"
                )),
            ),
            other => other,
        })?;
        TextStream::from_reader(path, Box::new(file), format, column)
    }

    /// Read texts from `reader`, called `name` in errors.
    pub fn from_reader(
        name: impl Into<PathBuf>,
        reader: Box<dyn Read>,
        format: TextFormat,
        column: &str,
    ) -> Result<TextStream, DataError> {
        let name = name.into();
        let records = match format {
            TextFormat::Lines => Records::Lines(Box::new(BufReader::new(reader))),
            TextFormat::Jsonl => Records::Jsonl(Box::new(BufReader::new(reader))),
            TextFormat::Csv => {
                let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(reader);
                let headers = reader.headers().map_err(|e| csv_error(&name, "CSV", e))?;
                if headers.is_empty() {
                    return Err(malformed(&name, 1, "empty; a CSV file needs a header row"));
                }
                let at =
                    headers.iter().position(|h| h == column).ok_or_else(|| DataError::MissingColumn {
                        path: name.clone(),
                        column: column.to_string(),
                        role: "text",
                        found: headers.iter().map(str::to_owned).collect(),
                    })?;
                Records::Csv { reader, column: at }
            }
        };
        Ok(TextStream { name, column: column.to_string(), records, line: 0 })
    }

    /// Up to `n` texts, in file order: fewer at the end, none once the file is done.
    pub fn next_chunk(&mut self, n: usize) -> Result<Vec<String>, DataError> {
        let mut texts = Vec::with_capacity(n.min(8192));
        while texts.len() < n {
            let text = match &mut self.records {
                Records::Csv { reader, column } => {
                    let mut record = csv::StringRecord::new();
                    if !reader.read_record(&mut record).map_err(|e| csv_error(&self.name, "CSV", e))? {
                        break;
                    }
                    // The csv reader checks every row has the header's fields.
                    record[*column].to_string()
                }
                Records::Lines(lines) => {
                    let Some(line) = next_line(lines.as_mut(), &self.name, &mut self.line)? else { break };
                    if line.trim().is_empty() {
                        continue;
                    }
                    line
                }
                Records::Jsonl(lines) => {
                    let Some(line) = next_line(lines.as_mut(), &self.name, &mut self.line)? else { break };
                    if line.trim().is_empty() {
                        continue;
                    }
                    jsonl_text(&line, &self.column, &self.name, self.line)?
                }
            };
            texts.push(text);
        }
        Ok(texts)
    }
}

/// The longest line read (a text is cut to the model's tokens anyway): past it, the input is
/// no text file (`/dev/zero` on standard input would fill the memory).
const MAX_LINE_BYTES: u64 = 64 << 20;

/// The next line without its line break, counting lines in `count`; `None` at the end.
fn next_line(lines: &mut dyn BufRead, name: &Path, count: &mut usize) -> Result<Option<String>, DataError> {
    let mut bytes = Vec::new();
    let read =
        lines.take(MAX_LINE_BYTES + 1).read_until(b'\n', &mut bytes).map_err(|e| DataError::io(name, e))?;
    if read == 0 {
        return Ok(None);
    }
    *count += 1;
    if read as u64 > MAX_LINE_BYTES {
        let why = format!("longer than {} MiB; one text a line", MAX_LINE_BYTES >> 20);
        return Err(malformed(name, *count, &why));
    }
    let line = String::from_utf8(bytes)
        .map_err(|_| malformed(name, *count, "not UTF-8 text; save the file as UTF-8"))?;
    let line = line.strip_suffix('\n').unwrap_or(&line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    // A UTF-8 byte order mark (Excel, Notepad) is not part of the first text.
    let line = if *count == 1 { line.strip_prefix('\u{feff}').unwrap_or(line) } else { line };
    Ok(Some(line.to_string()))
}

/// The string `column` of one JSON Lines object (line `at` of `name`), or what is wrong with
/// the line.
fn jsonl_text(line: &str, column: &str, name: &Path, at: usize) -> Result<String, DataError> {
    let value: Value = serde_json::from_str(line).map_err(|e| {
        malformed(name, at, format!("not valid JSON: {e}; JSON Lines holds one object per line"))
    })?;
    let Value::Object(object) = value else {
        return Err(malformed(name, at, "not a JSON object; JSON Lines holds one object per line"));
    };
    let not_a_string = |fields| DataError::TextNotAString {
        path: name.to_path_buf(),
        line: at,
        column: column.into(),
        fields,
    };
    match object.get(column) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(not_a_string(None)),
        None => Err(not_a_string(Some(object.keys().cloned().collect()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(text: &str, format: TextFormat, column: &str) -> Result<TextStream, DataError> {
        TextStream::from_reader("t", Box::new(std::io::Cursor::new(text.as_bytes().to_vec())), format, column)
    }

    fn all(mut s: TextStream, chunk: usize) -> Result<Vec<String>, DataError> {
        let mut out = Vec::new();
        loop {
            let texts = s.next_chunk(chunk)?;
            if texts.is_empty() {
                return Ok(out);
            }
            assert!(texts.len() <= chunk);
            out.extend(texts);
        }
    }

    #[test]
    fn lines_skip_blanks_and_line_breaks_in_chunks() {
        let s = stream("\u{feff}one\r\n\n  \ntwo\nthree", TextFormat::Lines, "text").unwrap();
        assert_eq!(all(s, 2).unwrap(), ["one", "two", "three"]);
    }

    #[test]
    fn csv_column_with_quoted_line_breaks_and_a_bom() {
        let text = "\u{feff}id,text\n1,\"a, \"\"quoted\"\"\nline\"\n2,plain\n";
        let s = stream(text, TextFormat::Csv, "text").unwrap();
        assert_eq!(all(s, 1).unwrap(), ["a, \"quoted\"\nline", "plain"]);
        let e = stream("id,review\n1,x\n", TextFormat::Csv, "text").err().unwrap().to_string();
        assert!(e.starts_with("t: no `text` column (columns: id, review)"), "{e}");
        let e =
            all(stream("id,text\n1,x\n2\n", TextFormat::Csv, "text").unwrap(), 8).unwrap_err().to_string();
        assert!(e.starts_with("t: line 3: this row has 1 field(s) but the header has 2"), "{e}");
    }

    #[test]
    fn jsonl_field_and_errors_name_the_line() {
        let s =
            stream("{\"text\": \"a\"}\n\n{\"text\": \"b\", \"x\": 1}\n", TextFormat::Jsonl, "text").unwrap();
        assert_eq!(all(s, 8).unwrap(), ["a", "b"]);
        let e = all(stream("{\"text\": \"a\"}\n{\"body\": \"b\"}\n", TextFormat::Jsonl, "text").unwrap(), 8)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t: line 2: no string `text` (fields: body)"), "{e}");
        assert!(e.ends_with("; name the text column with `text_column`"), "{e}");
        let e = all(stream("{\"text\": 7}\n", TextFormat::Jsonl, "text").unwrap(), 8).unwrap_err();
        assert!(matches!(e, DataError::TextNotAString { line: 1, fields: None, .. }), "{e}");
        use bertlab_run::{NamesSettings, SettingStyle};
        assert_eq!(
            e.render(SettingStyle::Flag),
            "t: line 1: `text` is not a string; name the text column with --text-column"
        );
        let e = all(stream("{\"text\": 1\n", TextFormat::Jsonl, "text").unwrap(), 8).unwrap_err().to_string();
        assert!(e.starts_with("t: line 1: not valid JSON"), "{e}");
    }

    #[test]
    fn formats_by_name() {
        assert_eq!(TextFormat::of_path(Path::new("a.csv")), TextFormat::Csv);
        assert_eq!(TextFormat::of_path(Path::new("a.ndjson")), TextFormat::Jsonl);
        assert_eq!(TextFormat::of_path(Path::new("-")), TextFormat::Lines);
        assert_eq!(TextFormat::of_path(Path::new("notes.txt")), TextFormat::Lines);
    }
}
