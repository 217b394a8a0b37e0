//! Compute precision of a forward pass.

use std::fmt;
use std::str::FromStr;

use burn::tensor::FloatDType;

/// The dtype matrix products and attention run in.
///
/// Parameters always stay f32 (master weights): each forward casts them, with
/// [`burn::tensor::Tensor::cast`], to the compute dtype where they enter a matmul. LayerNorm,
/// softmax (on the explicit attention path), residual sums and the logits stay f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Matmuls in IEEE half precision (train with loss scaling).
    F16,
    /// Matmuls in bfloat16 (f32's range, no loss scaling needed).
    BF16,
}

impl Precision {
    /// Burn's dtype for the matmul inputs.
    pub fn float_dtype(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::F16 => FloatDType::F16,
            Precision::BF16 => FloatDType::BF16,
        }
    }

    /// `"f32"`, `"f16"` or `"bf16"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::BF16 => "bf16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(Precision::F16),
            "bf16" | "bfloat16" => Ok(Precision::BF16),
            other => Err(format!("unknown precision {other:?}: expected f32, f16 or bf16")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        for p in [Precision::F32, Precision::F16, Precision::BF16] {
            assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
        }
        assert_eq!("BF16".parse::<Precision>().unwrap(), Precision::BF16);
        assert!("f8".parse::<Precision>().unwrap_err().contains("f8"));
        assert_eq!(Precision::F16.float_dtype(), FloatDType::F16);
    }
}
