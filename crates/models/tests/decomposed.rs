//! The hand-derived backward passes of `ops::decomposed` (the `FusedKernels` defaults a CubeCL
//! backend runs for ops it has no kernel for) against Burn's autodiff of the reference
//! decomposition, on Flex: each gradient within 1e-5 (relative to max(1, |autodiff|)), with
//! padding and dropout. And `ops::check` (what `bertlab bench kernels` runs) on Flex's fast path.

use bertlab_models::ops::{
    self, check, decomposed, reference, AttentionState, DropoutMask, LinearActivation,
};
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Bool, Tensor, TensorData, TensorPrimitive};

type AD = Autodiff<Flex>;

struct Lcg(u64);

impl Lcg {
    fn values(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 =
                    self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                (((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * scale
            })
            .collect()
    }
}

fn tensor<B: Backend, const D: usize>(values: &[f32], shape: [usize; D]) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), &Default::default())
}

fn prim<const D: usize>(values: &[f32], shape: [usize; D]) -> FloatTensor<Flex> {
    tensor::<Flex, D>(values, shape).into_primitive().tensor()
}

fn host(t: FloatTensor<Flex>) -> Vec<f32> {
    Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(t)).into_data().to_vec().unwrap()
}

fn host_ad<const D: usize>(t: Tensor<Flex, D>) -> Vec<f32> {
    t.into_data().to_vec().unwrap()
}

/// Element-wise `|got − want| ≤ 1e-5·max(1, |want|)`; NaN fails.
fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs() / w.abs().max(1.0);
        assert!(err <= 1e-5, "{what}[{i}]: decomposed {g}, autodiff {w}");
    }
}

fn flat(t: FloatTensor<Flex>) -> FloatTensor<Flex> {
    let n = burn::tensor::TensorMetadata::shape(&t).num_elements();
    Flex::float_reshape(t, burn::tensor::Shape::new([n]))
}

use burn::tensor::ops::FloatTensorOps;

#[test]
fn linear_backward_matches_autodiff() {
    let _graph_turn = bertlab_models::autodiff_lock::lock();
    let mut rng = Lcg(3);
    let (rows, d_in, d_out) = (19, 12, 21);
    for activation in [LinearActivation::Identity, LinearActivation::Gelu] {
        let (x, w, b) = (rng.values(rows * d_in, 1.0), rng.values(d_in * d_out, 0.4), rng.values(d_out, 0.5));
        let g = rng.values(rows * d_out, 1.0);
        let (xa, wa, ba) = (
            tensor::<AD, 2>(&x, [rows, d_in]).require_grad(),
            tensor::<AD, 2>(&w, [d_in, d_out]).require_grad(),
            tensor::<AD, 1>(&b, [d_out]).require_grad(),
        );
        let out = reference::linear(xa.clone(), wa.clone(), ba.clone(), activation);
        let grads = (out * tensor::<AD, 2>(&g, [rows, d_out])).sum().backward();

        let (_, pre) = decomposed::linear_forward::<Flex>(
            prim(&x, [rows, d_in]),
            prim(&w, [d_in, d_out]),
            prim(&b, [d_out]),
            activation,
            true,
        );
        let [dx, dw, db] = decomposed::linear_backward::<Flex>(
            prim(&g, [rows, d_out]),
            prim(&x, [rows, d_in]),
            prim(&w, [d_in, d_out]),
            pre,
            activation,
            [true; 3],
        );
        assert_close("dx", &host(flat(dx.unwrap())), &host_ad(xa.grad(&grads).unwrap()));
        assert_close("dw", &host(flat(dw.unwrap())), &host_ad(wa.grad(&grads).unwrap()));
        assert_close("db", &host(db.unwrap()), &host_ad(ba.grad(&grads).unwrap()));
    }
}

#[test]
fn attention_backward_matches_autodiff_with_padding_and_dropout() {
    let _graph_turn = bertlab_models::autodiff_lock::lock();
    let mut rng = Lcg(5);
    let (batch, seq, heads, head_dim) = (3, 11, 2, 8);
    let width = 3 * heads * head_dim;
    let padding: Vec<bool> = (0..batch * seq).map(|i| i % seq >= seq - 3 * (i / seq)).collect();
    for dropout in [None, Some(DropoutMask::new(0.2, 77))] {
        let qkv = rng.values(batch * seq * width, 1.0);
        let g = rng.values(batch * seq * width / 3, 1.0);
        let qa = tensor::<AD, 3>(&qkv, [batch, seq, width]).require_grad();
        let mask_ad = Tensor::<AD, 2, Bool>::from_data(
            TensorData::new(padding.clone(), [batch, seq]),
            &Default::default(),
        );
        let out = reference::attention(qa.clone(), mask_ad, heads, dropout);
        let grads = (out * tensor::<AD, 3>(&g, [batch, seq, width / 3])).sum().backward();

        let mask = || {
            Tensor::<Flex, 2, Bool>::from_data(
                TensorData::new(padding.clone(), [batch, seq]),
                &Default::default(),
            )
            .into_primitive()
        };
        let (ctx, probs) = decomposed::attention_forward::<Flex>(
            prim(&qkv, [batch, seq, width]),
            mask(),
            heads,
            dropout,
            true,
        );
        let want_ctx = reference::attention(
            tensor::<Flex, 3>(&qkv, [batch, seq, width]),
            Tensor::from_primitive(mask()),
            heads,
            dropout,
        );
        assert_close("context", &host(flat(ctx.clone())), &host_ad(want_ctx));
        let want = host_ad(qa.grad(&grads).unwrap());
        // From the kept probabilities, and from a kernel's row statistics (the decomposition
        // recomputes the probabilities; the statistics themselves are not read).
        let row_stats = AttentionState::RowStats { context: ctx.clone(), log_sum_exp: ctx.clone() };
        for (state, kind) in [(probs.unwrap(), "probabilities"), (row_stats, "row statistics")] {
            let d_qkv = decomposed::attention_backward::<Flex>(
                prim(&g, [batch, seq, width / 3]),
                prim(&qkv, [batch, seq, width]),
                state,
                mask(),
                heads,
                dropout,
            );
            assert_close(&format!("d_qkv from the {kind}, dropout {dropout:?}"), &host(flat(d_qkv)), &want);
        }
    }
}

#[test]
fn layer_norm_backward_matches_autodiff() {
    let _graph_turn = bertlab_models::autodiff_lock::lock();
    let mut rng = Lcg(7);
    let (rows, width, eps) = (17, 40, 1e-12);
    for (with_branch, dropout) in [(true, Some(DropoutMask::new(0.1, 9))), (true, None), (false, None)] {
        let (r, br, gamma, beta) = (
            rng.values(rows * width, 2.0),
            rng.values(rows * width, 2.0),
            rng.values(width, 1.0),
            rng.values(width, 1.0),
        );
        let g = rng.values(rows * width, 1.0);
        let ra = tensor::<AD, 2>(&r, [rows, width]).require_grad();
        let ba = tensor::<AD, 2>(&br, [rows, width]).require_grad();
        let ga = tensor::<AD, 1>(&gamma, [width]).require_grad();
        let be = tensor::<AD, 1>(&beta, [width]).require_grad();
        let out = reference::residual_layer_norm(
            ra.clone(),
            with_branch.then(|| ba.clone()),
            ga.clone(),
            be.clone(),
            eps,
            dropout,
        );
        let grads = (out * tensor::<AD, 2>(&g, [rows, width])).sum().backward();

        let (y, state) = decomposed::layer_norm_forward::<Flex>(
            prim(&r, [rows, width]),
            with_branch.then(|| prim(&br, [rows, width])),
            prim(&gamma, [width]),
            prim(&beta, [width]),
            eps,
            dropout,
            true,
        );
        let want_y = reference::residual_layer_norm(
            tensor::<Flex, 2>(&r, [rows, width]),
            with_branch.then(|| tensor::<Flex, 2>(&br, [rows, width])),
            tensor::<Flex, 1>(&gamma, [width]),
            tensor::<Flex, 1>(&beta, [width]),
            eps,
            dropout,
        );
        assert_close("output", &host(flat(y)), &host_ad(want_y));
        let got = decomposed::layer_norm_backward::<Flex>(
            prim(&g, [rows, width]),
            state.unwrap(),
            prim(&gamma, [width]),
            dropout,
            with_branch.then_some(burn::tensor::DType::F32),
        );
        assert_close("d residual", &host(flat(got.residual)), &host_ad(ra.grad(&grads).unwrap()));
        if with_branch {
            assert_close("d branch", &host(flat(got.branch.unwrap())), &host_ad(ba.grad(&grads).unwrap()));
        } else {
            assert!(got.branch.is_none());
        }
        assert_close("d gamma", &host(got.gamma), &host_ad(ga.grad(&grads).unwrap()));
        assert_close("d beta", &host(got.beta), &host_ad(be.grad(&grads).unwrap()));
    }
}

#[test]
fn gelu_and_dropout_backward_match_autodiff() {
    let _graph_turn = bertlab_models::autodiff_lock::lock();
    let mut rng = Lcg(11);
    let (x, g) = (rng.values(3 * 257, 4.0), rng.values(3 * 257, 1.0));
    let xa = tensor::<AD, 2>(&x, [3, 257]).require_grad();
    let grads = (reference::gelu(xa.clone()) * tensor::<AD, 2>(&g, [3, 257])).sum().backward();
    let got = decomposed::gelu_backward::<Flex>(prim(&g, [3, 257]), prim(&x, [3, 257]));
    assert_close("gelu'", &host(flat(got)), &host_ad(xa.grad(&grads).unwrap()));

    let mask = DropoutMask::new(0.25, 1234);
    let got = decomposed::dropout_apply::<Flex>(prim(&x, [3, 257]), mask);
    let want = reference::dropout(tensor::<Flex, 2>(&x, [3, 257]), mask);
    assert_eq!(host(flat(got)), host_ad(want), "dropout: the same factors");
}

/// `bench kernels`' check on Flex's fast path (its fused kernels): every op passes, and a
/// check compares real numbers (a NaN fails it).
#[test]
fn op_check_passes_on_flex_and_fails_on_nan() {
    assert!(ops::has_fast_path::<AD>() && ops::has_fast_path::<Flex>());
    let checks = check::check_ops::<AD>(&Default::default(), 1);
    assert_eq!(checks.len(), 26, "{checks:?}");
    for c in &checks {
        assert!(c.passed(), "{c:?}");
    }
    // The choice of attention kernels is the CubeCL backends': none runs here, so no cases.
    assert!(check::check_attention_products::<AD>(&Default::default(), 1).is_empty());
    let nan = check::OpCheck { op: "x", case: String::new(), max_error: f64::NAN, tolerance: 1.0 };
    assert!(!nan.passed());
}
