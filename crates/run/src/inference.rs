//! The settings of the commands that run a model without training it (`eval`, `predict`,
//! `encode`, `tokenize`, the benches): groups of flags declared once here and flattened into
//! each command, all optional. A flag that is not given takes the value of the run that
//! exported the model (its recorded [`RunSpec`], when the model is a run's `best/`), else the
//! default of [`RunSpec`] — never a default of the command's own. Each group turns into
//! [`RunOverrides`], so values are checked by the one rule of [`RunSpec::check`] and errors name
//! the key as the flag.

use std::path::PathBuf;

use crate::choices::{Precision, SplitMode, Truncation};
use crate::spec::{InvalidSetting, RunOverrides, RunSpec};

/// Which tokens of each text a command keeps: `--max-len` and `--truncation`.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct TokenSettings {
    /// Tokens per text, [CLS] and [SEP] included (default: the run's, when --model is a run's
    /// best/; else the longest the model and its tokenizer allow).
    #[cfg_attr(feature = "clap", arg(long))]
    pub max_len: Option<usize>,
    /// Which tokens of a long text are kept: head, tail or head-tail (default: the run's, else
    /// head).
    #[cfg_attr(feature = "clap", arg(long))]
    pub truncation: Option<Truncation>,
}

/// Where a command runs: `--device`. Where a run trained is never carried over: it names a
/// machine, not a property of the model.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct DeviceSetting {
    /// The build's device by default (the CPU, or GPU 0 in a CUDA build); cuda:N picks a GPU,
    /// gpu:N in a wgpu build, cpu the CPU.
    #[cfg_attr(feature = "clap", arg(long = "device"))]
    pub name: Option<String>,
}

impl DeviceSetting {
    /// `--device`, else [`RunSpec`]'s default (`default`, the build's own).
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| RunSpec::default().device)
    }
}

/// How a command runs a model: `--batch`, `--precision` and `--device`.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct ComputeSettings {
    /// Texts per batch; batches group texts of similar length (default: the run's evaluation
    /// batch, else 32).
    #[cfg_attr(feature = "clap", arg(long))]
    pub batch: Option<usize>,
    /// f32, f16 or bf16 (default: the run's, else f32).
    #[cfg_attr(feature = "clap", arg(long))]
    pub precision: Option<Precision>,
    /// Where it runs.
    #[cfg_attr(feature = "clap", command(flatten))]
    pub device: DeviceSetting,
}

/// [`TokenSettings`] and [`ComputeSettings`]: the flags of `eval`, `predict` and `encode`.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct InferenceSettings {
    /// Which tokens are kept.
    #[cfg_attr(feature = "clap", command(flatten))]
    pub tokens: TokenSettings,
    /// How the model runs.
    #[cfg_attr(feature = "clap", command(flatten))]
    pub compute: ComputeSettings,
}

/// Which rows of which dataset a command reads: `--source`, the columns, the dataset's config
/// and the split recipe (`--splits`, `--subset`, `--seed`).
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct DataSelection {
    /// Data: `hub` (IMDB), `hub:ORG/NAME[@REV]`, a directory of data files, or one .parquet,
    /// .csv, .tsv or .jsonl file (default: the run's, else `hub`).
    #[cfg_attr(feature = "clap", arg(long))]
    pub source: Option<String>,
    /// The column holding the texts (default: the run's, else `text`).
    #[cfg_attr(feature = "clap", arg(long))]
    pub text_column: Option<String>,
    /// The column holding the labels, class ids or names (default: the run's, else `label`).
    #[cfg_attr(feature = "clap", arg(long))]
    pub label_column: Option<String>,
    /// The dataset's config, where it has several (default: the run's).
    #[cfg_attr(feature = "clap", arg(long = "config", visible_alias = "dataset-config"))]
    pub dataset_config: Option<String>,
    /// notebook (all rows joined, the notebook's recipe) or given (the dataset's own splits)
    /// (default: the run's, else notebook).
    #[cfg_attr(feature = "clap", arg(long))]
    pub splits: Option<SplitMode>,
    /// Fraction of the dataset the splits are drawn from, in (0, 1] (default: the run's,
    /// else 1).
    #[cfg_attr(feature = "clap", arg(long))]
    pub subset: Option<f64>,
    /// Seed of the splits (default: the run's, else 42).
    #[cfg_attr(feature = "clap", arg(long))]
    pub seed: Option<u64>,
}

/// The values a model-running command uses, every one decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Inference {
    /// Tokens per text, [CLS] and [SEP] included.
    pub max_len: usize,
    /// Which tokens of a long text are kept.
    pub truncation: Truncation,
    /// Texts per batch.
    pub batch: usize,
    /// Compute precision.
    pub precision: Precision,
    /// The device, as given (`default`, `cpu`, `cuda:1`, …).
    pub device: String,
    /// Bucketed lengths are rounded up to a multiple of this: the run's (its shapes), else the
    /// default. Not a flag: it changes no output.
    pub pad_multiple: usize,
}

impl TokenSettings {
    /// These flags as run settings (the keys they set).
    pub fn overrides(&self) -> RunOverrides {
        RunOverrides { max_len: self.max_len, truncation: self.truncation, ..RunOverrides::default() }
    }
}

impl ComputeSettings {
    /// These flags as run settings: `--batch` is a run's `eval_batch`, the batch it predicts in.
    pub fn overrides(&self) -> RunOverrides {
        RunOverrides {
            eval_batch: self.batch,
            precision: self.precision,
            device: self.device.name.clone(),
            ..RunOverrides::default()
        }
    }
}

impl DataSelection {
    /// These flags as run settings.
    pub fn overrides(&self) -> RunOverrides {
        RunOverrides {
            source: self.source.clone(),
            text_column: self.text_column.clone(),
            label_column: self.label_column.clone(),
            dataset_config: self.dataset_config.clone(),
            splits: self.splits,
            subset: self.subset,
            seed: self.seed,
            ..RunOverrides::default()
        }
    }

    /// The run's data settings (or the defaults) with these flags set over them, checked.
    pub fn resolve(&self, run: Option<&RunSpec>) -> Result<RunSpec, InvalidSetting> {
        let mut spec = base_spec(run);
        set_checked(&mut spec, &self.overrides())?;
        Ok(spec)
    }
}

impl InferenceSettings {
    /// These flags as run settings.
    pub fn overrides(&self) -> RunOverrides {
        self.tokens.overrides().overlay(&self.compute.overrides())
    }

    /// The values to run with: each flag given, else the run's recorded value (`run`: the spec
    /// of the run that exported the model), else [`RunSpec`]'s default — except `max_len`,
    /// which without a run is `longest`, the longest the model and tokenizer allow (as a
    /// tokenizer called with `truncation=True` does), and the device, which names a machine and
    /// so is never taken from a run. Checks the values given (a `max_len` above `longest` is
    /// the caller's to refuse, with the model named).
    pub fn resolve(&self, run: Option<&RunSpec>, longest: usize) -> Result<Inference, InvalidSetting> {
        let mut spec = base_spec(run);
        if run.is_none() {
            spec.max_len = longest;
        }
        spec.device = RunSpec::default().device;
        set_checked(&mut spec, &self.overrides())?;
        Ok(Inference {
            max_len: spec.max_len,
            truncation: spec.truncation,
            batch: spec.eval_batch_size(),
            precision: spec.precision,
            device: spec.device,
            pad_multiple: spec.pad_multiple,
        })
    }
}

/// The spec defaults come from: the run's, else [`RunSpec::default`].
fn base_spec(run: Option<&RunSpec>) -> RunSpec {
    run.cloned().unwrap_or_default()
}

/// Set `overrides` on `spec` and check each key set; `eval_batch` is named as these commands'
/// `--batch`.
fn set_checked(spec: &mut RunSpec, overrides: &RunOverrides) -> Result<(), InvalidSetting> {
    overrides.apply_to(spec);
    overrides.keys().into_iter().try_for_each(|key| {
        spec.check(key).map_err(|e| match e.key {
            "eval_batch" => InvalidSetting { key: "batch", ..e },
            _ => e,
        })
    })
}

/// Where a model directory's run record would be: `<model>/../record.json` (a run exports its
/// best weights to `<run>/best/`).
pub fn record_beside(model_dir: &std::path::Path) -> Option<PathBuf> {
    Some(model_dir.parent()?.join(crate::record::RECORD_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_run_and_the_run_overrides_the_defaults() {
        let run = RunSpec {
            max_len: 256,
            truncation: Truncation::HeadTail,
            eval_batch: Some(16),
            precision: Precision::BF16,
            device: "cuda:3".into(),
            ..RunSpec::default()
        };
        let none = InferenceSettings::default();
        let from_run = none.resolve(Some(&run), 512).unwrap();
        // The run's settings, but not its device: a machine is not a property of the model.
        assert_eq!(
            from_run,
            Inference {
                max_len: 256,
                truncation: Truncation::HeadTail,
                batch: 16,
                precision: Precision::BF16,
                device: "default".into(),
                pad_multiple: 32,
            }
        );
        // Without a run: the model's longest max_len, RunSpec's other defaults.
        let plain = none.resolve(None, 512).unwrap();
        assert_eq!((plain.max_len, plain.truncation, plain.batch), (512, Truncation::Head, 32));
        assert_eq!((plain.precision, plain.device.as_str()), (Precision::F32, "default"));
        let flags = InferenceSettings {
            tokens: TokenSettings { max_len: Some(64), truncation: Some(Truncation::Tail) },
            compute: ComputeSettings {
                batch: Some(8),
                precision: Some(Precision::F16),
                device: DeviceSetting { name: Some("cpu".into()) },
            },
        };
        let given = flags.resolve(Some(&run), 512).unwrap();
        assert_eq!(
            given,
            Inference {
                max_len: 64,
                truncation: Truncation::Tail,
                batch: 8,
                precision: Precision::F16,
                device: "cpu".into(),
                pad_multiple: 32,
            }
        );
    }

    #[test]
    fn bad_values_are_named_by_the_flag_given() {
        let batch0 = InferenceSettings {
            compute: ComputeSettings { batch: Some(0), ..Default::default() },
            ..Default::default()
        };
        let e = batch0.resolve(None, 512).unwrap_err();
        assert_eq!((e.key, e.flag(), e.value.as_str()), ("batch", "--batch".to_string(), "0"));
        let short = InferenceSettings {
            tokens: TokenSettings { max_len: Some(2), ..Default::default() },
            ..Default::default()
        };
        assert_eq!(short.resolve(None, 512).unwrap_err().flag(), "--max-len");
        let data = DataSelection { subset: Some(1.5), ..Default::default() };
        let e = data.resolve(None).unwrap_err();
        assert_eq!((e.flag(), e.value.as_str()), ("--subset".to_string(), "1.5"));
        assert_eq!(
            DataSelection { source: Some(" ".into()), ..Default::default() }.resolve(None).unwrap_err().key,
            "source"
        );
    }

    #[test]
    fn data_selection_keeps_the_runs_recipe_unless_told() {
        let run = RunSpec {
            source: "data/x.csv".into(),
            subset: 0.25,
            seed: 7,
            splits: SplitMode::Given,
            text_column: "review".into(),
            dataset_config: Some("plain".into()),
            ..RunSpec::default()
        };
        let d = DataSelection { seed: Some(9), ..Default::default() }.resolve(Some(&run)).unwrap();
        assert_eq!(
            (d.source.as_str(), d.subset, d.seed, d.splits),
            ("data/x.csv", 0.25, 9, SplitMode::Given)
        );
        assert_eq!((d.text_column.as_str(), d.dataset_config.as_deref()), ("review", Some("plain")));
        let fresh = DataSelection::default().resolve(None).unwrap();
        assert_eq!((fresh.source.as_str(), fresh.subset, fresh.seed), ("hub", 1.0, 42));
    }

    #[test]
    fn the_record_sits_beside_best() {
        assert_eq!(
            record_beside(std::path::Path::new("runs/a/best")),
            Some(PathBuf::from("runs/a/record.json"))
        );
    }
}
