//! `bench numerics --inspect-at N`: where a half-precision curve parts from f32's, per
//! parameter — the half-precision gradient at the f32 run's weights against the f32 gradient
//! there, and each run's Adam moments against the f32 run's.

use bertlab_models::{Kernels, Precision, TextClassifier};
use bertlab_train::optim::MomentState;
use bertlab_train::{forward_backward, AdamSettings, BatchArrays, DynamicLossScaler};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use serde_json::json;

use crate::{emit, round};

/// Every gradient of `model` in `grads`, by dotted parameter path, as f64.
pub(crate) fn named_grads<B: AutodiffBackend>(
    model: &TextClassifier<B>,
    grads: &GradientsParams,
) -> Vec<(String, Vec<f64>)> {
    struct Collect<'a> {
        path: Vec<String>,
        grads: &'a GradientsParams,
        out: Vec<(String, Vec<f64>)>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_> {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
                let values = g.into_data().convert::<f32>().into_vec::<f32>().expect("f32 gradient");
                self.out.push((self.path.join("."), values.into_iter().map(f64::from).collect()));
            }
        }
    }
    let mut c = Collect { path: Vec::new(), grads, out: Vec::new() };
    model.visit(&mut c);
    c.out
}

/// The gradient of the mean cross-entropy of one batch in `precision`, at `model`'s weights,
/// through the reference decomposition (what every backend without a fused path runs). f16
/// scales the loss by the scaler's initial scale and unscales in f64 after the gradient has
/// been widened, as a training step does.
pub(crate) fn gradient<B: AutodiffBackend>(
    model: &TextClassifier<B>,
    arrays: &BatchArrays,
    labels: &[u32],
    precision: Precision,
    device: &B::Device,
) -> Vec<(String, Vec<f64>)> {
    let scale = if precision == Precision::F16 { DynamicLossScaler::f16().scale() } else { 1.0 };
    let model = model.clone().with_kernels(Kernels::Reference);
    let (grads, _) = forward_backward(&model, arrays, labels, scale / labels.len() as f64, precision, device);
    named_grads(&model, &grads)
        .into_iter()
        .map(|(name, g)| (name, g.into_iter().map(|x| x / scale).collect()))
        .collect()
}

/// The mean cross-entropy of one batch at `model`'s weights, forward in `precision`.
pub(crate) fn loss<B: AutodiffBackend>(
    model: &TextClassifier<B>,
    arrays: &BatchArrays,
    labels: &[u32],
    precision: Precision,
    device: &B::Device,
    classes: usize,
) -> f64 {
    let model = model.clone().with_kernels(Kernels::Reference);
    let (ids, mask) = bertlab_train::predict::batch_tensors::<B>(arrays, device);
    let logits = bertlab_train::predict::logits_to_vec(model.forward(ids, mask, precision));
    bertlab_train::metrics::cross_entropy_rows(&logits, labels, classes).iter().sum::<f64>()
        / labels.len() as f64
}

/// At a half-precision run's own weights: its loss with an f32 and a half-precision forward,
/// and its half-precision gradient against the f32 gradient there, by parameter kind.
pub(crate) fn own_weights(
    step: usize,
    precision: Precision,
    loss_f32: f64,
    loss_half: f64,
    reference_grads: &[(String, Vec<f64>)],
    half_grads: &[(String, Vec<f64>)],
) {
    let mut kinds: std::collections::BTreeMap<String, f64> = Default::default();
    for ((name, g32), (_, g)) in reference_grads.iter().zip(half_grads) {
        let e = kinds.entry(kind_of(name)).or_insert(0.0);
        *e = worst(*e, rel_l2(g, g32).0);
    }
    emit(json!({
        "bench": "numerics-inspect-own", "step": step, "precision": precision.as_str(),
        "loss_f32_forward": loss_f32, "loss_half_forward": loss_half,
        "grad_max_rel_l2_by_kind": kinds,
    }));
}

/// `(‖a − b‖ / ‖b‖, ‖b‖)`; NaN anywhere gives NaN (never a small error).
pub(crate) fn rel_l2(a: &[f64], b: &[f64]) -> (f64, f64) {
    let (mut diff, mut norm) = (0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        diff += (x - y) * (x - y);
        norm += y * y;
    }
    let norm = norm.sqrt();
    let rel = if norm > 0.0 {
        diff.sqrt() / norm
    } else if diff == 0.0 {
        0.0
    } else {
        f64::INFINITY
    };
    (rel, norm)
}

/// The Adam update of optimizer step `t` (1-based) at learning rate 1 from `moments` (none: the
/// first step) with gradient `g`, weight decay left out: the optimizer's own factors
/// ([`AdamSettings::update_factors`]), in f64.
pub(crate) fn adam_update(s: &AdamSettings, moments: Option<&MomentState>, g: &[f64], t: u64) -> Vec<f64> {
    let (step_size, sqrt_v_scale) = s.update_factors(1.0, t);
    (0..g.len())
        .map(|i| {
            let (m0, v0) = moments.map_or((0.0, 0.0), |m| (f64::from(m.first[i]), f64::from(m.second[i])));
            let m = s.beta1 * m0 + (1.0 - s.beta1) * g[i];
            let v = s.beta2 * v0 + (1.0 - s.beta2) * g[i] * g[i];
            step_size * m / (v.sqrt() * sqrt_v_scale + s.epsilon)
        })
        .collect()
}

/// Share of the elements whose sign differs between `a` and `reference` (a zero counts as
/// neither sign; NaN counts as a flip).
pub(crate) fn sign_flips(a: &[f64], reference: &[f64]) -> f64 {
    let flips = a.iter().zip(reference).filter(|(&x, &y)| x * y < 0.0 || x.is_nan() != y.is_nan()).count();
    flips as f64 / reference.len().max(1) as f64
}

/// Share of the elements that are non-zero in `reference` and exactly zero in `half`.
pub(crate) fn underflow_frac(half: &[f64], reference: &[f64]) -> f64 {
    let nonzero = reference.iter().filter(|&&y| y != 0.0).count();
    let lost = half.iter().zip(reference).filter(|(&x, &y)| y != 0.0 && x == 0.0).count();
    lost as f64 / nonzero.max(1) as f64
}

/// The kind of a parameter, its path without the layer index (`layers.3.qkv.weight` →
/// `layers.*.qkv.weight`), so that the summary groups layers together.
pub(crate) fn kind_of(path: &str) -> String {
    path.split('.')
        .map(|part| if part.parse::<usize>().is_ok() { "*" } else { part })
        .collect::<Vec<_>>()
        .join(".")
}

/// The larger of two errors; NaN if either is (`f64::max` would drop it).
fn worst(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// The comparison of one kind of parameter (all layers' `query.weight`, …): worst cases and
/// sums over its tensors.
#[derive(Default)]
struct KindStats {
    grad_rel: f64,
    underflow_sum: f64,
    first_moment_rel: f64,
    second_moment_rel: f64,
    update_rel: f64,
    flips_sum: f64,
    tensors: usize,
}

/// One precision's inspection at `step`: per-parameter lines, then a summary by parameter kind
/// (the largest gradient error first).
#[allow(clippy::too_many_arguments)]
pub(crate) fn inspect(
    step: usize,
    precision: Precision,
    reference_grads: &[(String, Vec<f64>)],
    half_grads: &[(String, Vec<f64>)],
    reference_moments: &[MomentState],
    half_moments: &[MomentState],
    optimizer: &AdamSettings,
    model: &str,
) {
    let mut kinds: std::collections::BTreeMap<String, KindStats> = Default::default();
    for ((name, g32), (_, g)) in reference_grads.iter().zip(half_grads) {
        let (rel, norm) = rel_l2(g, g32);
        let under = underflow_frac(g, g32);
        // The step's Adam update from the f32 run's moments, with either gradient: what the
        // optimizer would do with the half-precision gradient instead of the f32 one.
        let from = reference_moments.iter().find(|r| &r.path == name);
        let t = step as u64 + 1;
        let (u32_, u_half) = (adam_update(optimizer, from, g32, t), adam_update(optimizer, from, g, t));
        let (update_rel, _) = rel_l2(&u_half, &u32_);
        let flipped = sign_flips(&u_half, &u32_);
        let half = half_moments.iter().find(|h| &h.path == name);
        let (m_rel, v_rel) = from.zip(half).map_or((f64::NAN, f64::NAN), |(r, h)| {
            let f = |xs: &[f32]| xs.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
            let sqrt = |xs: &[f32]| xs.iter().map(|&x| f64::from(x).sqrt()).collect::<Vec<_>>();
            (rel_l2(&f(&h.first), &f(&r.first)).0, rel_l2(&sqrt(&h.second), &sqrt(&r.second)).0)
        });
        emit(json!({
            "bench": "numerics-inspect", "side": "bertlab", "model": model, "step": step,
            "precision": precision.as_str(), "param": name, "grad_norm_f32": norm,
            "rel_l2": rel, "underflow_frac": under,
            "first_moment_rel_l2": m_rel, "sqrt_second_moment_rel_l2": v_rel,
            "update_rel_l2": update_rel, "update_sign_flips": flipped,
        }));
        let e = kinds.entry(kind_of(name)).or_default();
        e.grad_rel = worst(e.grad_rel, rel);
        e.underflow_sum += under;
        e.first_moment_rel = worst(e.first_moment_rel, m_rel);
        e.second_moment_rel = worst(e.second_moment_rel, v_rel);
        e.tensors += 1;
        e.update_rel = worst(e.update_rel, update_rel);
        e.flips_sum += flipped;
    }
    let mut rows: Vec<_> = kinds.into_iter().collect();
    rows.sort_by(|a, b| b.1.grad_rel.total_cmp(&a.1.grad_rel));
    let summary: Vec<_> = rows
        .iter()
        .map(|(kind, k)| {
            let n = k.tensors.max(1) as f64;
            json!({"kind": kind, "max_rel_l2": round(k.grad_rel, 6), "mean_underflow_frac": round(k.underflow_sum / n, 6),
                   "max_first_moment_rel_l2": round(k.first_moment_rel, 6),
                   "max_sqrt_second_moment_rel_l2": round(k.second_moment_rel, 6),
                   "max_update_rel_l2": round(k.update_rel, 6), "mean_update_sign_flips": round(k.flips_sum / n, 6)})
        })
        .collect();
    emit(json!({
        "bench": "numerics-inspect-summary", "side": "bertlab", "model": model, "step": step,
        "precision": precision.as_str(), "by_kind": summary,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures() {
        let (rel, norm) = rel_l2(&[3.0, 4.0], &[3.0, 0.0]);
        assert_eq!((rel, norm), (4.0 / 3.0, 3.0));
        assert!(rel_l2(&[f64::NAN], &[1.0]).0.is_nan());
        assert_eq!(underflow_frac(&[0.0, 1.0, 0.0], &[1e-9, 1.0, 0.0]), 0.5);
        assert_eq!(kind_of("backbone.layers.11.qkv.weight"), "backbone.layers.*.qkv.weight");
        assert!(worst(1.0, f64::NAN).is_nan() && worst(f64::NAN, 0.0).is_nan());
        assert_eq!(worst(1.0, 2.0), 2.0);
        // The first Adam step moves by ±1 (bias-corrected m/√v) whatever the gradient's size.
        let u = adam_update(&AdamSettings::hf_adamw(0.01), None, &[1e-3, -2.0, 0.0], 1);
        assert!((u[0] - 1.0).abs() < 1e-4 && (u[1] + 1.0).abs() < 1e-8 && u[2] == 0.0, "{u:?}");
        assert_eq!(sign_flips(&[1.0, -1.0, 0.0], &[1.0, 1.0, 1.0]), 1.0 / 3.0);
    }
}
