#!/usr/bin/env python3
"""PyTorch's side of `bertlab bench numerics`: the same weights, the same batches, f32 against
`torch.autocast(float16)` + `GradScaler` (and bf16 autocast), as the anchor for what mixed
precision should give.

`bertlab bench numerics --export-dir DIR` writes what this script reads: `DIR/init` (the random
initial model as a transformers snapshot) and, with `--inspect-at N`, `DIR/step-N` (the f32 run's
weights before step N). The batches are the first `batch × batches` rows of the ids file,
padded to `max_len`, cycled through, exactly as the bench packs them; dropout is off.

    python3 scripts/torch_numerics.py --export-dir DIR --ids-file imdb-ids.json \
        [--steps 200 --batch 16 --max-len 128 --batches 32 --lr 5e-5] \
        [--precision f32,f16,bf16] [--inspect-at N] [--out torch-numerics.jsonl]

Prints JSON lines: one per precision with its loss curve, a summary with each half precision's
smoothed gap to f32 (10-step moving averages, the bench's measure), and with `--inspect-at`, one
line per parameter comparing the f16 gradient (scaled by 65536 through autocast, unscaled in f32
as GradScaler does) with the f32 gradient at the same weights: relative L2 error and the share of
elements that are zero in f16 but not in f32 (underflow). Needs torch and transformers only.
"""

import argparse
import json
import math
import os
import sys


# Where the models and batches live: "cpu" or "cuda" (`--device`).
DEVICE = "cpu"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def smooth(xs, window=10):
    out = []
    for i in range(len(xs)):
        lo = max(0, i + 1 - window)
        out.append(sum(xs[lo : i + 1]) / (i + 1 - lo))
    return out


def pack(ids, rows, max_len, torch):
    """input_ids, attention_mask, labels of rows padded to max_len (head truncation, as bertlab)."""
    input_ids = torch.full((len(rows), max_len), ids["pad_id"], dtype=torch.long)
    mask = torch.zeros((len(rows), max_len), dtype=torch.long)
    for i, r in enumerate(rows):
        row = ids["ids"][r]
        if len(row) > max_len:
            row = row[: max_len - 1] + [ids["sep_id"]]
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    labels = torch.tensor([ids["labels"][r] for r in rows], dtype=torch.long)
    return input_ids.to(DEVICE), mask.to(DEVICE), labels.to(DEVICE)


def load(path, torch, transformers):
    cfg = transformers.AutoConfig.from_pretrained(path)
    # Dropout off, as in the bench: curves then differ by rounding alone.
    for key in ("dropout", "attention_dropout", "seq_classif_dropout", "hidden_dropout_prob",
                "attention_probs_dropout_prob", "classifier_dropout"):
        if hasattr(cfg, key):
            setattr(cfg, key, 0.0)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        path, config=cfg, torch_dtype=torch.float32, attn_implementation="eager"
    )
    model.train()
    return model.to(DEVICE)


def make_optimizer(model, lr, torch):
    """HF Trainer's AdamW: ε 1e-8, weight decay 0.01 except biases and LayerNorm weights."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        exempt = p.ndim == 1 or name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name
        (no_decay if exempt else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, eps=1e-8,
    )


def gemm_mode(torch):
    """A dispatch mode that runs f16 matrix products as f32 GEMMs on the (already f16) operands,
    rounding the product to f16: a GPU's f16 GEMM (f32 accumulation, f16 output).

    PyTorch's own f16 GEMM on a CPU without AVX512-FP16 is ~100x slower than f32 (12 s for one
    2048 x 768 x 3072 product here), too slow for DistilBERT-base; everything else (autocast's
    casts, f16 elementwise ops, GradScaler) is PyTorch's own. `--native-f16-gemm` turns it off.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    aten = torch.ops.aten
    products = {aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default}

    class F16Gemm(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in products and any(isinstance(a, torch.Tensor) and a.dtype == torch.float16 for a in args):
                wide = [a.float() if isinstance(a, torch.Tensor) and a.dtype == torch.float16 else a for a in args]
                return func(*wide, **kwargs).to(torch.float16)
            return func(*args, **kwargs)

    return F16Gemm()


def loss_of(model, batch, dtype, torch, native_gemm=False):
    x, m, y = batch
    if dtype is None:
        return model(input_ids=x, attention_mask=m, labels=y).loss
    with torch.autocast(device_type=DEVICE, dtype=dtype):
        if dtype == torch.float16 and not native_gemm:
            with gemm_mode(torch):
                return model(input_ids=x, attention_mask=m, labels=y).loss
        return model(input_ids=x, attention_mask=m, labels=y).loss


def backward(loss, dtype, torch, native_gemm=False):
    """`loss.backward()`; the f16 backward's GEMMs as the forward's."""
    if dtype == torch.float16 and not native_gemm:
        with gemm_mode(torch):
            loss.backward()
    else:
        loss.backward()


def curve(path, batches, precision, args, torch, transformers):
    model = load(path, torch, transformers)
    opt = make_optimizer(model, args.lr, torch)
    dtype = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": None}[precision]
    scaler = (torch.amp.GradScaler(DEVICE, init_scale=args.init_scale, growth_interval=2000)
              if precision == "f16" else None)
    losses, skipped = [], []
    for step in range(args.steps):
        loss = loss_of(model, batches[step % len(batches)], dtype, torch, args.native_f16_gemm)
        losses.append(float(loss.item()))
        if scaler is not None:
            before = scaler.get_scale()
            backward(scaler.scale(loss), dtype, torch, args.native_f16_gemm)
            scaler.step(opt)
            scaler.update()
            if scaler.get_scale() < before:
                skipped.append(step)
        else:
            backward(loss, dtype, torch, args.native_f16_gemm)
            opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 10 == 9:
            log(f"torch_numerics: {precision} step {step + 1}/{args.steps}, loss {losses[-1]:.4f}")
    return losses, skipped, (scaler.get_scale() if scaler else 1.0)


def inspect(path, batch, step, torch, transformers, emit, native_gemm):
    """Per-parameter f16 (scaled, unscaled in f32) vs f32 gradients at the same weights."""
    grads = {}
    for precision in ("f32", "f16"):
        model = load(path, torch, transformers)
        dtype = torch.float16 if precision == "f16" else None
        scale = 65536.0 if precision == "f16" else 1.0
        backward(loss_of(model, batch, dtype, torch, native_gemm) * scale, dtype, torch, native_gemm)
        grads[precision] = {n: (p.grad.detach().double() / scale) for n, p in model.named_parameters() if p.grad is not None}
    for name, g32 in grads["f32"].items():
        g16 = grads["f16"][name]
        norm = float(g32.norm())
        rel = float((g16 - g32).norm()) / norm if norm > 0 else 0.0
        nonzero = g32 != 0
        lost = int(((g16 == 0) & nonzero).sum())
        emit({
            "bench": "numerics-inspect", "side": "torch", "step": step, "precision": "f16",
            "param": name, "grad_norm_f32": norm, "rel_l2": rel,
            "underflow_frac": lost / max(1, int(nonzero.sum())),
        })


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--export-dir", required=True, help="what `bench numerics --export-dir` wrote")
    ap.add_argument("--ids-file", required=True)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--batches", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--precision", default="f32,f16,bf16")
    ap.add_argument("--inspect-at", type=int, default=None, help="compare gradients at this step's weights")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--init-scale", type=float, default=65536.0,
                    help="GradScaler's initial loss scale (PyTorch's and bertlab's default 65536; a "
                    "lower one shows what a skipped first-steps update does to the curve)")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (autocast and GradScaler there; "
                    "f16 GEMMs are the GPU's own, so the CPU's f32-accumulate emulation is off)")
    ap.add_argument("--native-f16-gemm", action="store_true",
                    help="PyTorch's own CPU f16 GEMM (very slow without AVX512-FP16) instead of f32 GEMMs on f16 operands")
    ap.add_argument("--out", default=None, help="also append the JSON lines here")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE != "cpu":
        args.native_f16_gemm = True
    try:
        import torch
        import transformers
    except ImportError as e:
        log(f"torch_numerics: skipped: {e}")
        return 0
    transformers.logging.set_verbosity_error()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    out = open(args.out, "a") if args.out else None

    def emit(record):
        line = json.dumps(record)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    with open(args.ids_file) as f:
        ids = json.load(f)
    batches = [pack(ids, list(range(b * args.batch, (b + 1) * args.batch)), args.max_len, torch)
               for b in range(args.batches)]
    init = os.path.join(args.export_dir, "init")
    if args.inspect_at is not None:
        at = os.path.join(args.export_dir, f"step-{args.inspect_at}")
        inspect(at, batches[args.inspect_at % len(batches)], args.inspect_at, torch, transformers, emit,
                args.native_f16_gemm)
    precisions = [p for p in args.precision.split(",") if p]
    if args.steps == 0:
        return 0
    curves = {}
    for precision in precisions:
        losses, skipped, scale = curve(init, batches, precision, args, torch, transformers)
        curves[precision] = losses
        tail = losses[-10:]
        emit({
            "bench": "numerics", "side": "torch", "torch": torch.__version__, "precision": precision,
            "device": DEVICE, "export_dir": os.path.abspath(args.export_dir),
            "f16_gemm": "native" if args.native_f16_gemm else "f32-accumulate",
            "steps": args.steps, "batch": args.batch, "max_len": args.max_len, "lr": args.lr,
            "first_loss": losses[0], "last10_mean_loss": sum(tail) / len(tail),
            "skipped_steps": skipped, "init_loss_scale": args.init_scale if precision == "f16" else 1.0,
            "final_loss_scale": scale,
            "losses": [round(x, 6) for x in losses],
        })
    if "f32" in curves:
        ref = smooth(curves["f32"])
        gaps = {}
        for name, losses in curves.items():
            if name == "f32":
                continue
            s = smooth(losses)
            gap = max((abs(a - b) if math.isfinite(a - b) else math.inf) for a, b in zip(s, ref))
            half = len(losses) // 2
            gaps[name] = {
                "smoothed_max_gap": round(gap, 6),
                "mean_loss_second_half": round(sum(losses[half:]) / max(1, len(losses) - half), 6),
            }
        emit({"bench": "numerics-summary", "side": "torch", "export_dir": os.path.abspath(args.export_dir),
              "reference": "f32", "steps": args.steps,
              "f32_mean_loss_second_half": round(sum(curves["f32"][len(curves["f32"]) // 2:]) / max(1, len(curves["f32"]) - len(curves["f32"]) // 2), 6),
              "precisions": gaps})
    return 0


if __name__ == "__main__":
    sys.exit(main())
