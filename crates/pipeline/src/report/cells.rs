//! How a run's values are written where more than one part of the report writes them (the
//! markdown tables, the observations, the plots' titles).

use super::rows::RunRow;
use bertlab_run::format::{format_number, round_sig};

/// An accuracy with four decimals, `–` when there is none.
pub(crate) fn fmt_acc(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.4}"))
}

/// The data a run used: its fraction, or `fraction × pool = share` under `--subset`.
pub(crate) fn subset_cell(row: &RunRow) -> String {
    let (fraction, pool) = row.subset_parts();
    if pool == 1.0 {
        format_number(fraction)
    } else {
        format!(
            "{} × {} = {}",
            format_number(fraction),
            format_number(pool),
            format_number(round_sig(fraction * pool, 12))
        )
    }
}
