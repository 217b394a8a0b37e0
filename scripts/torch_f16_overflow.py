#!/usr/bin/env python3
"""Where PyTorch's autocast f16 overflows in the first steps of `bench numerics`' run: the
parameters whose (loss-scaled) f16 gradient is not finite, and the largest finite ones, step by
step, with GradScaler's scale before and after.

Issue 22: at the initial scale 65536 GradScaler skips step 1 on most DistilBERT-base
initialisations, because the classifier's weight gradient, an f16 GEMM under autocast, overflows;
bertlab keeps the classification head in f32 and applies that update. Reads what
`bertlab bench numerics --export-dir DIR` writes (`DIR/init`); needs torch and transformers.

    python3 scripts/torch_f16_overflow.py --export-dir DIR --ids-file imdb-ids.json [--steps 3]
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_numerics as tn  # noqa: E402  (the same loading, batches and f16 GEMMs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--export-dir", required=True)
    ap.add_argument("--ids-file", required=True)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--init-scale", type=float, default=65536.0)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    with open(args.ids_file) as f:
        ids = json.load(f)
    model = tn.load(os.path.join(args.export_dir, "init"), torch, transformers)
    opt = tn.make_optimizer(model, args.lr, torch)
    scaler = torch.amp.GradScaler("cpu", init_scale=args.init_scale, growth_interval=2000)
    for step in range(args.steps):
        batch = tn.pack(ids, list(range(step * args.batch, (step + 1) * args.batch)), args.max_len, torch)
        loss = tn.loss_of(model, batch, torch.float16, torch)
        scale = scaler.get_scale()
        tn.backward(scaler.scale(loss), torch.float16, torch)
        grads = [(n, p.grad) for n, p in model.named_parameters() if p.grad is not None]
        overflowed = [(n, int((~torch.isfinite(g)).sum())) for n, g in grads if not torch.isfinite(g).all()]
        largest = sorted(((float(g.abs().max()), n) for n, g in grads if torch.isfinite(g).all()), reverse=True)[:3]
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        print(json.dumps({
            "step": step, "loss": round(loss.item(), 6), "scale": scale, "scale_after": scaler.get_scale(),
            "skipped": scaler.get_scale() < scale,
            "non_finite_grads": [{"param": n, "elements": k} for n, k in overflowed],
            "largest_scaled_grads": [{"param": n, "max_abs": round(v, 1)} for v, n in largest],
        }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
