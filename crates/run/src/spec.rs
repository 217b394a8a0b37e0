//! [`RunSpec`], everything that defines one training run, and [`RunOverrides`], the same
//! settings all optional: what a `bertlab train` flag, a `run.toml` file or a pipeline's
//! `[defaults]`/`set`/`runs` table says. Both types, the list of keys, the text form of every
//! value and the conversions between them come from one field list ([`run_settings!`]), so a
//! setting is added in one place and every spelling follows.

use crate::choices::{OptimizerKind, Padding, Precision, RestoreBest, Schedule, SplitMode, Truncation};
use crate::format::{format_lr, format_number};
use crate::naming::{NamesSettings, Setting, SettingStyle, SWITCHES};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The text form of a setting's value, shared by run ids, hashes, reports and error messages.
pub trait SettingText {
    /// `2e-5`, `0.25`, `128`, `head-tail`, a path as displayed.
    fn setting_text(&self) -> String;
}

impl SettingText for String {
    fn setting_text(&self) -> String {
        self.clone()
    }
}

impl SettingText for PathBuf {
    fn setting_text(&self) -> String {
        self.display().to_string()
    }
}

impl SettingText for bool {
    fn setting_text(&self) -> String {
        self.to_string()
    }
}

impl SettingText for usize {
    fn setting_text(&self) -> String {
        self.to_string()
    }
}

impl SettingText for u64 {
    fn setting_text(&self) -> String {
        self.to_string()
    }
}

impl SettingText for f64 {
    fn setting_text(&self) -> String {
        format_number(*self)
    }
}

macro_rules! choice_text {
    ($($t:ty),*) => {$(
        impl SettingText for $t {
            fn setting_text(&self) -> String {
                self.as_str().to_string()
            }
        }
    )*};
}
choice_text!(Precision, Truncation, OptimizerKind, Schedule, Padding, RestoreBest, SplitMode);

/// A setting that cannot be used: the key (= TOML key; the flag is [`Setting::flag`]) and why.
/// Its `Display` names the key (`max_len = 5000: …`), [`NamesSettings::render`] the flag too
/// (`--max-len 5000: …`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.render(SettingStyle::Key))]
pub struct InvalidSetting {
    /// The key, e.g. `max_len`.
    pub key: &'static str,
    /// The value given, as text.
    pub value: String,
    /// What is allowed.
    pub why: String,
}

impl InvalidSetting {
    /// The setting at fault.
    pub fn setting(&self) -> Setting {
        Setting::declared(self.key)
    }

    /// The flag spelling of the key: `--max-len`.
    pub fn flag(&self) -> String {
        self.setting().flag()
    }
}

impl NamesSettings for InvalidSetting {
    fn render(&self, style: SettingStyle) -> String {
        // The value is shown as given (`""` for an empty text), not quoted again.
        format!("{}: {}", style.with_value(self.setting(), &self.value), self.why)
    }
}

/// A spec file or settings table that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file cannot be read.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML does not parse or has an unknown key or a wrong type.
    #[error("{path}: {message}", path = path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML error (names the key and line).
        message: String,
    },
    /// A value out of range.
    #[error(transparent)]
    Invalid(#[from] InvalidSetting),
}

/// A key of a settings table that is unknown or holds a value of the wrong type or choice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {message}")]
pub struct TableError {
    /// The key as written.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// Declares [`RunSpec`] and [`RunOverrides`] from one list of fields. `req` fields always have a
/// value (their default is given); `opt` fields may be unset in the spec too. `#[arg(…)]` is
/// how the field appears among `bertlab train`'s flags (with the `clap` feature).
macro_rules! run_settings {
    ($(
        $(#[doc = $doc:literal])*
        #[arg($($arg:tt)*)]
        $field:ident : $kind:ident $ty:ty = $default:expr;
    )*) => {
        /// One training run. Defaults are the notebook's baseline (DistilBERT, max_len 128,
        /// 3 epochs, batch 32, eval batch 64, Adam 1e-5, early stopping with patience 2), except
        /// `padding`, which defaults to `bucket` (dynamic padding) where the notebook pads every
        /// batch to `max_len` (`fixed`).
        ///
        /// Read from TOML (`bertlab train --spec run.toml`, missing keys take defaults, unknown
        /// keys are errors); every field is also a `bertlab train` flag ([`RunOverrides`]).
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct RunSpec {
            $(
                $(#[doc = $doc])*
                pub $field: run_settings!(@spec_ty $kind $ty),
            )*
        }

        impl Default for RunSpec {
            fn default() -> Self {
                RunSpec { $($field: $default,)* }
            }
        }

        /// Settings of a run, any of which may be unset: the flags of `bertlab train` and the
        /// tables of a pipeline file (where `model` names a model role). Applied over a
        /// [`RunSpec`] with [`RunOverrides::apply_to`].
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[cfg_attr(feature = "clap", derive(clap::Args))]
        #[serde(deny_unknown_fields)]
        pub struct RunOverrides {
            $(
                $(#[doc = $doc])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                #[cfg_attr(feature = "clap", arg($($arg)*))]
                pub $field: Option<$ty>,
            )*
        }

        /// Every key of a run spec, in declaration order.
        pub const ALL_KEYS: &[&str] = &[$(stringify!($field)),*];

        // One constant per key, named as the key, so that an error names a setting that exists.
        #[allow(non_upper_case_globals)]
        impl Setting {
            $(
                $(#[doc = $doc])*
                pub const $field: Setting = Setting::declared(stringify!($field));
            )*
        }

        impl RunSpec {
            /// The value of `key` as text (`None` for an unset optional key or an unknown key).
            pub fn value_text(&self, key: &str) -> Option<String> {
                match key {
                    "lr" => Some(format_lr(self.lr)),
                    $(stringify!($field) => run_settings!(@text $kind self.$field),)*
                    _ => None,
                }
            }
        }

        impl RunOverrides {
            /// Set every field of `spec` that this sets.
            pub fn apply_to(&self, spec: &mut RunSpec) {
                $(
                    if let Some(v) = &self.$field {
                        run_settings!(@set $kind spec, $field, v);
                    }
                )*
            }

            /// Every field of `spec`, set (optional fields only when set in `spec`).
            pub fn of_spec(spec: &RunSpec) -> RunOverrides {
                RunOverrides { $($field: run_settings!(@get $kind spec.$field),)* }
            }

            /// `self` with every key that `other` sets replaced by `other`'s value.
            pub fn overlay(&self, other: &RunOverrides) -> RunOverrides {
                RunOverrides { $($field: other.$field.clone().or_else(|| self.$field.clone()),)* }
            }

            /// The keys that are set, in declaration order.
            pub fn keys(&self) -> Vec<&'static str> {
                let mut keys = Vec::new();
                $(
                    if self.$field.is_some() {
                        keys.push(stringify!($field));
                    }
                )*
                keys
            }

            /// The value of `key` as text (`None` when unset or unknown).
            pub fn value_text(&self, key: &str) -> Option<String> {
                match key {
                    "lr" => self.lr.map(format_lr),
                    $(stringify!($field) => self.$field.as_ref().map(SettingText::setting_text),)*
                    _ => None,
                }
            }

            /// Copy `key` from `other` (whether set or not); false when `key` is not a setting.
            pub fn copy_key(&mut self, key: &str, other: &RunOverrides) -> bool {
                match key {
                    $(stringify!($field) => {
                        self.$field = other.$field.clone();
                        true
                    })*
                    _ => false,
                }
            }

            /// Read a settings table key by key, so that an error names the key: an unknown key,
            /// or a value of the wrong type or not among a setting's choices.
            pub fn from_table(table: &toml::Table) -> Result<RunOverrides, TableError> {
                let mut out = RunOverrides::default();
                for (key, value) in table {
                    match key.as_str() {
                        $(stringify!($field) => {
                            let v: $ty = value.clone().try_into().map_err(|e: toml::de::Error| TableError {
                                key: key.clone(),
                                message: e.message().trim().to_string(),
                            })?;
                            out.$field = Some(v);
                        })*
                        _ => {
                            return Err(TableError {
                                key: key.clone(),
                                message: format!("unknown key; the keys are {}", ALL_KEYS.join(", ")),
                            })
                        }
                    }
                }
                Ok(out)
            }
        }
    };
    (@spec_ty req $ty:ty) => { $ty };
    (@spec_ty opt $ty:ty) => { Option<$ty> };
    (@text req $v:expr) => { Some(SettingText::setting_text(&$v)) };
    (@text opt $v:expr) => { $v.as_ref().map(SettingText::setting_text) };
    (@set req $spec:ident, $field:ident, $v:ident) => { $spec.$field = $v.clone() };
    (@set opt $spec:ident, $field:ident, $v:ident) => { $spec.$field = Some($v.clone()) };
    (@get req $v:expr) => { Some($v.clone()) };
    (@get opt $v:expr) => { $v.clone() };
}

run_settings! {
    /// Model: a Hub id (`distilbert/distilbert-base-uncased`) or a local snapshot directory.
    #[arg(long)]
    model: req String = "distilbert/distilbert-base-uncased".into();
    /// Data: `hub` (stanfordnlp/imdb, pinned), `hub:ORG/NAME[@REV]`, or a local directory.
    #[arg(long)]
    source: req String = "hub".into();
    /// Column of the texts in the dataset's files.
    #[arg(long)]
    text_column: req String = "text".into();
    /// Column of the labels (integers, or strings whose sorted names become the classes).
    #[arg(long)]
    label_column: req String = "label".into();
    /// A Hub dataset's config (the subfolder of its files) when it has several.
    #[arg(long, visible_alias = "config")]
    dataset_config: opt String = None;
    /// notebook (join every split, stratified subset, 70/10/20) or given (the dataset's own
    /// train/validation/test splits).
    #[arg(long)]
    splits: req SplitMode = SplitMode::Notebook;
    /// Fraction of the whole dataset used (stratified), in (0, 1].
    #[arg(long)]
    subset: req f64 = 1.0;
    /// Seed of the splits, the head initialisation, dropout and batch order.
    #[arg(long)]
    seed: req u64 = 42;
    /// Tokens per sequence, `[CLS]` and `[SEP]` included.
    #[arg(long)]
    max_len: req usize = 128;
    /// Which tokens of a long text are kept: head, tail or head-tail.
    #[arg(long)]
    truncation: req Truncation = Truncation::Head;
    /// Peak learning rate.
    #[arg(long)]
    lr: req f64 = 1e-5;
    /// Training batch size (per optimizer micro-step).
    #[arg(long)]
    batch: req usize = 32;
    /// Batch size of validation and test prediction; unset = the training batch, so that
    /// evaluation meets the training's tensor shapes (no new GPU kernels to compile and tune).
    #[arg(long)]
    eval_batch: opt usize = None;
    /// Maximum number of epochs.
    #[arg(long)]
    epochs: req usize = 3;
    /// adam (Keras: eps 1e-7, no decay) or adamw (HF: eps 1e-8, decay 0.01 except biases and
    /// LayerNorm).
    #[arg(long)]
    optimizer: req OptimizerKind = OptimizerKind::Adam;
    /// Learning-rate schedule: constant or linear (with warmup_ratio).
    #[arg(long)]
    schedule: req Schedule = Schedule::Constant;
    /// Fraction of the optimizer steps spent warming up (linear schedule).
    #[arg(long)]
    warmup_ratio: req f64 = 0.0;
    /// Weight decay; unset = the optimizer's default (adam 0, adamw 0.01).
    #[arg(long)]
    weight_decay: opt f64 = None;
    /// Clip gradients to this global L2 norm; unset = no clipping.
    #[arg(long)]
    grad_clip: opt f64 = None;
    /// Micro-batches per optimizer step (effective batch = batch × accum).
    #[arg(long)]
    accum: req usize = 1;
    /// Compute precision: f32, f16 (dynamic loss scaling) or bf16.
    #[arg(long)]
    precision: req Precision = Precision::F32;
    /// bucket (dynamic padding, default) or fixed (pad to max_len, the notebook).
    #[arg(long)]
    padding: req Padding = Padding::Bucket;
    /// Bucketed lengths are rounded up to a multiple of this: a run meets at most
    /// max_len / pad_multiple lengths, so few tensor shapes (each new one costs a GPU build
    /// kernel compilation and autotuning). 32 pads IMDB 1.0 % more than 8 at max_len 128, 3 %
    /// more at 256 and 512 (`cargo bench -p bertlab-train --bench padding`).
    #[arg(long)]
    pad_multiple: req usize = 32;
    /// Epochs without val-loss improvement before stopping.
    #[arg(long)]
    patience: req usize = 2;
    /// always (default) or on-stop (Keras: restore only when patience runs out).
    #[arg(long)]
    restore_best: req RestoreBest = RestoreBest::Always;
    /// Run directory: `record.json` and `best/` are written here.
    #[arg(long)]
    out: req PathBuf = PathBuf::from("runs/run");
    /// Device: default, cpu, cuda / cuda:N (CUDA build), gpu:N (wgpu build).
    #[arg(long)]
    device: req String = "default".into();
    /// Token cache directory; unset = no cache.
    #[arg(long)]
    cache_dir: opt PathBuf = None;
    /// Never touch the network (the global `--offline` flag and HF_HUB_OFFLINE set it too).
    #[arg(skip)]
    offline: req bool = false;
}

impl Setting {
    /// The setting of `key`, if it is a run-spec key or one of the [`SWITCHES`].
    pub fn of_key(key: &str) -> Option<Setting> {
        ALL_KEYS.iter().chain(SWITCHES).find(|k| **k == key).map(|k| Setting::declared(k))
    }
}

/// The keys that say where and how a run executes rather than what it computes: `cargo xtask`
/// sets them per run, so pipelines may not, and they do not enter a run's identity.
pub const PLACEMENT_KEYS: &[&str] = &["out", "device", "cache_dir", "offline"];

/// The keys that define what a run computes (every key but the [`PLACEMENT_KEYS`]), in
/// declaration order: pipelines set these, and a run's id hashes them.
pub fn setting_keys() -> impl Iterator<Item = &'static str> {
    ALL_KEYS.iter().copied().filter(|k| !PLACEMENT_KEYS.contains(k))
}

/// A TOML error on one line, `line L, column C: what` (the `toml` crate writes several: the
/// line quoted, a caret, and for an unknown key every key there is).
pub fn toml_error_line(text: &str, e: &toml::de::Error) -> String {
    let mut what: String =
        e.message().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
    // "unknown field `x`, expected one of `a`, `b`, … (every key)": the key is what matters.
    if let Some(cut) = what.find(", expected one of") {
        what.truncate(cut);
        what.push_str(" (`bertlab train --print-spec` lists the keys)");
    }
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {what}")
        }
        None => what,
    }
}

/// What a model reference must be (`model`, every command's `--model`).
const MODEL_NEEDS: &str = "needs a Hub id or a directory";

/// What a column setting must be (`text_column`, `label_column`, `--text-column`).
const COLUMN_NEEDS: &str = "needs a column name";

/// `--model` of the commands that take one outside a run spec: the rule of the spec's `model`.
pub fn model_arg(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err(MODEL_NEEDS.into());
    }
    Ok(text.to_string())
}

/// A column flag outside a run spec: the rule of the spec's `text_column`.
pub fn column_arg(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err(COLUMN_NEEDS.into());
    }
    Ok(text.to_string())
}

/// A count flag (steps, rows, batches): at least 1.
pub fn count_arg(text: &str) -> Result<usize, String> {
    at_least(text, 1, "")
}

/// A `max_len` flag outside a run spec: at least [`MIN_MAX_LEN`].
pub fn max_len_arg(text: &str) -> Result<usize, String> {
    at_least(text, MIN_MAX_LEN, " ([CLS], a token and [SEP])")
}

/// `text` as a whole number of at least `least` (`why` says why, after the bound).
fn at_least(text: &str, least: usize, why: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n >= least => Ok(n),
        Ok(_) => Err(format!("must be at least {least}{why}")),
        Err(e) => Err(e.to_string()),
    }
}

/// The fewest tokens a row may be padded or cut to: `[CLS]`, one token of the text, `[SEP]`.
pub const MIN_MAX_LEN: usize = 3;

/// The most tokens a row may have (BERT-family position tables are 512; this bounds a typo).
pub const MAX_MAX_LEN: usize = 4096;

/// The largest run spec file read: a spec is a few dozen keys.
pub const MAX_SPEC_BYTES: u64 = 1 << 20;

impl RunSpec {
    /// Read a spec from TOML text (`origin` names it in errors); missing keys take defaults.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<RunSpec, SpecError> {
        toml::from_str(text)
            .map_err(|e| SpecError::Parse { path: origin.to_path_buf(), message: toml_error_line(text, &e) })
    }

    /// Read a spec file: a regular file of at most [`MAX_SPEC_BYTES`] (a FIFO would wait for a
    /// writer, a device such as `/dev/zero` never end).
    pub fn from_toml_file(path: &Path) -> Result<RunSpec, SpecError> {
        let io = |source| SpecError::Io { path: path.to_path_buf(), source };
        let meta = std::fs::metadata(path).map_err(io)?;
        if let Some(what) = crate::not_regular_kind(&meta) {
            return Err(io(std::io::Error::other(format!("is {what}; a run spec is a TOML file"))));
        }
        if meta.len() > MAX_SPEC_BYTES {
            return Err(io(std::io::Error::other(format!(
                "{} bytes; a run spec is a short TOML file (at most {MAX_SPEC_BYTES} bytes)",
                meta.len()
            ))));
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        RunSpec::from_toml_str(&text, path)
    }

    /// Rows per validation and test batch: `eval_batch`, else the training batch.
    pub fn eval_batch_size(&self) -> usize {
        self.eval_batch.unwrap_or(self.batch)
    }

    /// The sequence lengths batches are padded to: with bucketing, the multiples of
    /// `pad_multiple` up to `max_len`, and `max_len`; with fixed padding, `max_len` alone.
    pub fn padded_lengths(&self) -> Vec<usize> {
        let mut lengths: Vec<usize> = (1..=self.max_len)
            .map(|longest| self.padding.padded_len(longest, self.pad_multiple, self.max_len))
            .collect();
        // (ascending: the rule never pads a longer row to less)
        lengths.dedup();
        lengths
    }

    /// Every `[rows, length]` tensor shape the run may feed the model: its training batch and
    /// its evaluation batch at each of [`Self::padded_lengths`] (a split smaller than one batch
    /// adds its own row count). A run meets these or fewer; GPU kernels are compiled and tuned
    /// per shape.
    pub fn planned_shapes(&self) -> Vec<[usize; 2]> {
        let mut rows = vec![self.batch, self.eval_batch_size()];
        rows.dedup();
        let mut shapes: Vec<[usize; 2]> =
            rows.iter().flat_map(|&r| self.padded_lengths().into_iter().map(move |l| [r, l])).collect();
        shapes.sort_unstable();
        shapes.dedup();
        shapes
    }

    /// What, besides the batch shape, decides which kernels a run compiles and tunes: the
    /// model, the data (its label count sizes the head) and the precision. Runs with the same
    /// key and shape share their kernels, so a pipeline warms each such pair once.
    pub fn kernel_key(&self) -> String {
        format!(
            "{}|{}|{:?}|{}|{}",
            self.model, self.source, self.dataset_config, self.label_column, self.precision
        )
    }

    /// The spec as TOML; an error for a path that is not UTF-8 (TOML holds text only).
    pub fn to_toml(&self) -> Result<String, InvalidSetting> {
        for key in ["out", "cache_dir"] {
            self.check(key)?;
        }
        Ok(toml::to_string(self).expect("a RunSpec of UTF-8 paths always serialises"))
    }

    /// Check every value's range; the error names the key (= the flag).
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        ALL_KEYS.iter().try_for_each(|key| self.check(key))?;
        // Keys that contradict each other (checked on the whole spec: a pipeline may set them in
        // different layers).
        if self.warmup_ratio > 0.0 && self.schedule == Schedule::Constant {
            return Err(InvalidSetting {
                key: "warmup_ratio",
                value: self.warmup_ratio.to_string(),
                why: "has no effect with the constant schedule (no warm-up): choose the linear schedule, or \
                      leave it at 0"
                    .into(),
            });
        }
        Ok(())
    }

    /// Check the value of one key (unknown keys pass).
    pub fn check(&self, key: &str) -> Result<(), InvalidSetting> {
        // The value is shown as given (`-0.00001`), not in its short form, so the user finds it.
        fn bad(key: &'static str, value: impl std::fmt::Display, why: &str) -> Result<(), InvalidSetting> {
            Err(InvalidSetting { key, value: value.to_string(), why: why.to_string() })
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        match key {
            "model" if self.model.trim().is_empty() => bad("model", "\"\"", MODEL_NEEDS),
            "text_column" if self.text_column.trim().is_empty() => {
                bad("text_column", "\"\"", COLUMN_NEEDS)
            }
            "label_column" if self.label_column.trim().is_empty() => {
                bad("label_column", "\"\"", COLUMN_NEEDS)
            }
            "source" if self.source.trim().is_empty() => {
                bad("source", "\"\"", "needs `hub`, `hub:ORG/NAME[@REV]` or a directory")
            }
            "subset" if !(self.subset > 0.0 && self.subset <= 1.0) => {
                bad("subset", self.subset, "must be a fraction in (0, 1]")
            }
            "max_len" if !(MIN_MAX_LEN..=MAX_MAX_LEN).contains(&self.max_len) => bad(
                "max_len",
                self.max_len,
                &format!(
                    "must be in {MIN_MAX_LEN}..={MAX_MAX_LEN} (and at most the model's max_position_embeddings)"
                ),
            ),
            "lr" if !positive(self.lr) => bad("lr", self.lr, "must be a positive number"),
            "batch" if self.batch == 0 => bad("batch", 0, "must be at least 1"),
            "eval_batch" if self.eval_batch == Some(0) => bad("eval_batch", 0, "must be at least 1"),
            "epochs" if self.epochs == 0 => bad("epochs", 0, "must be at least 1"),
            "warmup_ratio" if !(0.0..1.0).contains(&self.warmup_ratio) => {
                bad("warmup_ratio", self.warmup_ratio, "must be in [0, 1)")
            }
            "weight_decay" => match self.weight_decay {
                Some(w) if !(w.is_finite() && w >= 0.0) => {
                    bad("weight_decay", w, "must be a non-negative number")
                }
                _ => Ok(()),
            },
            "grad_clip" => match self.grad_clip {
                Some(c) if !positive(c) => {
                    bad("grad_clip", c, "must be a positive number (leave it unset for no clipping)")
                }
                _ => Ok(()),
            },
            "accum" if self.accum == 0 => bad("accum", 0, "must be at least 1"),
            "pad_multiple" if self.pad_multiple == 0 => bad("pad_multiple", 0, "must be at least 1"),
            "device" if self.device.trim().is_empty() => {
                bad("device", "\"\"", "needs a device, e.g. `default`")
            }
            // Records and run specs are JSON and TOML, which hold text only. An empty path
            // would be the working directory, which a run fills with its files.
            "out" if self.out.to_str().is_none() => {
                bad("out", self.out.to_string_lossy(), "is not valid UTF-8; choose a UTF-8 path")
            }
            "out" if self.out.as_os_str().is_empty() => {
                bad("out", "\"\"", "needs a run directory (`.` for this one)")
            }
            "cache_dir" => match &self.cache_dir {
                Some(p) if p.to_str().is_none() => {
                    bad("cache_dir", p.to_string_lossy(), "is not valid UTF-8; choose a UTF-8 path")
                }
                Some(p) if p.as_os_str().is_empty() => {
                    bad("cache_dir", "\"\"", "needs a directory (leave it unset for no cache)")
                }
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

impl RunOverrides {
    /// Check the keys this sets, as [`RunSpec::check`] does once they are applied.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let mut spec = RunSpec::default();
        self.apply_to(&mut spec);
        self.keys().into_iter().try_for_each(|key| spec.check(key))
    }

    /// The spec these settings give over [`RunSpec::default`].
    pub fn to_spec(&self) -> RunSpec {
        let mut spec = RunSpec::default();
        self.apply_to(&mut spec);
        spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_notebook_baseline() {
        let s = RunSpec::default();
        assert_eq!((s.max_len, s.epochs, s.batch, s.lr, s.patience), (128, 3, 32, 1e-5, 2));
        // Evaluation at the training batch (the notebook's 64 is a pipeline setting).
        assert_eq!((s.eval_batch, s.eval_batch_size()), (None, 32));
        assert_eq!(s.optimizer, OptimizerKind::Adam);
        assert_eq!(s.padding, Padding::Bucket);
        assert_eq!(s.restore_best, RestoreBest::Always);
        s.validate().unwrap();
    }

    #[test]
    fn toml_round_trip_and_partial_files() {
        let s = RunSpec {
            optimizer: OptimizerKind::Adamw,
            grad_clip: Some(1.0),
            precision: Precision::BF16,
            truncation: Truncation::HeadTail,
            ..RunSpec::default()
        };
        let text = s.to_toml().unwrap();
        assert_eq!(RunSpec::from_toml_str(&text, Path::new("x.toml")).unwrap(), s);
        let partial = "model = \"../m\"\nmax_len = 256\noptimizer = \"adamw\"\npadding = \"fixed\"\nrestore_best = \"on-stop\"\n";
        let p = RunSpec::from_toml_str(partial, Path::new("p.toml")).unwrap();
        assert_eq!(
            (p.max_len, p.padding, p.restore_best, p.batch),
            (256, Padding::Fixed, RestoreBest::OnStop, 32)
        );
    }

    #[test]
    fn toml_errors_are_one_line_naming_line_column_and_key() {
        let cases = [
            ("lr = 2e-5\ncolour = 1\n", "line 2, column 1: unknown field `colour`"),
            ("lr = 2e-5\nbatch = \"big\"\n", "line 2, column 9:"),
            ("lr = 2e-5\nlr = 3e-5\n", "line 2"),
            ("lr = \n", "line 1"),
        ];
        for (text, want) in cases {
            let msg = RunSpec::from_toml_str(text, Path::new("s.toml")).unwrap_err().to_string();
            assert_eq!(msg.lines().count(), 1, "{msg}");
            assert!(msg.starts_with("s.toml: ") && msg.contains(want), "{msg}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = RunSpec::from_toml_str("max_length = 3\n", Path::new("run.toml")).unwrap_err().to_string();
        assert!(err.contains("run.toml") && err.contains("max_length"), "{err}");
        let err =
            RunSpec::from_toml_str("padding = \"ragged\"\n", Path::new("run.toml")).unwrap_err().to_string();
        assert!(err.contains("\"ragged\" is not one of fixed, bucket"), "{err}");
        let err = RunSpec { subset: 1.5, ..RunSpec::default() }.validate().unwrap_err();
        assert!(err.to_string().starts_with("subset = 1.5"), "{err}");
        assert_eq!(err.flag(), "--subset");
        assert_eq!(err.render(SettingStyle::Flag), "--subset 1.5: must be a fraction in (0, 1]");
        assert_eq!(err.render(SettingStyle::Key), err.to_string());
        assert!(RunSpec { accum: 0, ..RunSpec::default() }.validate().is_err());
        // One rule for every spelling: a clip of 0 is refused everywhere.
        let e = RunSpec { grad_clip: Some(0.0), ..RunSpec::default() }.validate().unwrap_err();
        assert_eq!(e.key, "grad_clip");
        let o = RunOverrides { grad_clip: Some(0.0), ..Default::default() };
        assert_eq!(o.validate().unwrap_err().key, "grad_clip");
        // An empty path is no directory (it was the working directory).
        let e =
            RunSpec::from_toml_str("out = \"\"\n", Path::new("run.toml")).unwrap().validate().unwrap_err();
        assert_eq!(e.to_string(), "out = \"\": needs a run directory (`.` for this one)");
        let e = RunSpec { cache_dir: Some("".into()), ..RunSpec::default() }.validate().unwrap_err();
        assert_eq!(e.key, "cache_dir");
        // The flags' own parsers: counts and lengths.
        assert_eq!(count_arg("3"), Ok(3));
        assert!(count_arg("0").is_err() && count_arg("-1").is_err() && count_arg("x").is_err());
        assert_eq!(max_len_arg("3"), Ok(3));
        assert_eq!(max_len_arg("2"), Err("must be at least 3 ([CLS], a token and [SEP])".into()));
    }

    #[test]
    fn overrides_apply_overlay_and_read_tables_key_by_key() {
        let a = RunOverrides { lr: Some(1e-5), batch: Some(32), ..Default::default() };
        let b = RunOverrides { batch: Some(16), max_len: Some(256), ..Default::default() };
        let c = a.overlay(&b);
        assert_eq!((c.lr, c.batch, c.max_len), (Some(1e-5), Some(16), Some(256)));
        assert_eq!(c.keys(), vec!["max_len", "lr", "batch"]);
        assert_eq!(c.value_text("lr").as_deref(), Some("1e-5"));
        assert_eq!(c.value_text("colour"), None);
        let spec = c.to_spec();
        assert_eq!((spec.batch, spec.max_len, spec.epochs), (16, 256, 3));
        assert_eq!(RunOverrides::of_spec(&spec).to_spec(), spec);
        // weight_decay, grad_clip, cache_dir, dataset_config, eval_batch unset
        assert_eq!(RunOverrides::of_spec(&spec).keys().len(), ALL_KEYS.len() - 5);

        let table: toml::Table = toml::from_str("lr = 2e-5\noptimizer = \"adamw\"\nepochs = 1").unwrap();
        let o = RunOverrides::from_table(&table).unwrap();
        assert_eq!((o.lr, o.optimizer, o.epochs), (Some(2e-5), Some(OptimizerKind::Adamw), Some(1)));
        let table: toml::Table = toml::from_str("optimizer = \"sgd\"").unwrap();
        let e = RunOverrides::from_table(&table).unwrap_err();
        assert_eq!(e.key, "optimizer");
        assert!(e.message.contains("\"sgd\" is not one of adam, adamw"), "{e}");
        let table: toml::Table = toml::from_str("colour = 1").unwrap();
        assert!(RunOverrides::from_table(&table).unwrap_err().message.contains("unknown key"));
        let table: toml::Table = toml::from_str("batch = \"big\"").unwrap();
        let e = RunOverrides::from_table(&table).unwrap_err().to_string();
        assert!(e.starts_with("`batch`: invalid type"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn paths_that_are_not_utf8_are_refused() {
        use std::os::unix::ffi::OsStrExt;
        let out = PathBuf::from(std::ffi::OsStr::from_bytes(b"runs/\xff"));
        let s = RunSpec { out, ..RunSpec::default() };
        let e = s.to_toml().unwrap_err();
        assert_eq!((e.key, e.flag()), ("out", "--out".to_string()));
        assert!(e.why.contains("UTF-8"), "{e}");
        assert_eq!(s.validate().unwrap_err().key, "out");
    }

    #[test]
    fn the_shapes_a_run_plans() {
        let s = RunSpec::default();
        assert_eq!(s.padded_lengths(), vec![32, 64, 96, 128]);
        assert_eq!(s.planned_shapes(), vec![[32, 32], [32, 64], [32, 96], [32, 128]]);
        let s = RunSpec { max_len: 100, eval_batch: Some(64), ..RunSpec::default() };
        assert_eq!(s.padded_lengths(), vec![32, 64, 96, 100]);
        assert_eq!(s.planned_shapes().len(), 8);
        let s = RunSpec { padding: Padding::Fixed, eval_batch: Some(64), ..RunSpec::default() };
        assert_eq!(s.planned_shapes(), vec![[32, 128], [64, 128]]);
    }

    #[test]
    fn key_lists() {
        assert_eq!(ALL_KEYS.len(), 29);
        assert!(PLACEMENT_KEYS.iter().all(|k| ALL_KEYS.contains(k)));
        assert_eq!(setting_keys().count(), 25);
        let spec = RunSpec::default();
        for key in ALL_KEYS {
            if !["weight_decay", "grad_clip", "cache_dir", "dataset_config", "eval_batch"].contains(key) {
                assert!(spec.value_text(key).is_some(), "{key}");
            }
        }
    }
}
