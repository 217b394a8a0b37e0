//! Helpers shared by the integration tests: fixtures, tensors from JSON, error measures.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde_json::Value;

/// `../shared/fixtures/<name>`, or `None` (the caller skips) when the shared data is absent.
pub fn fixture(name: &str) -> Option<PathBuf> {
    match bertlab_test_support::shared_dir() {
        Some(dir) => Some(dir.join("fixtures").join(name)),
        None => {
            eprintln!("skipping: ../shared not found (set BERTLAB_SHARED)");
            None
        }
    }
}

pub fn read_json(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A `[rows, cols]` integer matrix from a JSON array of arrays.
pub fn int_matrix<B: Backend>(value: &Value, device: &B::Device) -> Tensor<B, 2, Int> {
    let rows = value.as_array().expect("array of rows");
    let cols = rows[0].as_array().expect("row").len();
    let data: Vec<i64> =
        rows.iter().flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_i64().unwrap())).collect();
    Tensor::from_data(TensorData::new(data, [rows.len(), cols]), device)
}

/// All numbers of a nested JSON array, flattened row-major.
pub fn flat_f32(value: &Value) -> Vec<f32> {
    match value {
        Value::Array(items) => items.iter().flat_map(flat_f32).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap() as f32],
        other => panic!("expected numbers, found {other}"),
    }
}

pub fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

#[allow(unused_imports)] // not every test file compares numbers
pub use bertlab_run::metrics::max_abs_diff;

pub fn labels(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}
