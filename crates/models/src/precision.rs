//! Compute precision of a forward pass.
//!
//! [`Precision`] is a run setting, defined once in bertlab-run (which carries no Burn); this
//! module maps it to Burn's dtype. Parameters always stay f32 (master weights): each forward
//! casts them, with [`burn::tensor::Tensor::cast`], to the compute dtype where they enter a
//! matmul. LayerNorm, the attention scores and softmax, residual sums and the logits stay
//! f32.

use burn::tensor::FloatDType;

pub use bertlab_run::Precision;

/// Burn's dtype for the matmul inputs of `precision`.
pub fn float_dtype(precision: Precision) -> FloatDType {
    match precision {
        Precision::F32 => FloatDType::F32,
        Precision::F16 => FloatDType::F16,
        Precision::BF16 => FloatDType::BF16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        for p in Precision::ALL {
            assert_eq!(p.to_string().parse::<Precision>().unwrap(), p);
        }
        assert_eq!("BF16".parse::<Precision>().unwrap(), Precision::BF16);
        assert!("f8".parse::<Precision>().unwrap_err().to_string().contains("f8"));
        assert_eq!(float_dtype(Precision::F16), FloatDType::F16);
    }
}
