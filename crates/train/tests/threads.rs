//! Training in several threads of one process gets whole gradients. Burn 0.21's autodiff lets a
//! `backward()` on one thread reclaim graph steps another thread is still building
//! (tracel-ai/burn#5573); `bertlab_models::autodiff_lock` makes bertlab's forward-backward take
//! turns. Without it this test loses gradients within a few rounds (checked by taking the lock
//! out of `forward_backward`: parameters without a gradient, then values that differ).

use bertlab_models::{ModelConfig, Precision, TextClassifier};
use bertlab_train::{forward_backward, BatchArrays};
use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

type AB = Autodiff<Flex>;

/// A 2-layer DistilBERT of width 32, dropout off (the gradient is a function of the weights).
fn tiny_model() -> TextClassifier<AB> {
    let config = ModelConfig::from_json(
        r#"{"model_type": "distilbert", "vocab_size": 64, "dim": 32, "n_layers": 2, "n_heads": 2,
            "hidden_dim": 64, "max_position_embeddings": 32, "activation": "gelu", "dropout": 0.0,
            "attention_dropout": 0.0, "seq_classif_dropout": 0.0, "pad_token_id": 0}"#,
        "tiny",
    )
    .unwrap();
    let device = Default::default();
    AB::seed(&device, 11);
    TextClassifier::<AB>::random(config, &device)
}

fn batch() -> (BatchArrays, Vec<u32>) {
    let (rows, len) = (4, 16);
    let input_ids =
        (0..rows * len).map(|i| if i % len < 10 + i / len { 1 + (i as i64 * 5) % 60 } else { 0 }).collect();
    let attention_mask = (0..rows * len).map(|i| i64::from(i % len < 10 + i / len)).collect();
    (BatchArrays { input_ids, attention_mask, rows, len }, vec![0, 1, 1, 0])
}

/// Every parameter's gradient, in the module's order; `None` where it has none.
fn gradients(model: &TextClassifier<AB>, grads: &GradientsParams) -> Vec<Option<Vec<f32>>> {
    struct Collect<'a>(&'a GradientsParams, Vec<Option<Vec<f32>>>);
    impl ModuleVisitor<AB> for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
            let grad = self.0.get::<Flex, D>(param.id).map(|g| g.into_data().to_vec::<f32>().unwrap());
            self.1.push(grad);
        }
    }
    let mut c = Collect(grads, Vec::new());
    model.visit(&mut c);
    c.1
}

#[test]
fn threads_training_side_by_side_get_the_gradients_of_one_alone() {
    let device = Default::default();
    let model = tiny_model();
    let (arrays, labels) = batch();
    let (grads, _) = forward_backward(&model, &arrays, &labels, 0.25, Precision::F32, &device);
    let alone = gradients(&model, &grads);
    assert!(alone.iter().all(Option::is_some), "a parameter without a gradient when alone");
    let total: usize = alone.iter().flatten().map(Vec::len).sum();

    std::thread::scope(|scope| {
        for thread in 0..4 {
            let (model, arrays, labels, alone) = (model.clone(), &arrays, &labels, &alone);
            scope.spawn(move || {
                for round in 0..150 {
                    let (grads, _) = forward_backward(&model, arrays, labels, 0.25, Precision::F32, &device);
                    let got = gradients(&model, &grads);
                    for (i, (g, want)) in got.iter().zip(alone).enumerate() {
                        let g = g.as_ref().unwrap_or_else(|| {
                            panic!("thread {thread} round {round}: parameter {i} lost its gradient")
                        });
                        let want = want.as_ref().unwrap();
                        for (x, y) in g.iter().zip(want) {
                            // NaN fails: the comparison is false.
                            assert!(
                                (x - y).abs() <= 1e-6 * y.abs().max(1.0),
                                "thread {thread} round {round}: parameter {i} gradient {x} vs {y} alone"
                            );
                        }
                    }
                    assert_eq!(got.iter().flatten().map(Vec::len).sum::<usize>(), total);
                }
            });
        }
    });
}
