//! Each hot op of an encoder layer at all-MiniLM-L6-v2's training shapes (batch 16 × 128
//! tokens, hidden 384, 12 heads, intermediate 1536): bertlab's fused op against its reference
//! decomposition (`bertlab_models::ops::reference`) and against the same op in PyTorch, forward
//! alone (inference, plain Flex) and forward + backward (training, `Autodiff<Flex>`, dropout on
//! where the op has it).
//!
//! ```text
//! BENCH_PYTHON=/tmp/venv-torch/bin/python cargo bench -p bertlab-models --bench ops
//! ```
//!
//! Forward + backward is timed as `(out · w).sum().backward()` with a fixed random `w` on
//! every side. Each cell is the best of BENCH_REPS repetitions (default 5), the three sides
//! interleaved op by op. BENCH_THREADS (default 2) threads; BENCH_PYTHON (default `python3`)
//! needs torch, else the PyTorch columns are skipped with the reason.

mod support;

use std::time::Instant;

use bertlab_models::ops::{self, reference, DropoutMask, LinearActivation};
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Distribution, Tensor};
use support::*;

type AD = Autodiff<Flex>;

const BATCH: usize = 16;
const SEQ: usize = 128;
const HIDDEN: usize = 384;
const HEADS: usize = 12;
const INTER: usize = 1536;
const ROWS: usize = BATCH * SEQ;
const P: f64 = 0.1;

/// An op in training: flattened inputs (leaves) and the dropout mask → flattened output.
type TrainFn = Box<dyn Fn(&[Tensor<AD, 1>], Option<DropoutMask>) -> Tensor<AD, 1>>;
/// An op in inference.
type EvalFn = Box<dyn Fn(&[Tensor<Flex, 1>]) -> Tensor<Flex, 1>>;

/// How an op is run: its inputs' shapes, and the op on either backend.
struct Op {
    name: &'static str,
    /// Input shapes (all random f32; a padding mask is made by the op itself).
    shapes: Vec<Vec<usize>>,
    fused: TrainFn,
    reference: TrainFn,
    fused_eval: EvalFn,
    reference_eval: EvalFn,
    has_dropout: bool,
}

fn r<B: Backend, const D: usize>(t: &Tensor<B, 1>, shape: [usize; D]) -> Tensor<B, D> {
    t.clone().reshape(shape)
}

fn flat<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, 1> {
    let n = t.shape().num_elements();
    t.reshape([n])
}

fn padding<B: Backend>() -> Tensor<B, 2, Bool> {
    // Realistic padding: row b keeps 128 − 4b tokens.
    let keep: Vec<bool> = (0..BATCH).flat_map(|b| (0..SEQ).map(move |s| s >= SEQ - 4 * b)).collect();
    Tensor::from_data(burn::tensor::TensorData::new(keep, [BATCH, SEQ]), &Default::default())
}

macro_rules! both {
    (|$t:ident, $d:ident| $body:expr) => {
        (
            Box::new(|$t: &[Tensor<AD, 1>], $d: Option<DropoutMask>| {
                #[allow(unused_imports)]
                use ops as which;
                flat($body)
            }) as TrainFn,
            Box::new(|$t: &[Tensor<AD, 1>], $d: Option<DropoutMask>| {
                #[allow(unused_imports)]
                use reference as which;
                flat($body)
            }) as TrainFn,
        )
    };
}

fn all_ops() -> Vec<Op> {
    let mut list = Vec::new();
    let mut add = |name, shapes: Vec<Vec<usize>>, train: (_, _), has_dropout, eval: (_, _)| {
        let (fused, reference) = train;
        let (fused_eval, reference_eval) = eval;
        list.push(Op { name, shapes, fused, reference, fused_eval, reference_eval, has_dropout });
    };
    macro_rules! eval {
        (|$t:ident| $body:expr) => {
            (
                Box::new(|$t: &[Tensor<Flex, 1>]| {
                    #[allow(unused_imports)]
                    use ops as which;
                    flat($body)
                }) as EvalFn,
                Box::new(|$t: &[Tensor<Flex, 1>]| {
                    #[allow(unused_imports)]
                    use reference as which;
                    flat($body)
                }) as EvalFn,
            )
        };
    }
    add(
        "QKV linear 2048x384 -> 1152",
        vec![vec![ROWS, HIDDEN], vec![HIDDEN, 3 * HIDDEN], vec![3 * HIDDEN]],
        both!(|t, _d| which::linear(
            r(&t[0], [ROWS, HIDDEN]),
            r(&t[1], [HIDDEN, 3 * HIDDEN]),
            t[2].clone(),
            LinearActivation::Identity
        )),
        false,
        eval!(|t| which::linear(
            r(&t[0], [ROWS, HIDDEN]),
            r(&t[1], [HIDDEN, 3 * HIDDEN]),
            t[2].clone(),
            LinearActivation::Identity
        )),
    );
    add(
        "linear + GELU 2048x384 -> 1536",
        vec![vec![ROWS, HIDDEN], vec![HIDDEN, INTER], vec![INTER]],
        both!(|t, _d| which::linear(
            r(&t[0], [ROWS, HIDDEN]),
            r(&t[1], [HIDDEN, INTER]),
            t[2].clone(),
            LinearActivation::Gelu
        )),
        false,
        eval!(|t| which::linear(
            r(&t[0], [ROWS, HIDDEN]),
            r(&t[1], [HIDDEN, INTER]),
            t[2].clone(),
            LinearActivation::Gelu
        )),
    );
    add(
        "attention 16x128, 12 heads, padded",
        vec![vec![BATCH, SEQ, 3 * HIDDEN]],
        both!(|t, d| which::attention(r(&t[0], [BATCH, SEQ, 3 * HIDDEN]), padding(), HEADS, d)),
        true,
        eval!(|t| which::attention(r(&t[0], [BATCH, SEQ, 3 * HIDDEN]), padding(), HEADS, None)),
    );
    add(
        "dropout + residual + LayerNorm 2048x384",
        vec![vec![ROWS, HIDDEN], vec![ROWS, HIDDEN], vec![HIDDEN], vec![HIDDEN]],
        both!(|t, d| which::residual_layer_norm(
            r(&t[0], [ROWS, HIDDEN]),
            Some(r(&t[1], [ROWS, HIDDEN])),
            t[2].clone(),
            t[3].clone(),
            1e-12,
            d
        )),
        true,
        eval!(|t| which::residual_layer_norm(
            r(&t[0], [ROWS, HIDDEN]),
            Some(r(&t[1], [ROWS, HIDDEN])),
            t[2].clone(),
            t[3].clone(),
            1e-12,
            None
        )),
    );
    add(
        "GELU 2048x1536",
        vec![vec![ROWS, INTER]],
        both!(|t, _d| which::gelu(r(&t[0], [ROWS, INTER]))),
        false,
        eval!(|t| which::gelu(r(&t[0], [ROWS, INTER]))),
    );
    list
}

const TORCH_SCRIPT: &str = r#"
import json, sys, time
args = json.loads(sys.stdin.readline())
import torch
import torch.nn.functional as F
torch.set_num_threads(args["threads"])
torch.manual_seed(0)
B, S, H, NH, I = args["batch"], args["seq"], args["hidden"], args["heads"], args["inter"]
R, P = B * S, args["p"]
pad = torch.zeros(B, S, dtype=torch.bool)
for b in range(B):
    pad[b, S - 4 * b:] = True
def attention(qkv, train):
    q, k, v = qkv.split(H, dim=2)
    split = lambda t: t.reshape(B, S, NH, H // NH).transpose(1, 2)
    mask = (~pad)[:, None, None, :]
    ctx = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask, dropout_p=P if train else 0.0)
    return ctx.transpose(1, 2).reshape(B, S, H)
ops = {
    "QKV linear 2048x384 -> 1152": ([(R, H), (3 * H, H), (3 * H,)], lambda t, train: F.linear(*t)),
    "linear + GELU 2048x384 -> 1536": ([(R, H), (I, H), (I,)], lambda t, train: F.gelu(F.linear(*t))),
    "attention 16x128, 12 heads, padded": ([(B, S, 3 * H)], lambda t, train: attention(t[0], train)),
    "dropout + residual + LayerNorm 2048x384": ([(R, H), (R, H), (H,), (H,)], lambda t, train: F.layer_norm(t[0] + F.dropout(t[1], P, train), (H,), t[2], t[3], 1e-12)),
    "GELU 2048x1536": ([(R, I)], lambda t, train: F.gelu(t[0])),
}
print(json.dumps({"torch": torch.__version__}), flush=True)
for line in sys.stdin:
    req = json.loads(line)
    shapes, f = ops[req["op"]]
    train = req["train"]
    xs = [torch.randn(*s, requires_grad=train) for s in shapes]
    with torch.set_grad_enabled(train):
        out = f(xs, train)
        w = torch.randn_like(out)
        best = 1e9
        for _ in range(req["reps"] + 1):
            for x in xs:
                x.grad = None
            t0 = time.perf_counter()
            out = f(xs, train)
            if train:
                (out * w).sum().backward()
            else:
                out.sum().item()
            best = min(best, time.perf_counter() - t0)
    print(json.dumps(best), flush=True)
"#;

fn time_train(f: &TrainFn, op: &Op, reps: usize) -> f64 {
    let device = Default::default();
    let inputs: Vec<Tensor<AD, 1>> = op
        .shapes
        .iter()
        .map(|s| Tensor::random([s.iter().product::<usize>()], Distribution::Normal(0.0, 1.0), &device))
        .collect();
    let n = f(&inputs, None).dims()[0];
    let w = Tensor::<AD, 1>::random([n], Distribution::Normal(0.0, 1.0), &device);
    let mut best = f64::MAX;
    for _ in 0..=reps {
        let leaves: Vec<Tensor<AD, 1>> = inputs.iter().map(|t| t.clone().detach().require_grad()).collect();
        let mask = op.has_dropout.then(|| DropoutMask::new(P, 42));
        let t = Instant::now();
        let out = f(&leaves, mask);
        let _grads = (out * w.clone()).sum().backward();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

fn time_eval(f: &EvalFn, op: &Op, reps: usize) -> f64 {
    let device = Default::default();
    let inputs: Vec<Tensor<Flex, 1>> = op
        .shapes
        .iter()
        .map(|s| Tensor::random([s.iter().product::<usize>()], Distribution::Normal(0.0, 1.0), &device))
        .collect();
    let mut best = f64::MAX;
    for _ in 0..=reps {
        let t = Instant::now();
        let sum: f32 = f(&inputs).sum().into_scalar();
        best = best.min(t.elapsed().as_secs_f64());
        assert!(sum.is_finite());
    }
    best
}

fn main() {
    let threads = threads();
    init_threads(threads);
    let reps = env_usize("BENCH_REPS", 5).max(1);
    let args = serde_json::json!({
        "threads": threads, "batch": BATCH, "seq": SEQ, "hidden": HIDDEN, "heads": HEADS, "inter": INTER, "p": P,
    });
    let mut torch = match Python::start(TORCH_SCRIPT, &args) {
        Ok(p) => Some(p),
        Err(why) => {
            eprintln!("PyTorch skipped: {why}");
            None
        }
    };
    let torch_version = torch.as_ref().map(|t| t.hello["torch"].as_str().unwrap_or("?").to_string());
    println!(
        "Ops at all-MiniLM-L6-v2 training shapes, {threads} threads, {}, best of {reps}; load average {}",
        machine(),
        load_average()
    );
    println!();
    println!("| op | pass | fused ms | reference ms | fused vs reference | PyTorch ms | fused vs PyTorch |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for op in all_ops() {
        for train in [false, true] {
            let (fused, reference) = if train {
                (time_train(&op.fused, &op, reps), time_train(&op.reference, &op, reps))
            } else {
                (time_eval(&op.fused_eval, &op, reps), time_eval(&op.reference_eval, &op, reps))
            };
            let torch_ms = torch.as_mut().map(|t| {
                t.ask(&serde_json::json!({"op": op.name, "train": train, "reps": reps}))
                    .as_f64()
                    .unwrap_or(f64::NAN)
            });
            let pass = if train { "fwd+bwd" } else { "fwd" };
            println!(
                "| {} | {pass} | {:.2} | {:.2} | {:.2}× | {} | {} |",
                op.name,
                fused * 1e3,
                reference * 1e3,
                reference / fused,
                torch_ms.map_or("-".to_string(), |t| format!("{:.2}", t * 1e3)),
                torch_ms.map_or("-".to_string(), |t| format!("{:.2}×", t / fused)),
            );
        }
    }
    println!(
        "\n(× = speed relative to the fused op; above 1 means the fused op is faster.) {}; load average at end {}",
        torch_version.map_or("PyTorch skipped".to_string(), |v| format!("PyTorch {v}")),
        load_average()
    );
}
