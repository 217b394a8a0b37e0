//! Checkpoints inside a run: after each epoch, everything the next epoch needs — the weights,
//! the optimizer's moments and step count, the loss scale, the batch-order generator, the best
//! epoch's weights and the epoch records — so that a run killed in epoch 2 resumes after
//! epoch 1 and ends bit-identical (on the CPU) to one that was never interrupted.
//!
//! Layout, in `<out>/checkpoint/`: `state-<E>.json` names the tensor files of epoch `E`
//! (`model-<E>.bin`, `optimizer-<E>.bin`, and the best epoch's `best-<B>.bin`), and `state.json`
//! (written last, atomically) points at the newest complete set; files of older epochs are
//! removed only after it does. A kill at any moment therefore leaves the previous epoch's
//! checkpoint intact. The tensor files are a small format of their own: `BLTENSR1`, the length of
//! a JSON header (u64, little-endian), the header (each tensor's name and shape), then every
//! tensor's values as little-endian f32, in header order.

use crate::optim::MomentState;
use bertlab_data::rng::Pcg64;
use bertlab_run::{DataSummary, EpochRecord, RunSpec};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::loss_scale::DynamicLossScaler;

const MAGIC: &[u8; 8] = b"BLTENSR1";
const FORMAT: &str = "bertlab-checkpoint/1";

/// The directory of a run's checkpoint.
pub fn checkpoint_dir(out: &Path) -> PathBuf {
    out.join("checkpoint")
}

/// What a checkpoint records besides tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState {
    /// [`FORMAT`].
    pub format: String,
    /// The spec of the run that wrote it (a resume must be of the same run).
    pub spec: RunSpec,
    /// The split sizes and classes it trained on (a resume must see the same data).
    pub data: DataSummary,
    /// The epochs done, with their records.
    pub epochs: Vec<EpochRecord>,
    /// The batch shapes met in those epochs (`None` in checkpoints written before they were
    /// kept).
    #[serde(default)]
    pub shapes: Option<Vec<[usize; 2]>>,
    /// The batch-order generator after the last epoch done.
    pub batch_rng: Pcg64,
    /// The loss scaler after the last epoch done.
    pub scaler: DynamicLossScaler,
    /// Optimizer steps taken.
    pub optimizer_steps: u64,
    /// Seconds spent in the epochs done (so the record's fit time covers the whole run).
    pub fit_seconds: f64,
    /// The weights file.
    pub model_file: String,
    /// The optimizer-state file.
    pub optimizer_file: String,
    /// The best epoch's weights file, once an epoch improved.
    pub best_file: Option<String>,
}

/// A checkpoint that cannot be used to resume; the message says why and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}", path = path.display())]
pub struct CheckpointError {
    /// The file at fault.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

impl CheckpointError {
    fn new(path: &Path, message: impl Into<String>) -> CheckpointError {
        CheckpointError { path: path.to_path_buf(), message: message.into() }
    }

    fn io(path: &Path, e: std::io::Error) -> CheckpointError {
        CheckpointError::new(path, e.to_string())
    }
}

/// Tensors by name: shape and row-major values.
type NamedTensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// A named f32 tensor as the tensor files hold it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TensorEntry {
    name: String,
    shape: Vec<usize>,
}

/// Write `tensors` (name, shape, values) to `path`, atomically.
fn write_tensors(path: &Path, tensors: &[(String, Vec<usize>, &[f32])]) -> std::io::Result<()> {
    let header: Vec<TensorEntry> = tensors
        .iter()
        .map(|(name, shape, _)| TensorEntry { name: name.clone(), shape: shape.clone() })
        .collect();
    let header = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
    bertlab_run::write_atomic_with(path, |w| {
        w.write_all(MAGIC)?;
        w.write_all(&(header.len() as u64).to_le_bytes())?;
        w.write_all(&header)?;
        for (_, _, values) in tensors {
            for v in values.iter() {
                w.write_all(&v.to_le_bytes())?;
            }
        }
        Ok(())
    })
}

/// Read a tensor file: name → (shape, values).
fn read_tensors(path: &Path) -> Result<NamedTensors, CheckpointError> {
    let bad = |m: &str| CheckpointError::new(path, format!("not a bertlab checkpoint tensor file ({m})"));
    let mut file = std::fs::File::open(path).map_err(|e| CheckpointError::io(path, e))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| CheckpointError::io(path, e))?;
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(bad("no BLTENSR1 header"));
    }
    let header_len = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")) as usize;
    let data_start = 16usize
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| bad("truncated header"))?;
    let header: Vec<TensorEntry> =
        serde_json::from_slice(&bytes[16..data_start]).map_err(|e| bad(&format!("header: {e}")))?;
    let total: usize = header.iter().map(|t| t.shape.iter().product::<usize>()).sum();
    if bytes.len() - data_start != total * 4 {
        return Err(bad(&format!("{} bytes of values for {total} f32", bytes.len() - data_start)));
    }
    let mut values =
        bytes[data_start..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4")));
    header
        .into_iter()
        .map(|t| {
            let n = t.shape.iter().product();
            let v: Vec<f32> = values.by_ref().take(n).collect();
            // A run stops at a non-finite loss before it writes a checkpoint, so one here is
            // damage, which training from would only report later as a diverged run.
            match v.iter().position(|x| !x.is_finite()) {
                Some(at) => Err(bad(&format!("{} holds {} at element {at}", t.name, v[at]))),
                None => Ok((t.name, (t.shape, v))),
            }
        })
        .collect()
}

/// Every float parameter of `module`: dotted path, shape, values.
pub(crate) fn parameters<B: Backend, M: Module<B>>(module: &M) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    struct Collect {
        path: Vec<String>,
        out: Vec<(String, Vec<usize>, Vec<f32>)>,
    }
    impl<B: Backend> ModuleVisitor<B> for Collect {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let t = param.val();
            let shape = t.dims().to_vec();
            let values = t.into_data().convert::<f32>().into_vec::<f32>().expect("f32 parameters");
            self.out.push((self.path.join("."), shape, values));
        }
    }
    let mut c = Collect { path: Vec::new(), out: Vec::new() };
    module.visit(&mut c);
    c.out
}

/// `module` with every float parameter replaced by the values of `weights` under its path
/// (shapes checked; every parameter must be there and every weight used).
pub(crate) fn with_parameters<B: Backend, M: Module<B>>(
    module: M,
    mut weights: NamedTensors,
    device: &B::Device,
    source: &Path,
) -> Result<M, CheckpointError> {
    struct Load<'a, B: Backend> {
        path: Vec<String>,
        weights: &'a mut NamedTensors,
        device: &'a B::Device,
        error: Option<String>,
    }
    impl<B: Backend> ModuleMapper<B> for Load<'_, B> {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let path = self.path.join(".");
            let (id, tensor, mapper) = param.consume();
            let dims = tensor.dims();
            let replaced = match self.weights.remove(&path) {
                Some((shape, values)) if shape == dims => {
                    let mut t = Tensor::<B, D>::from_data(TensorData::new(values, dims), self.device);
                    if tensor.is_require_grad() {
                        t = t.require_grad();
                    }
                    t
                }
                Some((shape, _)) => {
                    self.error.get_or_insert(format!("{path} has shape {shape:?}, the model's {dims:?}"));
                    tensor
                }
                None => {
                    self.error.get_or_insert(format!("no weights for {path}"));
                    tensor
                }
            };
            Param::from_mapped_value(id, replaced, mapper)
        }
    }
    let mut load = Load::<B> { path: Vec::new(), weights: &mut weights, device, error: None };
    let module = module.map(&mut load);
    if let Some(e) = load.error {
        return Err(CheckpointError::new(source, format!("does not fit the model: {e}")));
    }
    if let Some(extra) = weights.keys().next() {
        return Err(CheckpointError::new(source, format!("holds {extra}, which the model does not have")));
    }
    Ok(module)
}

/// Write the weights of `module` to `path`.
pub(crate) fn save_weights<B: Backend, M: Module<B>>(module: &M, path: &Path) -> std::io::Result<()> {
    let params = parameters(module);
    let view: Vec<(String, Vec<usize>, &[f32])> =
        params.iter().map(|(n, s, v)| (n.clone(), s.clone(), v.as_slice())).collect();
    write_tensors(path, &view)
}

/// Read weights written by [`save_weights`] into `module`.
pub(crate) fn load_weights<B: Backend, M: Module<B>>(
    module: M,
    path: &Path,
    device: &B::Device,
) -> Result<M, CheckpointError> {
    with_parameters(module, read_tensors(path)?, device, path)
}

/// Write optimizer moments to `path` (`<path>.m` and `<path>.v` per parameter).
pub(crate) fn save_moments(moments: &[MomentState], path: &Path) -> std::io::Result<()> {
    let mut view: Vec<(String, Vec<usize>, &[f32])> = Vec::with_capacity(2 * moments.len());
    for m in moments {
        view.push((format!("{}#m", m.path), m.shape.clone(), &m.first));
        view.push((format!("{}#v", m.path), m.shape.clone(), &m.second));
    }
    write_tensors(path, &view)
}

/// Read moments written by [`save_moments`].
pub(crate) fn load_moments(path: &Path) -> Result<Vec<MomentState>, CheckpointError> {
    let mut tensors = read_tensors(path)?;
    let mut paths: Vec<String> =
        tensors.keys().filter_map(|k| k.strip_suffix("#m").map(str::to_string)).collect();
    paths.sort();
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        let (shape, first) = tensors.remove(&format!("{p}#m")).expect("listed");
        let (_, second) = tensors
            .remove(&format!("{p}#v"))
            .ok_or_else(|| CheckpointError::new(path, format!("{p} has a first moment but no second")))?;
        out.push(MomentState { path: p, shape, first, second });
    }
    Ok(out)
}

impl CheckpointState {
    /// Write this state as the newest checkpoint of `dir` (after its tensor files), then remove
    /// the files no state refers to any more.
    pub(crate) fn commit(&self, dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        bertlab_run::write_atomic(&dir.join("state.json"), &json)?;
        let keep = [Some(&self.model_file), Some(&self.optimizer_file), self.best_file.as_ref()];
        for entry in std::fs::read_dir(dir)?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".bin") && !keep.iter().flatten().any(|k| **k == name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// The checkpoint of `dir`, if there is one.
    pub(crate) fn read(dir: &Path) -> Result<Option<CheckpointState>, CheckpointError> {
        let path = dir.join("state.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CheckpointError::io(&path, e)),
        };
        let state: CheckpointState = serde_json::from_str(&text)
            .map_err(|e| CheckpointError::new(&path, format!("not a checkpoint state ({e})")))?;
        if state.format != FORMAT {
            return Err(CheckpointError::new(
                &path,
                format!("format {:?}, expected {FORMAT:?}", state.format),
            ));
        }
        state.check().map_err(|message| CheckpointError::new(&path, message))?;
        Ok(Some(state))
    }

    /// What a run writes holds: epochs 1, 2, … in order, finite non-negative losses, times and
    /// rates, accuracies in [0, 1], a positive loss scale, and as many optimizer steps as the
    /// epochs took. A state that breaks one was edited or damaged, and resuming from it would
    /// carry its numbers into the record.
    fn check(&self) -> Result<(), String> {
        for (i, e) in self.epochs.iter().enumerate() {
            if e.epoch != i + 1 {
                return Err(format!("epochs[{i}] is epoch {}, where epoch {} was written", e.epoch, i + 1));
            }
            let amounts = [
                ("train_loss", e.train_loss),
                ("val_loss", e.val_loss),
                ("lr", e.lr),
                ("train_seconds", e.train_seconds),
                ("val_seconds", e.val_seconds),
                ("train_seq_per_s", e.train_seq_per_s),
                ("train_tokens_per_s", e.train_tokens_per_s),
                ("train_padded_tokens_per_s", e.train_padded_tokens_per_s),
            ];
            if let Some((key, value)) = amounts.into_iter().find(|(_, v)| !(v.is_finite() && *v >= 0.0)) {
                return Err(format!("epochs[{i}].{key} is {value}, where a run writes a finite number ≥ 0"));
            }
            let shares = [("train_acc", e.train_acc), ("val_acc", e.val_acc)];
            if let Some((key, value)) = shares.into_iter().find(|(_, v)| !(0.0..=1.0).contains(v)) {
                return Err(format!("epochs[{i}].{key} is {value}, where an accuracy is in [0, 1]"));
            }
            if !(e.loss_scale.is_finite() && e.loss_scale > 0.0) {
                return Err(format!("epochs[{i}].loss_scale is {}, where a scale is above 0", e.loss_scale));
            }
        }
        if !(self.fit_seconds.is_finite() && self.fit_seconds >= 0.0) {
            return Err(format!(
                "fit_seconds is {}, where a run writes a finite number ≥ 0",
                self.fit_seconds
            ));
        }
        let applied: u64 = self.epochs.iter().map(|e| e.steps).sum();
        let called: u64 = self.epochs.iter().map(|e| e.steps + e.skipped_steps).sum();
        if !(applied..=called).contains(&self.optimizer_steps) {
            return Err(format!(
                "optimizer_steps is {}, but its epochs took {applied} steps ({called} with the skipped ones)",
                self.optimizer_steps
            ));
        }
        Ok(())
    }

    /// A new state (epoch `epoch`, 1-based) with the files it will name.
    pub(crate) fn files_for(epoch: usize) -> (String, String) {
        (format!("model-{epoch}.bin"), format!("optimizer-{epoch}.bin"))
    }

    /// The format tag of new states.
    pub(crate) fn format() -> String {
        FORMAT.to_string()
    }
}

/// Why a checkpoint belongs to another run: the first setting that differs (placement keys
/// aside), or `None` when `a` and `b` define the same run.
pub(crate) fn spec_difference(a: &RunSpec, b: &RunSpec) -> Option<String> {
    bertlab_run::setting_keys().find_map(|key| {
        let (x, y) = (a.value_text(key), b.value_text(key));
        (x != y).then(|| {
            format!(
                "{key} {} here, {} in the checkpoint",
                x.unwrap_or("unset".into()),
                y.unwrap_or("unset".into())
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_files_round_trip_and_reject_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.bin");
        let a = [1.0f32, -2.5, f32::MIN_POSITIVE];
        let b = [7.0f32];
        write_tensors(&path, &[("x.w".into(), vec![3], &a), ("y".into(), vec![1, 1], &b)]).unwrap();
        let got = read_tensors(&path).unwrap();
        assert_eq!(got["x.w"], (vec![3], a.to_vec()));
        assert_eq!(got["y"], (vec![1, 1], b.to_vec()));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
        let e = read_tensors(&path).unwrap_err().to_string();
        assert!(e.contains("t.bin") && e.contains("not a bertlab checkpoint"), "{e}");
        std::fs::write(&path, b"garbage").unwrap();
        assert!(read_tensors(&path).is_err());
    }

    #[test]
    fn specs_differ_by_their_first_setting() {
        let a = RunSpec::default();
        assert_eq!(spec_difference(&a, &a), None);
        let b = RunSpec { lr: 2e-5, out: "elsewhere".into(), ..RunSpec::default() };
        assert_eq!(spec_difference(&a, &b).unwrap(), "lr 1e-5 here, 2e-5 in the checkpoint");
        let c = RunSpec { out: "elsewhere".into(), device: "cpu".into(), ..RunSpec::default() };
        assert_eq!(spec_difference(&a, &c), None, "where the run goes is not what it computes");
    }
}
