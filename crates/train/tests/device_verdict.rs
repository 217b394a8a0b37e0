//! The step's verdict taken on the device (`bertlab_train::step_state`): with a dynamic loss
//! scale or a clip, `TrainStep` decides overflow, clipping, the learning rate and Adam's bias
//! corrections on the device and reads nothing back. These tests hold it to the host
//! arithmetic it replaced: the same parameters as Adam stepped with host numbers, a skipped step
//! that changes nothing (weights, moments, step count), the scale halving and growing as
//! PyTorch's `GradScaler`, and no device wait inside a step.

use bertlab_models::{host_wait, ModelConfig, Precision, TextClassifier};
use bertlab_train::optim::{clip_coefficient, grad_sq_norm};
use bertlab_train::{
    forward_backward, Adam, AdamSettings, BatchArrays, DynamicLossScaler, LrSchedule, Schedule, TrainStep,
};
use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

type AB = Autodiff<Flex>;

/// The tests of this file run one at a time: the wait counter is per process.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// A 2-layer DistilBERT of width 32, dropout off (steps are deterministic), random weights.
fn tiny_model(seed: u64) -> TextClassifier<AB> {
    let config = ModelConfig::from_json(
        r#"{"model_type": "distilbert", "vocab_size": 64, "dim": 32, "n_layers": 2, "n_heads": 2,
            "hidden_dim": 64, "max_position_embeddings": 32, "activation": "gelu", "dropout": 0.0,
            "attention_dropout": 0.0, "seq_classif_dropout": 0.0, "pad_token_id": 0}"#,
        "tiny",
    )
    .unwrap();
    let device = Default::default();
    AB::seed(&device, seed);
    let model = TextClassifier::<AB>::random(config, &device);
    // Parameters are initialised lazily: draw them now, so that clones share them.
    let _ = params(&model);
    model
}

fn batch(shift: i64) -> (BatchArrays, Vec<u32>) {
    let (rows, len) = (4, 8);
    let mut input_ids = Vec::new();
    let mut attention_mask = Vec::new();
    for r in 0..rows as i64 {
        let kept = 4 + r; // 4..7 tokens, the rest padding
        for c in 0..len as i64 {
            input_ids.push(if c < kept { 1 + (r * 7 + c * 3 + shift) % 60 } else { 0 });
            attention_mask.push(i64::from(c < kept));
        }
    }
    (BatchArrays { input_ids, attention_mask, rows, len }, vec![0, 1, 1, 0])
}

/// Every float parameter's values, in the module's order.
fn params(model: &TextClassifier<AB>) -> Vec<Vec<f32>> {
    struct Collect(Vec<Vec<f32>>);
    impl ModuleVisitor<AB> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
            self.0.push(param.val().into_data().convert::<f32>().to_vec::<f32>().unwrap());
        }
    }
    let mut c = Collect(Vec::new());
    model.visit(&mut c);
    c.0
}

/// Largest |a − b| / max(1e-3, |b|) over all parameters; NaN anywhere fails.
fn max_rel_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    let mut worst = 0f32;
    for (x, y) in a.iter().zip(b) {
        for (p, q) in x.iter().zip(y) {
            assert!(p.is_finite() && q.is_finite(), "non-finite parameter: {p} vs {q}");
            worst = worst.max((p - q).abs() / q.abs().max(1e-3));
        }
    }
    worst
}

fn linear_schedule() -> LrSchedule {
    // Warmup over the first 2 of 6 steps, then linear decay: every branch of the schedule.
    LrSchedule::new(Schedule::Linear, 1e-2, 6, 0.3)
}

/// The device path (a clip turns it on) against Adam stepped with host numbers — the learning
/// rate, bias corrections and clip factor computed in f64 on the host, the gradient norm read —
/// from the same weights and moments at every step of a warmup + linear-decay schedule.
/// (Step by step rather than two trajectories: a gradient that is rounding noise, such as the
/// key bias's, would make two trajectories part by ±lr for reasons that are not the optimizer.)
#[test]
fn device_verdict_steps_like_the_host_arithmetic() {
    // Its gradient-norm read is a counted wait: not while another test counts its own.
    let _serial = serial();
    let device = Default::default();
    for max_norm in [1e9, 0.05] {
        let schedule = linear_schedule();
        let settings = AdamSettings::hf_adamw(0.01);
        let mut trainer = TrainStep::new(tiny_model(3), settings, schedule, Some(max_norm), Precision::F32);
        let mut clipped = 0;
        for step in 0..6u64 {
            let (arrays, labels) = batch(step as i64);
            let host_model = trainer.model().clone();
            let mut reference = Adam::<AB>::new(settings, &host_model);
            let moments = trainer.optimizer().moments(trainer.model());
            reference.restore(&host_model, step, moments, &device).unwrap();
            let (grads, _) = forward_backward(&host_model, &arrays, &labels, 0.25, Precision::F32, &device);
            let norm = (grad_sq_norm::<AB, _>(&host_model, &grads).unwrap().into_scalar() as f64).sqrt();
            let factor = clip_coefficient(norm, max_norm);
            clipped += usize::from(factor < 1.0);
            let host_model = reference.step(schedule.lr(step), host_model, grads, factor);

            trainer.step(&[(&arrays, &labels)], &device, None);
            let diff = max_rel_diff(&params(trainer.model()), &params(&host_model));
            assert!(diff <= 1e-5, "max_norm {max_norm}, step {step}: parameters differ by {diff:e}");
        }
        let counts = trainer.settle();
        assert_eq!((counts.applied, counts.skipped), (6, 0));
        assert_eq!(trainer.optimizer().steps(), 6);
        assert_eq!(clipped > 0, max_norm < 1.0, "max_norm {max_norm}: {clipped} steps clipped");
    }
}

/// An f16 step whose scaled gradients overflow changes nothing — weights, moments, step count —
/// and halves the scale; the step that then applies is the same as a fresh optimizer's first
/// step at that scale (Adam's t stayed 0).
#[test]
fn an_overflowing_f16_step_changes_nothing_and_halves_the_scale() {
    let _serial = serial();
    let device = Default::default();
    let (arrays, labels) = batch(0);
    let start = tiny_model(5);
    let settings = AdamSettings::hf_adamw(0.01);
    let schedule = LrSchedule::new(Schedule::Constant, 1e-3, 100, 0.0);
    let mut trainer = TrainStep::new(start.clone(), settings, schedule, None, Precision::F16);
    // 2^40: the scaled gradients leave f16's range (65 504) at once.
    trainer.restore(0, Vec::new(), DynamicLossScaler::new(2f64.powi(40), 2000), &device).unwrap();
    let before = params(&start);
    let mut skips = 0;
    loop {
        trainer.step(&[(&arrays, &labels)], &device, None);
        let counts = trainer.settle();
        if counts.applied > 0 {
            break;
        }
        skips += 1;
        assert_eq!(counts.skipped, skips);
        assert_eq!(counts.scale, 2f64.powi(40 - skips as i32), "halved once per overflow");
        assert_eq!(max_rel_diff(&params(trainer.model()), &before), 0.0, "a skipped step moved the weights");
        assert!(trainer
            .optimizer()
            .moments(trainer.model())
            .iter()
            .all(|m| m.first.iter().all(|&x| x == 0.0)));
        assert!(skips < 40, "never stopped overflowing");
    }
    assert!(skips >= 2, "the test needs overflow: {skips} skips");
    let scale = 2f64.powi(40 - skips as i32);
    let mut fresh = TrainStep::new(start, settings, schedule, None, Precision::F16);
    fresh.restore(0, Vec::new(), DynamicLossScaler::new(scale, 2000), &device).unwrap();
    fresh.step(&[(&arrays, &labels)], &device, None);
    assert_eq!(fresh.settle().applied, 1);
    let diff = max_rel_diff(&params(trainer.model()), &params(fresh.model()));
    assert!(diff <= 1e-6, "the first applied step after {skips} skips differs by {diff:e}");
}

/// The scale doubles after `growth_interval` clean steps in a row, as `GradScaler` does.
#[test]
fn the_scale_grows_after_clean_steps() {
    let _serial = serial();
    let device = Default::default();
    let schedule = LrSchedule::new(Schedule::Constant, 1e-3, 100, 0.0);
    let mut trainer =
        TrainStep::new(tiny_model(7), AdamSettings::hf_adamw(0.01), schedule, None, Precision::F16);
    trainer.restore(0, Vec::new(), DynamicLossScaler::new(256.0, 3), &device).unwrap();
    let mut scales = Vec::new();
    for step in 0..7 {
        let (arrays, labels) = batch(step);
        trainer.step(&[(&arrays, &labels)], &device, None);
        scales.push(trainer.settle().scale);
    }
    assert_eq!(scales, [256.0, 256.0, 512.0, 512.0, 512.0, 1024.0, 1024.0]);
    assert_eq!(trainer.scaler().skipped_steps(), 0);
}

/// A steady-state f16 step with a clip waits for the device nowhere: the norm, the verdict and
/// the scale stay there until `settle`, which reads them in one wait.
#[test]
fn an_f16_step_does_not_wait_for_the_device() {
    let _serial = serial();
    let device = Default::default();
    let schedule = LrSchedule::new(Schedule::Constant, 1e-3, 100, 0.0);
    let mut trainer =
        TrainStep::new(tiny_model(9), AdamSettings::hf_adamw(0.01), schedule, Some(1.0), Precision::F16);
    let (arrays, labels) = batch(1);
    trainer.step(&[(&arrays, &labels)], &device, None);
    let waits = host_wait::count();
    for _ in 0..3 {
        trainer.step(&[(&arrays, &labels)], &device, None);
    }
    assert_eq!(host_wait::count() - waits, 0, "device waits inside f16 steps");
    let counts = trainer.settle();
    assert_eq!(host_wait::count() - waits, 1, "settle reads the state in one wait");
    assert_eq!((counts.applied, counts.skipped), (4, 0));
}
