//! Value parsers of the bench commands' rate flags: a rate that is NaN, infinite or not
//! positive is clap's usage error, which names the flag and exits 2, instead of a run that
//! reports numbers it never measured (counts: `bertlab_run::count_arg`).

/// A finite number above 0 (a learning rate, a time limit).
pub(crate) fn positive(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        Ok(_) => Err("must be a finite number above 0".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A finite number of at least 0 (a tolerance).
pub(crate) fn non_negative(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        Ok(_) => Err("must be a finite number of at least 0".into()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_tolerances_refuse_what_cannot_be_meant() {
        assert_eq!(positive("5e-5"), Ok(5e-5));
        for bad in ["0", "-1e-5", "nan", "NaN", "inf", "-inf", ""] {
            assert!(positive(bad).is_err(), "{bad}");
        }
        assert_eq!(non_negative("0"), Ok(0.0));
        for bad in ["-0.1", "nan", "inf"] {
            assert!(non_negative(bad).is_err(), "{bad}");
        }
    }
}
