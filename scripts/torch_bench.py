#!/usr/bin/env python3
"""PyTorch baseline for `bertlab bench train-throughput`: the same batches, the same models.

Replays the batch plans that `bertlab bench train-throughput --plan-out PLAN` wrote (the same
rows of the same tokenized IMDB sample, padded to the same lengths, the same untimed warm-up
steps) with Hugging Face transformers' `AutoModelForSequenceClassification` built from a config
(random initialisation, no download), in training mode (dropout on), with AdamW (lr 5e-5,
eps 1e-8, weight decay 0.01 except biases and LayerNorm weights, as HF's Trainer). f16 runs
under `torch.autocast` with a `GradScaler`, bf16 under `torch.autocast` alone, f32 plainly.

Prints one JSON line per measurement with the fields `bertlab bench table` joins on (model,
max_len, batch, padding, precision) and reads (seq_per_s, seconds, padded_tokens,
attn_sq_tokens, layers, hidden, matmul_params).

    python3 scripts/torch_bench.py --plan plan.jsonl --ids-file imdb-ids.json \
        --arch distilbert,bert --precision f16,bf16 [--device cuda] [--out torch.jsonl]

Needs torch and transformers; nothing else (no network).
"""

import argparse
import json
import os
import sys
import time


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def build_config(arch, transformers):
    """(name, config) of a bench model: the base architectures, or a config.json path."""
    if arch in ("distilbert", "distilbert-base"):
        # distilbert-base-uncased's sizes.
        cfg = transformers.DistilBertConfig(
            vocab_size=30522, dim=768, n_layers=6, n_heads=12, hidden_dim=3072,
            max_position_embeddings=512, activation="gelu", dropout=0.1,
            attention_dropout=0.1, seq_classif_dropout=0.2, pad_token_id=0,
        )
        return "distilbert-base", cfg
    if arch in ("bert", "bert-base"):
        # bert-base-uncased's sizes.
        cfg = transformers.BertConfig(
            vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2,
            hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
            layer_norm_eps=1e-12, pad_token_id=0,
        )
        return "bert-base", cfg
    path = arch if os.path.isdir(arch) else os.path.dirname(os.path.abspath(arch))
    cfg = transformers.AutoConfig.from_pretrained(path)
    return os.path.basename(os.path.normpath(path)), cfg


def sizes(cfg):
    """(layers, hidden) under either family's key names."""
    layers = getattr(cfg, "num_hidden_layers", None) or cfg.n_layers
    hidden = getattr(cfg, "hidden_size", None) or cfg.dim
    return layers, hidden


def matmul_params(model, torch):
    """Weights of every nn.Linear: the N of 6N FLOPs per token (embeddings do no matmul)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def make_optimizer(model, torch):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if (name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name) else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=5e-5, eps=1e-8,
    )


def pack(ids, batch, max_len, torch):
    """input_ids, attention_mask, labels of a plan batch (head truncation, as bertlab)."""
    rows, length = batch["rows"], batch["len"]
    input_ids = torch.full((len(rows), length), ids["pad_id"], dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, r in enumerate(rows):
        row = ids["ids"][r]
        if len(row) > max_len:
            row = row[: max_len - 1] + [ids["sep_id"]]
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    labels = torch.tensor([ids["labels"][r] for r in rows], dtype=torch.long)
    return input_ids, mask, labels


def run_one(name, cfg, plan, ids, precision, device, torch, transformers):
    torch.manual_seed(plan["seed"])
    cfg.num_labels = 2
    model = transformers.AutoModelForSequenceClassification.from_config(cfg).to(device)
    model.train()
    opt = make_optimizer(model, torch)
    dtype = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": None}[precision]
    scaler = torch.amp.GradScaler(device.type) if precision == "f16" else None
    # Host tensors are built once (bertlab packs every step, but on the host too, cheaply);
    # each step copies its batch to the device, as a data loader would.
    batches = [pack(ids, b, plan["max_len"], torch) for b in plan["batches"]]
    if device.type == "cuda":
        batches = [tuple(t.pin_memory() for t in b) for b in batches]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    untimed = plan["untimed"]
    last_loss = float("nan")
    skipped = 0
    start = time.perf_counter()
    untimed_seconds = 0.0
    for i, (x, m, y) in enumerate(batches):
        if i == untimed:
            sync()
            untimed_seconds = time.perf_counter() - start
            start = time.perf_counter()
        x, m, y = (t.to(device, non_blocking=True) for t in (x, m, y))
        if dtype is None:
            loss = model(input_ids=x, attention_mask=m, labels=y).loss
        else:
            with torch.autocast(device_type=device.type, dtype=dtype):
                loss = model(input_ids=x, attention_mask=m, labels=y).loss
        if scaler is not None:
            scale_before = scaler.get_scale()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if i >= untimed and scaler.get_scale() < scale_before:
                skipped += 1
        else:
            loss.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)
        if i == len(batches) - 1:
            last_loss = loss.item()
    sync()
    seconds = time.perf_counter() - start
    timed = plan["batches"][untimed:]
    lengths = [min(len(r), plan["max_len"]) for r in ids["ids"]]
    rows = sum(len(b["rows"]) for b in timed)
    real_tokens = sum(lengths[r] for b in timed for r in b["rows"])
    padded_tokens = sum(len(b["rows"]) * b["len"] for b in timed)
    attn_sq_tokens = sum(len(b["rows"]) * b["len"] * b["len"] for b in timed)
    layers, hidden = sizes(cfg)
    n = matmul_params(model, torch)
    flops = 6 * n * padded_tokens + 12 * layers * hidden * attn_sq_tokens
    record = {
        "bench": "train-throughput", "backend": f"torch {torch.__version__} ({device.type})",
        "model": name, "arch": cfg.model_type, "max_len": plan["max_len"], "batch": plan["batch"],
        "padding": plan["padding"], "precision": precision, "steps": len(timed),
        "untimed_steps": untimed, "seconds": round(seconds, 4),
        "untimed_seconds": round(untimed_seconds, 3),
        "step_ms": round(1e3 * seconds / len(timed), 3), "seq_per_s": round(rows / seconds, 3),
        "tokens_per_s": round(real_tokens / seconds, 1),
        "padded_tokens_per_s": round(padded_tokens / seconds, 1),
        "real_tokens": real_tokens, "padded_tokens": padded_tokens,
        "attn_sq_tokens": attn_sq_tokens, "layers": layers, "hidden": hidden,
        "matmul_params": n, "train_flops": float(flops), "train_tflops": round(flops / seconds / 1e12, 3),
        "skipped_steps": skipped, "last_loss": round(last_loss, 5),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
    }
    del model, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return record


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plan", required=True, help="JSON lines of `bertlab bench train-throughput --plan-out`")
    ap.add_argument("--ids-file", required=True, help="the tokenized sample (`bertlab bench make-ids`)")
    ap.add_argument("--arch", default="distilbert", help="distilbert, bert or config.json paths, comma-separated")
    ap.add_argument("--precision", default="f16,bf16", help="f32, f16, bf16, comma-separated")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = ap.parse_args()

    try:
        import torch
        import transformers
    except ImportError as e:
        log(f"torch_bench: skipped: {e}")
        return 0
    transformers.logging.set_verbosity_error()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with open(args.ids_file) as f:
        ids = json.load(f)
    with open(args.plan) as f:
        plans = [json.loads(line) for line in f if line.strip()]
    out = open(args.out, "a") if args.out else None
    failures = 0
    for arch in [a for a in args.arch.split(",") if a]:
        name, cfg = build_config(arch, transformers)
        for precision in [p for p in args.precision.split(",") if p]:
            for plan in plans:
                key = f"{name} {plan['max_len']}x{plan['batch']} {plan['padding']} {precision}"
                try:
                    record = run_one(name, cfg, plan, ids, precision, device, torch, transformers)
                except Exception as e:  # one failed shape (e.g. out of memory) must not end the run
                    failures += 1
                    msg = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
                    record = {
                        "bench": "train-throughput", "backend": f"torch {torch.__version__}",
                        "model": name, "max_len": plan["max_len"], "batch": plan["batch"],
                        "padding": plan["padding"], "precision": precision, "error": msg,
                        "out_of_memory": "out of memory" in msg.lower(),
                    }
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                line = json.dumps(record, sort_keys=True)
                print(line, flush=True)
                if out:
                    out.write(line + "\n")
                    out.flush()
                log(f"torch {key}: " + (f"{record['seq_per_s']:.1f} seq/s" if "seq_per_s" in record else record["error"]))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
