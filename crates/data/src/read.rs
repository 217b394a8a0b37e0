//! Reading a dataset's files: each with the reader of its format, all of them in parallel.

use std::path::{Path, PathBuf};

use crate::rows::{FileRows, Format};
use crate::{parquet_io, text_io, DataError, DataOptions};

/// Read one data file.
pub(crate) fn read_rows(path: &Path, format: Format, options: &DataOptions) -> Result<FileRows, DataError> {
    match format {
        Format::Parquet => parquet_io::read_parquet(path, options),
        Format::Csv => text_io::read_csv(path, b',', options),
        Format::Tsv => text_io::read_csv(path, b'\t', options),
        Format::JsonLines => text_io::read_jsonl(path, options),
    }
}

/// Read files in parallel (decoding is CPU-bound: snappy, UTF-8 validation, CSV and JSON
/// parsing), one thread per file; the first error in file order wins.
pub(crate) fn read_all(
    files: &[(PathBuf, Format)],
    options: &DataOptions,
) -> Result<Vec<FileRows>, DataError> {
    if files.is_empty() {
        return Err(DataError::Empty { what: "the dataset (no files)".into() });
    }
    let parts: Vec<Result<FileRows, DataError>> = std::thread::scope(|s| {
        let handles: Vec<_> =
            files.iter().map(|(f, format)| s.spawn(move || read_rows(f, *format, options))).collect();
        handles
            .into_iter()
            .zip(files)
            .map(|(h, (f, format))| {
                // A reader that panics on a malformed file is a corrupt file to the user.
                h.join().unwrap_or_else(|_| {
                    Err(match format {
                        Format::Parquet => DataError::NotParquet {
                            path: f.clone(),
                            message: "the parquet reader failed on it (see the message above)".into(),
                        },
                        _ => DataError::Malformed {
                            path: f.clone(),
                            line: 1,
                            message: "the reader failed on the file (see the message above)".into(),
                        },
                    })
                })
            })
            .collect()
    });
    parts.into_iter().collect()
}
