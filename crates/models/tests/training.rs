//! The model on an autodiff backend, as the trainer drives it: gradients reach every f32
//! master weight, and f16/bf16 compute gives gradients close to f32's.

mod common;

use bertlab_hub::{HubOptions, RepoRef};
use bertlab_models::{load_classifier, Precision, TextClassifier};
use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, Tensor};
use common::*;

type B = Autodiff<Flex>;

/// Every parameter's gradient (flattened, in visiting order) and dtype.
struct Grads<'a> {
    grads: &'a <B as AutodiffBackend>::Gradients,
    out: Vec<(DType, Vec<f32>)>,
}

impl ModuleVisitor<B> for Grads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        assert_eq!(param.val().dtype(), DType::F32, "the master weights stay f32");
        let grad = param.val().grad(self.grads).expect("every parameter gets a gradient");
        self.out.push((grad.dtype(), values(grad)));
    }
}

fn gradients(model: &TextClassifier<B>, precision: Precision) -> Vec<(DType, Vec<f32>)> {
    let dir = fixture("tiny-distilbert-classifier").expect("checked by the caller");
    let expected = read_json(&dir.join("expected.json"));
    let device = Default::default();
    let ids = int_matrix::<B>(&expected["input_ids"], &device);
    let mask = int_matrix::<B>(&expected["attention_mask"], &device);
    let logits = model.forward(ids, mask, precision);
    assert_eq!(logits.dtype(), DType::F32, "logits are f32 whatever the compute dtype");
    // A loss whose gradient reaches everything: squared logits.
    let grads = (logits.clone() * logits).sum().backward();
    let mut visitor = Grads { grads: &grads, out: Vec::new() };
    model.visit(&mut visitor);
    visitor.out
}

#[test]
fn half_precision_gradients_reach_f32_weights_and_match_f32() {
    // This fixture's config has every dropout at 0, so training mode is deterministic.
    let Some(dir) = fixture("tiny-distilbert-classifier") else { return };
    let (model, _, _) =
        load_classifier::<B>(&RepoRef::Local(dir), &HubOptions::default(), &[], 0, &Default::default())
            .unwrap();
    let reference = gradients(&model, Precision::F32);
    // The checkpoint's 40 tensors: each layer's query, key and value weights (and biases) are
    // one parameter, 2 layers × 4 fewer.
    assert_eq!(reference.len(), 32, "the checkpoint's 40 tensors as 32 parameters");
    for (precision, half) in [(Precision::F16, DType::F16), (Precision::BF16, DType::BF16)] {
        let got = gradients(&model, precision);
        assert_eq!(got.len(), reference.len());
        // The encoder's linear layers (2 layers × 4 × weight and bias) multiply in the half
        // dtype, and `ops::param_cast` hands their gradients on as the products made them (the
        // optimizer widens them); every other gradient is f32, the head's included (it
        // multiplies in f32, so its loss-scaled weight gradient cannot overflow as autocast's
        // f16 one does: issue 22).
        let in_half = got.iter().filter(|(dtype, _)| *dtype == half).count();
        assert_eq!(in_half, 16, "{precision}: the linear layers' gradients come in {half:?}");
        let mut worst = 0.0f32;
        for ((dtype, g), (_, r)) in got.iter().zip(&reference) {
            assert!(*dtype == DType::F32 || *dtype == half, "{precision}: a gradient in {dtype:?}");
            assert!(g.iter().all(|v| v.is_finite()));
            let scale = r.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-3);
            worst = worst.max(max_abs_diff(g, r) / scale);
        }
        eprintln!("{precision}: worst relative gradient error vs f32 {worst:.2e}");
        let bound = if precision == Precision::F16 { 2e-2 } else { 1e-1 };
        assert!(worst <= bound, "{precision}: relative gradient error {worst}");
    }
}
