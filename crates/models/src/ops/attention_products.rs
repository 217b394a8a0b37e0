//! Which CubeCL kernels multiply in training attention (issue 24): a process-wide choice,
//! set once at start-up (`bertlab` reads `BERTLAB_ATTENTION`), that the CubeCL backends read
//! each time they launch attention. It changes how the products are computed, never what the
//! op means: every choice is checked against the reference decomposition (`ops::check`).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};

/// How the CubeCL backends compute attention's products (other backends ignore it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionProducts {
    /// One unit a query (or key) row, scalar f32 products (`cube_attention`): every dtype and
    /// head size up to 256, every device. The default.
    #[default]
    Rows,
    /// 16 × 16 tiles of f16/bf16 operands into f32, a plane of 32 units a tile
    /// (`cube_attention_tiles`), the products in plain code: the tensor-core kernels' tiling,
    /// masking and statistics on any device (how CI checks them without tensor cores).
    Tiles,
    /// [`AttentionProducts::Tiles`] with the products on tensor cores (CubeCL's `cmma`) where
    /// the device has them for the operands' dtype; [`AttentionProducts::Rows`] elsewhere.
    TensorCores,
}

impl AttentionProducts {
    /// Every choice, in the order of the names.
    pub const ALL: [AttentionProducts; 3] =
        [AttentionProducts::Rows, AttentionProducts::Tiles, AttentionProducts::TensorCores];

    /// The name `BERTLAB_ATTENTION` and the records use.
    pub fn name(self) -> &'static str {
        match self {
            AttentionProducts::Rows => "rows",
            AttentionProducts::Tiles => "tiles",
            AttentionProducts::TensorCores => "tensor-cores",
        }
    }

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(code: u8) -> AttentionProducts {
        AttentionProducts::ALL.get(code as usize).copied().unwrap_or_default()
    }
}

impl fmt::Display for AttentionProducts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of [`AttentionProducts::ALL`]'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAttentionProducts(pub String);

impl fmt::Display for UnknownAttentionProducts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = AttentionProducts::ALL.iter().map(|p| p.name()).collect();
        write!(f, "unknown attention products {:?}: expected one of {}", self.0, names.join(", "))
    }
}

impl std::error::Error for UnknownAttentionProducts {}

impl FromStr for AttentionProducts {
    type Err = UnknownAttentionProducts;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AttentionProducts::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownAttentionProducts(s.to_string()))
    }
}

static CHOSEN: AtomicU8 = AtomicU8::new(0);
/// What the last attention launch ran (`u8::MAX`: none yet), so a check can say which kernel
/// it measured when the chosen one fell back.
static LAST_RAN: AtomicU8 = AtomicU8::new(u8::MAX);

/// Sets the choice for the whole process. Ops already queued on a device may run with either
/// choice: set it before the first op, or after reading every result back.
pub fn set_attention_products(products: AttentionProducts) {
    CHOSEN.store(products.code(), Ordering::Relaxed);
}

/// The process's choice ([`AttentionProducts::Rows`] unless set).
pub fn attention_products() -> AttentionProducts {
    AttentionProducts::from_code(CHOSEN.load(Ordering::Relaxed))
}

/// The choice when it is not the default: what a record or a measurement names, so that
/// results of another attention kernel are told apart.
pub fn attention_products_chosen() -> Option<AttentionProducts> {
    Some(attention_products()).filter(|p| *p != AttentionProducts::default())
}

/// How a record or a measurement names a non-default choice: `None` for the default;
/// the choice (`tensor-cores`) when it ran, or before any attention ran; `tensor-cores, ran
/// rows` when the last attention launch ran other kernels (the tile kernels take f16 and bf16
/// with heads a multiple of 16, and tensor cores need a device with `cmma` for the dtype; the
/// row kernels run otherwise). Read it after the work it labels.
pub fn attention_products_label() -> Option<String> {
    label(attention_products_chosen(), attention_products_ran())
}

fn label(chosen: Option<AttentionProducts>, ran: Option<AttentionProducts>) -> Option<String> {
    let chosen = chosen?;
    Some(match ran {
        Some(ran) if ran != chosen => format!("{chosen}, ran {ran}"),
        _ => chosen.to_string(),
    })
}

/// The kernels the last CubeCL attention launch (forward or backward) ran, if any ran.
pub fn attention_products_ran() -> Option<AttentionProducts> {
    let code = LAST_RAN.load(Ordering::Relaxed);
    (code != u8::MAX).then(|| AttentionProducts::from_code(code))
}

#[cfg(feature = "cubecl")]
pub(crate) fn record_ran(products: AttentionProducts) {
    LAST_RAN.store(products.code(), Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_an_unknown_name_lists_the_known_ones() {
        for p in AttentionProducts::ALL {
            assert_eq!(p.name().parse::<AttentionProducts>(), Ok(p));
            assert_eq!(AttentionProducts::from_code(p.code()), p);
        }
        let err = "cmma".parse::<AttentionProducts>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown attention products \"cmma\": expected one of rows, tiles, tensor-cores"
        );
        assert_eq!(AttentionProducts::default(), AttentionProducts::Rows);
    }

    #[test]
    fn a_label_names_a_choice_and_the_kernels_that_ran_in_its_place() {
        use AttentionProducts::{Rows, TensorCores, Tiles};
        assert_eq!(label(None, Some(Rows)), None, "the default is not named");
        assert_eq!(label(Some(TensorCores), None).as_deref(), Some("tensor-cores"));
        assert_eq!(label(Some(TensorCores), Some(TensorCores)).as_deref(), Some("tensor-cores"));
        assert_eq!(label(Some(TensorCores), Some(Rows)).as_deref(), Some("tensor-cores, ran rows"));
        assert_eq!(label(Some(Tiles), Some(Rows)).as_deref(), Some("tiles, ran rows"));
    }
}
