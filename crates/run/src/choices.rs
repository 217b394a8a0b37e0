//! The enumerated settings of a run (precision, truncation, optimizer, schedule, padding,
//! restore policy, splits): one spelling each for TOML, flags, records and reports.
//!
//! Each is written once with [`choice_enum!`]: its names (the first is the canonical one, the
//! others are accepted aliases), parsing (case-insensitive), display, and serde as that name.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A value of one of the enumerated settings that is not one of its names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not one of {}", choices.join(", "))]
pub struct UnknownChoice {
    /// The text given.
    pub value: String,
    /// The accepted (canonical) names.
    pub choices: Vec<&'static str>,
}

/// Declare an enumerated setting: variants with their canonical name and aliases.
macro_rules! choice_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident = $canonical:literal $(| $alias:literal)*,
            )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub enum $name {
            $(
                $(#[$vmeta])*
                $variant,
            )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: [$name; [$(stringify!($variant)),+].len()] = [$($name::$variant),+];

            /// The canonical name (as in TOML files, flags, records and reports).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $canonical,)+
                }
            }

            /// The canonical names, in declaration order.
            pub fn names() -> Vec<&'static str> {
                vec![$($canonical),+]
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownChoice;
            fn from_str(s: &str) -> Result<Self, UnknownChoice> {
                let lower = s.trim().to_ascii_lowercase();
                $(
                    if lower == $canonical $(|| lower == $alias)* {
                        return Ok($name::$variant);
                    }
                )+
                Err(UnknownChoice { value: s.to_string(), choices: $name::names() })
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

choice_enum! {
    /// The dtype matrix products and attention run in. Parameters and optimizer state stay f32
    /// whatever the choice (master weights); LayerNorm, softmax and the loss stay f32.
    pub enum Precision {
        /// Everything in f32.
        #[default]
        F32 = "f32" | "fp32" | "float32",
        /// Matmuls in IEEE half precision, with dynamic loss scaling when training.
        F16 = "f16" | "fp16" | "float16" | "half",
        /// Matmuls in bfloat16 (f32's exponent range: no loss scaling needed).
        BF16 = "bf16" | "bfloat16",
    }
}

choice_enum! {
    /// Which WordPiece tokens of a text longer than the budget (`max_len - 2`, room left for
    /// `[CLS]` and `[SEP]`) are kept. Truncation works on tokens before the special tokens are
    /// added, as HF does: [`Truncation::Head`] gives exactly the ids of `transformers`
    /// `tokenizer(text, truncation=True, max_length=max_len)`. The rule and the packing are
    /// `bertlab_tokenize::{kept_counts, pack_into}`; this crate only names the choice.
    pub enum Truncation {
        /// Keep the first `budget` tokens (HF's and the Keras-Hub preprocessor's behaviour).
        #[default]
        Head = "head",
        /// Keep the last `budget` tokens.
        Tail = "tail",
        /// Keep the first ¼ and the last ¾ of the budget (Sun et al. 2019, "How to Fine-Tune BERT
        /// for Text Classification?"). The head gets `round(budget / 4)` tokens, halves rounded
        /// up, which at max_len 512 is the paper's 128 + 382.
        HeadTail = "head-tail" | "head_tail" | "headtail",
    }
}

impl Truncation {
    /// A stable small number for hashing and file headers (the token cache's).
    pub fn code(self) -> u8 {
        match self {
            Truncation::Head => 0,
            Truncation::Tail => 1,
            Truncation::HeadTail => 2,
        }
    }

    /// The strategy of [`Truncation::code`].
    pub fn from_code(code: u8) -> Option<Truncation> {
        Truncation::ALL.get(code as usize).copied()
    }
}

choice_enum! {
    /// Which optimizer recipe a run uses.
    pub enum OptimizerKind {
        /// `keras.optimizers.Adam`: β = (0.9, 0.999), ε = 1e-7 as "ε-hat", no weight decay (the
        /// notebook's optimizer).
        #[default]
        Adam = "adam",
        /// `torch.optim.AdamW` as HF's Trainer sets it up: ε = 1e-8, decoupled weight decay
        /// (0.01 by default) on every parameter except biases and LayerNorm weights.
        Adamw = "adamw",
    }
}

choice_enum! {
    /// The shape of the learning-rate curve.
    pub enum Schedule {
        /// The peak rate at every step (Keras' default, what the notebook does).
        #[default]
        Constant = "constant",
        /// From 0 up to the peak over the warmup steps, then linearly down to 0 at the last step.
        Linear = "linear",
    }
}

choice_enum! {
    /// How training and evaluation batches are padded.
    pub enum Padding {
        /// Every batch padded to `max_len`, batches drawn from a plain shuffle (the notebook).
        Fixed = "fixed",
        /// Each batch padded to its longest row (rounded up to `pad_multiple`), rows grouped by
        /// length (bertlab's default: several times fewer padded FLOPs on IMDB).
        #[default]
        Bucket = "bucket" | "dynamic",
    }
}

impl Padding {
    /// The length a batch whose longest row has `longest` tokens is padded to: `max_len`
    /// (fixed), or `longest` rounded up to a multiple of `pad_multiple`, at most `max_len`
    /// (bucket). The one rule of the trainer's batches and of the lengths a run plans
    /// (`RunSpec::padded_lengths`).
    pub fn padded_len(self, longest: usize, pad_multiple: usize, max_len: usize) -> usize {
        match self {
            Padding::Fixed => max_len,
            Padding::Bucket => {
                let step = pad_multiple.max(1);
                longest.div_ceil(step).saturating_mul(step).min(max_len).max(longest)
            }
        }
    }
}

choice_enum! {
    /// When the weights of the best epoch (minimum validation loss) replace the last ones.
    pub enum RestoreBest {
        /// At the end of every run (bertlab's default): the model tested and exported is always
        /// the best epoch's.
        #[default]
        Always = "always",
        /// Only when patience runs out, as Keras' `EarlyStopping(restore_best_weights=True)`
        /// does: a run that completes its epochs keeps the last epoch's weights.
        OnStop = "on-stop" | "on_stop",
    }
}

choice_enum! {
    /// Which rows a run trains, validates and tests on.
    pub enum SplitMode {
        /// The notebook's recipe on all of a dataset's rows joined (train, then validation, then
        /// test): a stratified subset, then 80/20 and 87.5/12.5 stratified splits.
        #[default]
        Notebook = "notebook",
        /// The dataset's own splits: the subset drawn stratified from train, validation carved
        /// from it (12.5 %, stratified) when the dataset has none, test as given.
        Given = "given",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_display_and_serialise_alike() {
        assert_eq!("BF16".parse::<Precision>(), Ok(Precision::BF16));
        assert_eq!("half".parse::<Precision>(), Ok(Precision::F16));
        assert_eq!(Precision::F16.to_string(), "f16");
        let e = "f8".parse::<Precision>().unwrap_err().to_string();
        assert_eq!(e, "\"f8\" is not one of f32, f16, bf16");
        assert_eq!("head_tail".parse::<Truncation>(), Ok(Truncation::HeadTail));
        assert_eq!("dynamic".parse::<Padding>(), Ok(Padding::Bucket));
        assert_eq!(serde_json::to_string(&RestoreBest::OnStop).unwrap(), "\"on-stop\"");
        assert_eq!(serde_json::from_str::<OptimizerKind>("\"adamw\"").unwrap(), OptimizerKind::Adamw);
        let e = serde_json::from_str::<OptimizerKind>("\"sgd\"").unwrap_err().to_string();
        assert!(e.contains("\"sgd\" is not one of adam, adamw"), "{e}");
        assert_eq!(Schedule::default(), Schedule::Constant);
        assert_eq!(Padding::default(), Padding::Bucket);
        assert_eq!(SplitMode::default(), SplitMode::Notebook);
        assert_eq!("Given".parse::<SplitMode>(), Ok(SplitMode::Given));
        assert_eq!(serde_json::to_string(&SplitMode::Notebook).unwrap(), "\"notebook\"");
        let e = "random".parse::<SplitMode>().unwrap_err().to_string();
        assert_eq!(e, "\"random\" is not one of notebook, given");
        for t in Truncation::ALL {
            assert_eq!(Truncation::from_code(t.code()), Some(t));
            assert_eq!(t.to_string().parse::<Truncation>(), Ok(t));
        }
    }
}
