//! Reading `model.safetensors` into the modules and writing it back with `transformers` names.
//!
//! The modules describe their parameters once, through [`ParamVisitor`] walks (see
//! `bert.rs`/`distilbert.rs` for the names). Loading and exporting are two visitors over the
//! same walk, so the names read and the names written cannot drift apart.
//!
//! Checkpoints in the wild differ in three ways that loading absorbs:
//! - backbone tensors with or without the task prefix (`bert.embeddings…` in a
//!   `BertForSequenceClassification` or pre-training checkpoint, `embeddings…` in a `BertModel`);
//! - LayerNorm parameters named `weight`/`bias` or, in older files, `gamma`/`beta`;
//! - storage dtype: F32, F16, BF16 (and F64) are all converted to f32 parameters.
//!
//! Tensors no module asks for (pre-training heads `cls.*`, DistilBERT's `vocab_*`, the
//! `position_ids` buffer, …) are listed in [`LoadReport::ignored`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::Dtype;

use crate::error::ModelError;
use bertlab_model_config::Architecture;

/// What loading did besides reading the tensors the model needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Head tensors absent from the file, initialised from the seed (`transformers` names,
    /// e.g. `classifier.weight`): N(0, initializer_range) weights, zero biases.
    pub initialised: Vec<String>,
    /// Tensors of the file the model does not use (pre-training heads, buffers), as named in
    /// the file.
    pub ignored: Vec<String>,
}

/// Where a parameter sits, which decides its exported name and whether it may be absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Backbone tensor the file must hold (`bert.`/`distilbert.` prefix on export).
    Backbone,
    /// Backbone tensor a classifier may lack (BERT's pooler): initialised when absent.
    BackboneHead,
    /// Backbone tensor the module computes itself when the file lacks it (DistilBERT's
    /// sinusoidal positions): kept as built when absent.
    BackboneFixed,
    /// Task head (`classifier`, `pre_classifier`): no prefix, initialised when absent.
    Head,
}

impl Scope {
    fn prefixed(self) -> bool {
        !matches!(self, Scope::Head)
    }
    fn may_be_absent(self) -> bool {
        !matches!(self, Scope::Backbone)
    }
}

/// How a matrix is laid out in Burn relative to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Same as PyTorch (embedding tables).
    Plain,
    /// A `Linear` weight: PyTorch stores `[out, in]`, Burn `[in, out]`.
    Transposed,
}

/// A walk over the parameters of a module, each with its `transformers` name (without the
/// task prefix).
pub(crate) trait ParamVisitor<B: Backend> {
    /// A 2-D parameter.
    fn matrix(
        &mut self,
        name: &str,
        scope: Scope,
        layout: Layout,
        param: &mut Param<Tensor<B, 2>>,
    ) -> Result<(), ModelError>;
    /// A 1-D parameter.
    fn vector(&mut self, name: &str, scope: Scope, param: &mut Param<Tensor<B, 1>>)
        -> Result<(), ModelError>;
    /// Whether the walk replaces the parameters it visits (loading) rather than reads them.
    fn replaces(&self) -> bool;
}

/// `name.weight` and `name.bias` of a linear layer.
pub(crate) fn visit_linear<B: Backend, V: ParamVisitor<B>>(
    v: &mut V,
    name: &str,
    scope: Scope,
    layer: &mut Linear<B>,
) -> Result<(), ModelError> {
    v.matrix(&format!("{name}.weight"), scope, Layout::Transposed, &mut layer.weight)?;
    if let Some(bias) = layer.bias.as_mut() {
        v.vector(&format!("{name}.bias"), scope, bias)?;
    }
    Ok(())
}

/// One linear layer stored as the column blocks of several of the file's, `names` in order:
/// BERT's query, key and value projections as one `[hidden, 3·hidden]` product, so that a
/// step multiplies by the parameter as it is rather than concatenating three (on a GPU, six
/// copy launches a layer and their backward). Each block is visited as a linear layer of its
/// own, so the file keeps `transformers`' names and layout.
pub(crate) fn visit_fused_linear<B: Backend, V: ParamVisitor<B>>(
    v: &mut V,
    names: &[String],
    scope: Scope,
    layer: &mut Linear<B>,
) -> Result<(), ModelError> {
    let [d_in, d_out] = layer.weight.lazy_shape().dims::<2>();
    assert_eq!(d_out % names.len(), 0, "{d_out} columns in {} blocks", names.len());
    let width = d_out / names.len();
    let device = layer.weight.lazy_device();
    // A block as a parameter of its own: the layer's values where it has them (export reads
    // them), else a placeholder of the block's shape (loading replaces it).
    fn block<B: Backend, const D: usize>(
        param: &Param<Tensor<B, D>>,
        shape: [usize; D],
        index: usize,
        device: &B::Device,
    ) -> Param<Tensor<B, D>> {
        let width = shape[D - 1];
        match param.is_initialized() {
            // Off the graph and not tracked (an autodiff `detach` keeps `require_grad`, and a
            // slice of a tracked tensor cannot become a parameter).
            true => Param::from_tensor(param.val().detach().set_require_grad(false).narrow(
                D - 1,
                index * width,
                width,
            )),
            false => Param::from_tensor(Tensor::zeros(shape, device)),
        }
    }
    let mut weights = Vec::with_capacity(names.len());
    let mut biases = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let mut weight = block(&layer.weight, [d_in, width], i, &device);
        v.matrix(&format!("{name}.weight"), scope, Layout::Transposed, &mut weight)?;
        weights.push(weight.val());
        if let Some(bias) = layer.bias.as_ref() {
            let mut bias = block(bias, [width], i, &device);
            v.vector(&format!("{name}.bias"), scope, &mut bias)?;
            biases.push(bias.val());
        }
    }
    if v.replaces() {
        // Joined on the host, from the values just loaded: a concatenation on the device is
        // two kernels (weight, bias) a GPU build compiles in every process for this alone.
        layer.weight = Param::from_tensor(join_columns(weights, &device));
        if layer.bias.is_some() {
            layer.bias = Some(Param::from_tensor(join_columns(biases, &device)));
        }
    }
    Ok(())
}

/// `blocks` (each `[.., width_i]`, the same leading dimensions and dtype) side by side along
/// their last dimension, as a new leaf tensor made from their values on the host.
fn join_columns<B: Backend, const D: usize>(blocks: Vec<Tensor<B, D>>, device: &B::Device) -> Tensor<B, D> {
    let data: Vec<TensorData> = blocks.into_iter().map(|b| b.into_data()).collect();
    let first = &data[0];
    let (dtype, lead) = (first.dtype, &first.shape[..D - 1]);
    let row_bytes: Vec<usize> = data
        .iter()
        .map(|d| {
            assert!(
                d.dtype == dtype && &d.shape[..D - 1] == lead,
                "blocks of one layer differ in dtype or rows"
            );
            d.bytes.len() / lead.iter().product::<usize>().max(1)
        })
        .collect();
    let rows: usize = lead.iter().product();
    let mut bytes = Vec::with_capacity(data.iter().map(|d| d.bytes.len()).sum());
    for r in 0..rows {
        for (d, &n) in data.iter().zip(&row_bytes) {
            bytes.extend_from_slice(&d.bytes[r * n..(r + 1) * n]);
        }
    }
    let mut shape = lead.to_vec();
    shape.push(data.iter().map(|d| d.shape[D - 1]).sum());
    Tensor::from_data(TensorData::from_bytes_vec(bytes, shape, dtype), device)
}

/// `name.weight` and `name.bias` of a LayerNorm (legacy files: `gamma`/`beta`).
pub(crate) fn visit_layer_norm<B: Backend, V: ParamVisitor<B>>(
    v: &mut V,
    name: &str,
    scope: Scope,
    norm: &mut LayerNorm<B>,
) -> Result<(), ModelError> {
    v.vector(&format!("{name}.weight"), scope, &mut norm.gamma)?;
    if let Some(beta) = norm.beta.as_mut() {
        v.vector(&format!("{name}.bias"), scope, beta)?;
    }
    Ok(())
}

/// `name.weight` of an embedding table.
pub(crate) fn visit_embedding<B: Backend, V: ParamVisitor<B>>(
    v: &mut V,
    name: &str,
    scope: Scope,
    table: &mut Embedding<B>,
) -> Result<(), ModelError> {
    v.matrix(&format!("{name}.weight"), scope, Layout::Plain, &mut table.weight)
}

/// One tensor of the file.
#[derive(Debug)]
struct Entry {
    key: String,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Byte range in the file's buffer.
    start: usize,
    end: usize,
}

/// An opened `model.safetensors`, indexed by normalised parameter name.
pub(crate) struct WeightFile {
    path: PathBuf,
    bytes: Vec<u8>,
    prefix: &'static str,
    /// Normalised name (no task prefix, `weight`/`bias` for LayerNorm) → tensor.
    entries: HashMap<String, Entry>,
}

/// The name a file key stands for: task prefix removed, legacy LayerNorm names modernised.
fn normalise(key: &str, prefix: &str) -> String {
    let key = key.strip_prefix(prefix).and_then(|k| k.strip_prefix('.')).unwrap_or(key);
    if let Some(stem) = key.strip_suffix(".gamma") {
        format!("{stem}.weight")
    } else if let Some(stem) = key.strip_suffix(".beta") {
        format!("{stem}.bias")
    } else {
        key.to_string()
    }
}

impl WeightFile {
    /// Read and index the file; `architecture` decides which task prefix is stripped.
    pub(crate) fn open(path: &Path, architecture: Architecture) -> Result<WeightFile, ModelError> {
        let bytes =
            std::fs::read(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), source })?;
        let (header_len, metadata) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| {
            let message = bad_tensor_entry(&bytes).unwrap_or_else(|| e.to_string());
            ModelError::Safetensors { path: path.to_path_buf(), message }
        })?;
        let data_start = 8 + header_len;
        let prefix = architecture.weight_prefix();
        let mut entries: HashMap<String, Entry> = HashMap::new();
        // Sorted so that a duplicate is reported the same way every time.
        let infos: BTreeMap<String, _> = metadata.tensors().into_iter().collect();
        for (key, info) in infos {
            let name = normalise(&key, prefix);
            let entry = Entry {
                key: key.clone(),
                dtype: info.dtype,
                shape: info.shape.clone(),
                start: data_start + info.data_offsets.0,
                end: data_start + info.data_offsets.1,
            };
            if let Some(previous) = entries.insert(name.clone(), entry) {
                return Err(ModelError::DuplicateTensor {
                    path: path.to_path_buf(),
                    name,
                    first: previous.key,
                    second: key,
                });
            }
        }
        Ok(WeightFile { path: path.to_path_buf(), bytes, prefix, entries })
    }

    /// True when the file holds the parameter `name` (in any accepted spelling).
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The tensor as f32 values in row-major order, with its shape.
    fn read_f32(&self, entry: &Entry) -> Result<Vec<f32>, ModelError> {
        let raw = &self.bytes[entry.start..entry.end];
        let values: Vec<f32> = match entry.dtype {
            Dtype::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => {
                raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
            }
            Dtype::BF16 => {
                raw.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
            }
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
                .collect(),
            other => {
                return Err(ModelError::UnsupportedDtype {
                    path: self.path.clone(),
                    name: entry.key.clone(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        Ok(values)
    }
}

/// Which tensor entry of a safetensors header is wrong, when the decoder says only that one is
/// (its dtype unknown, its offsets outside the data or not its shape's size): the entry, named.
fn bad_tensor_entry(bytes: &[u8]) -> Option<String> {
    let header_len = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header = bytes.get(8..8usize.checked_add(header_len)?)?;
    let data_len = bytes.len() - 8 - header_len;
    let entries: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(header).ok()?;
    let mut names: Vec<&String> = entries.keys().filter(|k| *k != "__metadata__").collect();
    names.sort();
    names.into_iter().find_map(|name| {
        let entry = &entries[name];
        let dtype = entry.get("dtype").and_then(|d| d.as_str()).unwrap_or("?");
        let width = match dtype {
            "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 1,
            "U16" | "I16" | "F16" | "BF16" => 2,
            "U32" | "I32" | "F32" => 4,
            "U64" | "I64" | "F64" => 8,
            _ => {
                return Some(format!(
                    "tensor `{name}` has dtype {dtype:?}, which safetensors does not define"
                ))
            }
        };
        let numbers = |key: &str| -> Option<Vec<u64>> {
            entry.get(key)?.as_array()?.iter().map(serde_json::Value::as_u64).collect()
        };
        let (Some(shape), Some(offsets)) = (numbers("shape"), numbers("data_offsets")) else {
            return Some(format!(
                "tensor `{name}` has no list of non-negative integers as shape or data_offsets"
            ));
        };
        let size = shape.iter().try_fold(width, |n: u64, &d| n.checked_mul(d));
        match offsets[..] {
            [begin, end] if begin <= end && end <= data_len as u64 && size == Some(end - begin) => None,
            [begin, end] => Some(format!(
                "tensor `{name}`: {dtype} {shape:?} is {} bytes, but its data_offsets [{begin}, {end}] \
                 span {} of the file's {data_len} data bytes",
                size.map_or("too many".into(), |n| n.to_string()),
                end.saturating_sub(begin)
            )),
            _ => Some(format!("tensor `{name}` has data_offsets {offsets:?}, not [begin, end]")),
        }
    })
}

/// A counter-based normal generator: the init of a head tensor depends on the seed and the
/// tensor's name only, not on the backend, the device or the order tensors are visited in.
struct SeededNormal {
    state: u64,
    spare: Option<f64>,
}

impl SeededNormal {
    fn new(seed: u64, name: &str) -> SeededNormal {
        // FNV-1a of the name, mixed with the seed.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        SeededNormal { state: seed ^ h.rotate_left(17), spare: None }
    }

    /// SplitMix64.
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn sample(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let (u1, u2) = (self.uniform(), self.uniform());
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        self.spare = Some(r * theta.sin());
        r * theta.cos()
    }
}

/// Transpose a row-major `[rows, cols]` buffer.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// Fills parameters from a [`WeightFile`], initialising absent head tensors from the seed.
pub(crate) struct Loader<'f, B: Backend> {
    file: &'f WeightFile,
    seed: u64,
    init_std: f64,
    device: B::Device,
    used: HashSet<String>,
    initialised: Vec<String>,
}

impl<'f, B: Backend> Loader<'f, B> {
    pub(crate) fn new(file: &'f WeightFile, seed: u64, init_std: f64, device: &B::Device) -> Self {
        Loader { file, seed, init_std, device: device.clone(), used: HashSet::new(), initialised: Vec::new() }
    }

    /// The report: initialised heads, and every file tensor nobody asked for.
    pub(crate) fn finish(self) -> LoadReport {
        let mut ignored: Vec<String> = self
            .file
            .entries
            .iter()
            .filter(|(name, _)| !self.used.contains(*name))
            .map(|(_, e)| e.key.clone())
            .collect();
        ignored.sort();
        LoadReport { initialised: self.initialised, ignored }
    }

    /// The file's values for `name`, checked against the PyTorch-layout shape `expected`;
    /// `None` when the tensor is absent and `scope` allows that.
    fn take(&mut self, name: &str, scope: Scope, expected: &[usize]) -> Result<Option<Vec<f32>>, ModelError> {
        let Some(entry) = self.file.entries.get(name) else {
            if scope.may_be_absent() {
                return Ok(None);
            }
            let mut tried = vec![format!("`{}.{name}`", self.file.prefix)];
            for (new, old) in [(".weight", ".gamma"), (".bias", ".beta")] {
                if let Some(stem) =
                    name.strip_suffix(new).filter(|s| s.contains("LayerNorm") || s.contains("layer_norm"))
                {
                    tried.push(format!("`{stem}{old}`"));
                    tried.push(format!("`{}.{stem}{old}`", self.file.prefix));
                }
            }
            return Err(ModelError::MissingTensor {
                path: self.file.path.clone(),
                name: name.to_string(),
                tried: tried.join(", "),
                architecture: self.file.prefix.to_string(),
            });
        };
        if entry.shape != expected {
            return Err(ModelError::ShapeMismatch {
                path: self.file.path.clone(),
                name: entry.key.clone(),
                expected: expected.to_vec(),
                found: entry.shape.clone(),
            });
        }
        self.used.insert(name.to_string());
        let values = self.file.read_f32(entry)?;
        // NaN or ±inf in a weight makes every logit non-finite; refusing the file here names
        // the tensor, where a run would otherwise report NaN losses or garbage predictions.
        // A branch-free fold vectorises: 3-7 ms for MiniLM's 22.7M values, 2-4 % of its load
        // (crates/models/benches/load.rs).
        let finite = values.iter().fold(true, |ok, v| ok & v.is_finite());
        if !finite {
            let index = values.iter().position(|v| !v.is_finite()).unwrap_or(0);
            return Err(ModelError::NonFiniteWeights {
                path: self.file.path.clone(),
                name: entry.key.clone(),
                count: values[index..].iter().filter(|v| !v.is_finite()).count(),
                first: values[index],
                index,
            });
        }
        Ok(Some(values))
    }

    fn head_name(&self, name: &str, scope: Scope) -> String {
        if scope.prefixed() {
            format!("{}.{name}", self.file.prefix)
        } else {
            name.to_string()
        }
    }
}

impl<B: Backend> ParamVisitor<B> for Loader<'_, B> {
    fn matrix(
        &mut self,
        name: &str,
        scope: Scope,
        layout: Layout,
        param: &mut Param<Tensor<B, 2>>,
    ) -> Result<(), ModelError> {
        let [d0, d1] = param.lazy_shape().dims::<2>();
        // The file's layout: PyTorch `[out, in]` for linear weights.
        let (rows, cols) = match layout {
            Layout::Plain => (d0, d1),
            Layout::Transposed => (d1, d0),
        };
        let values = match self.take(name, scope, &[rows, cols])? {
            Some(values) => values,
            None if scope == Scope::BackboneFixed => {
                self.initialised.push(self.head_name(name, scope));
                return Ok(());
            }
            None => {
                let mut rng = SeededNormal::new(self.seed, name);
                self.initialised.push(self.head_name(name, scope));
                (0..rows * cols).map(|_| (rng.sample() * self.init_std) as f32).collect()
            }
        };
        let values = match layout {
            Layout::Plain => values,
            Layout::Transposed => transpose(&values, rows, cols),
        };
        *param = Param::from_data(TensorData::new(values, [d0, d1]), &self.device);
        Ok(())
    }

    fn vector(
        &mut self,
        name: &str,
        scope: Scope,
        param: &mut Param<Tensor<B, 1>>,
    ) -> Result<(), ModelError> {
        let [n] = param.lazy_shape().dims::<1>();
        let values = match self.take(name, scope, &[n])? {
            Some(values) => values,
            None if scope == Scope::BackboneFixed => {
                self.initialised.push(self.head_name(name, scope));
                return Ok(());
            }
            None => {
                // Head vectors are biases: transformers initialises them to zero.
                self.initialised.push(self.head_name(name, scope));
                vec![0.0; n]
            }
        };
        *param = Param::from_data(TensorData::new(values, [n]), &self.device);
        Ok(())
    }

    fn replaces(&self) -> bool {
        true
    }
}

/// Collects parameters under their full `transformers` names, in PyTorch layout.
pub(crate) struct Collector {
    prefix: &'static str,
    /// Name → (shape, f32 values).
    pub(crate) tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl Collector {
    pub(crate) fn new(architecture: Architecture) -> Collector {
        Collector { prefix: architecture.weight_prefix(), tensors: BTreeMap::new() }
    }

    fn full_name(&self, name: &str, scope: Scope) -> String {
        if scope.prefixed() {
            format!("{}.{name}", self.prefix)
        } else {
            name.to_string()
        }
    }

    /// Write the collected tensors as an F32 safetensors file (`format: pt`, as
    /// `transformers` writes and expects).
    pub(crate) fn write(&self, path: &Path) -> Result<(), ModelError> {
        let bytes: Vec<(&String, &Vec<usize>, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(name, (shape, values))| {
                (name, shape, values.iter().flat_map(|v| v.to_le_bytes()).collect())
            })
            .collect();
        let export_error = |message: String| ModelError::Export { path: path.to_path_buf(), message };
        let views = bytes
            .iter()
            .map(|(name, shape, data)| {
                safetensors::tensor::TensorView::new(Dtype::F32, shape.to_vec(), data)
                    .map(|view| (name.as_str(), view))
                    .map_err(|e| export_error(format!("tensor `{name}`: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::tensor::serialize_to_file(views, Some(metadata), path)
            .map_err(|e| export_error(e.to_string()))
    }
}

fn param_values<B: Backend, const D: usize>(param: &Param<Tensor<B, D>>) -> Vec<f32> {
    param
        .val()
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("a float tensor converted to f32 reads back as f32")
}

impl<B: Backend> ParamVisitor<B> for Collector {
    fn matrix(
        &mut self,
        name: &str,
        scope: Scope,
        layout: Layout,
        param: &mut Param<Tensor<B, 2>>,
    ) -> Result<(), ModelError> {
        let [d0, d1] = param.lazy_shape().dims::<2>();
        let values = param_values(param);
        let (shape, values) = match layout {
            Layout::Plain => (vec![d0, d1], values),
            Layout::Transposed => (vec![d1, d0], transpose(&values, d0, d1)),
        };
        self.tensors.insert(self.full_name(name, scope), (shape, values));
        Ok(())
    }

    fn vector(
        &mut self,
        name: &str,
        scope: Scope,
        param: &mut Param<Tensor<B, 1>>,
    ) -> Result<(), ModelError> {
        let [n] = param.lazy_shape().dims::<1>();
        self.tensors.insert(self.full_name(name, scope), (vec![n], param_values(param)));
        Ok(())
    }

    fn replaces(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised() {
        assert_eq!(normalise("bert.embeddings.LayerNorm.gamma", "bert"), "embeddings.LayerNorm.weight");
        assert_eq!(normalise("embeddings.LayerNorm.beta", "bert"), "embeddings.LayerNorm.bias");
        assert_eq!(normalise("classifier.weight", "bert"), "classifier.weight");
        assert_eq!(normalise("bert.pooler.dense.weight", "distilbert"), "bert.pooler.dense.weight");
        assert_eq!(
            normalise("distilbert.transformer.layer.0.ffn.lin1.bias", "distilbert"),
            "transformer.layer.0.ffn.lin1.bias"
        );
    }

    #[test]
    fn a_header_entry_the_decoder_refuses_is_named() {
        // Two tensors; `b`'s entry is broken in each of three ways.
        let file = |b: &str| {
            let header =
                format!(r#"{{"a": {{"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, "b": {b}}}"#);
            let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(header.as_bytes());
            bytes.extend_from_slice(&[0u8; 16]);
            bytes
        };
        let good = file(r#"{"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}"#);
        assert!(safetensors::SafeTensors::read_metadata(&good).is_ok() && bad_tensor_entry(&good).is_none());
        for (entry, want) in [
            (
                r#"{"dtype": "F32", "shape": [3], "data_offsets": [8, 16]}"#,
                "tensor `b`: F32 [3] is 12 bytes, but its data_offsets [8, 16] span 8 of the file's 16 data bytes",
            ),
            (
                r#"{"dtype": "F32", "shape": [2], "data_offsets": [8, 24]}"#,
                "tensor `b`: F32 [2] is 8 bytes, but its data_offsets [8, 24] span 16 of the file's 16 data bytes",
            ),
            (r#"{"dtype": "F31", "shape": [2], "data_offsets": [8, 16]}"#, "tensor `b` has dtype \"F31\""),
        ] {
            let bytes = file(entry);
            assert!(safetensors::SafeTensors::read_metadata(&bytes).is_err(), "{entry}");
            let message = bad_tensor_entry(&bytes).unwrap_or_default();
            assert!(message.starts_with(want), "{entry}: {message}");
        }
    }

    #[test]
    fn seeded_normal_depends_on_seed_and_name_only() {
        let draw = |seed, name| {
            let mut g = SeededNormal::new(seed, name);
            (0..4).map(|_| g.sample()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7, "classifier.weight"), draw(7, "classifier.weight"));
        assert_ne!(draw(7, "classifier.weight"), draw(8, "classifier.weight"));
        assert_ne!(draw(7, "classifier.weight"), draw(7, "pre_classifier.weight"));
        let mut g = SeededNormal::new(1, "x");
        let xs: Vec<f64> = (0..20_000).map(|_| g.sample()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "mean {mean} var {var}");
    }

    #[test]
    fn transpose_swaps_axes() {
        assert_eq!(transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3), [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }
}
