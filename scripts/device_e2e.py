#!/usr/bin/env python3
"""End-to-end stage of scripts/device-check.sh: the real `bertlab` commands on a model made here.

1. snapshot: a randomly initialised DistilBertForSequenceClassification built by transformers
   (GPU mode: `DistilBertConfig()` defaults = distilbert-base-uncased's sizes; CPU mode: 2 layers
   of width 64), saved with `save_pretrained` (safetensors) next to the carried tokenizer files.
   Its head starts with a planted bias of +0.5/-0.5 logits towards `neg` (see "loss must fall").
2. `bertlab eval --split train` of the snapshot (the loss before), then per precision (f16,
   bf16): `bertlab train` for 1 epoch, `bertlab eval --split train` of its `best/` (the loss
   after), `bertlab predict` on a few texts, and transformers' AutoModelForSequenceClassification
   on `best/` with the same texts: its logits must match bertlab's.
3. (GPU mode) an absurd batch must hit CUDA out-of-memory and exit with code 3.

Loss must fall: a random network's loss on balanced data is ln 2 plus what its head's constant
offset costs, and one epoch on ~500 reviews teaches a random network little sentiment, so the
training loss alone would fall by noise only. The planted offset costs ~0.12 nats
(0.5 softplus(-1) + 0.5 softplus(1) - ln 2), which any working optimizer removes within a few
steps; so the train-split loss (dropout off, same rows, same precision) must fall by at least
--min-fall (0.05). A backward pass with wrong or missing gradients, updates that never land,
or f16 steps all skipped for overflow leave it where it was (or NaN), and fail.

Prints one JSON line per step ({"bench": "e2e", "step": ..., "ok": ...}, flushed as it goes, so
a timeout keeps what was done) and a final {"bench": "e2e-summary", "pass": ...}; exits 1 when
a check fails, 0 (with a printed reason) when torch or transformers is missing.

    python3 scripts/device_e2e.py --bin BERTLAB --sample DIR --tokenizer DIR --work DIR \
        [--mode gpu|cpu] [--max-seconds 150]
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time

TEXTS = [
    "A wonderful film, moving and funny from the first scene to the last.",
    "Two hours I will never get back. The plot made no sense and the acting was wooden.",
    "It was fine.",
    "not bad at all",
]
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Run:
    """The options, the clock of --max-seconds and the failures so far."""

    def __init__(self, args):
        self.args = args
        self.started = time.monotonic()
        self.failures = 0

    def left(self):
        return self.args.max_seconds - (time.monotonic() - self.started)

    def emit(self, step, ok, **fields):
        line = {"bench": "e2e", "step": step, "ok": ok, **fields}
        print(json.dumps(line), flush=True)
        if ok is False:
            self.failures += 1
            log(f"e2e: {step}: FAILED {fields.get('error', '')}")
        return ok

    def bertlab(self, step, args, cap, **fields):
        """Run BERTLAB ARGS (at most CAP seconds and what is left); (exit code, stdout, seconds)."""
        limit = min(cap, self.left() - 2)
        if limit < 5:
            self.emit(step, None, skipped="time budget used up", **fields)
            return None, "", 0.0
        log(f"$ bertlab {' '.join(args)}")
        t0 = time.monotonic()
        try:
            # stderr (progress lines, errors) goes straight to the log.
            # (in the caller's folder, where device-check.sh keeps cubecl.toml: the kernel cache)
            p = subprocess.run([self.args.bin, *args], stdout=subprocess.PIPE, text=True, timeout=limit)
            code, out = p.returncode, p.stdout
        except subprocess.TimeoutExpired as e:
            code, out = "timeout", e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        seconds = round(time.monotonic() - t0, 1)
        if args[0] == "train" and out.strip():
            log(out.rstrip())  # its one-line summary (eval and predict print JSON, emitted as steps)
        return code, out, seconds


def make_snapshot(run, torch, transformers, out, arch="distilbert"):
    """A random DistilBERT (or, with arch="bert", BERT) classifier in the HF layout, with the
    carried tokenizer files: the base sizes on a GPU, 2 layers of width 64 on the CPU."""
    vocab = os.path.join(run.args.tokenizer, "vocab.txt")
    with open(vocab, encoding="utf-8") as f:
        vocab_size = sum(1 for _ in f)
    labels = {"num_labels": 2, "id2label": {0: "neg", 1: "pos"}, "label2id": {"neg": 0, "pos": 1}}
    small = run.args.mode != "gpu"
    if arch == "bert":
        sizes = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
                 "num_attention_heads": 4} if small else {}
        config = transformers.BertConfig(vocab_size=vocab_size, **labels, **sizes)
        make, layers, dim = transformers.BertForSequenceClassification, "num_hidden_layers", "hidden_size"
    else:
        sizes = {"n_layers": 2, "dim": 64, "hidden_dim": 128, "n_heads": 4} if small else {}
        config = transformers.DistilBertConfig(vocab_size=vocab_size, **labels, **sizes)
        make, layers, dim = transformers.DistilBertForSequenceClassification, "n_layers", "dim"
    torch.manual_seed(run.args.seed)
    model = make(config)
    with torch.no_grad():
        model.classifier.bias.copy_(torch.tensor([0.5, -0.5]))
    model.save_pretrained(out, safe_serialization=True)
    for name in TOKENIZER_FILES:
        src = os.path.join(run.args.tokenizer, name)
        if os.path.exists(src):
            shutil.copy(src, out)
    params = sum(p.numel() for p in model.parameters())
    return {"params": params, "layers": getattr(config, layers), "dim": getattr(config, dim),
            "vocab_size": vocab_size}


def eval_json(run, step, model, split, precision, cap, extra=()):
    args = ["eval", "--model", model, "--source", run.args.sample, "--split", split, "--precision", precision,
            "--json", *extra]
    code, out, seconds = run.bertlab(step, args, cap, precision=precision)
    if code is None:
        return None
    if code != 0:
        run.emit(step, False, precision=precision, error=f"exit {code}", seconds=seconds)
        return None
    metrics = json.loads(out)
    run.emit(step, True, precision=precision, seconds=seconds, split=split, n=metrics["n"],
             loss=metrics["loss"], accuracy=metrics["accuracy"])
    return metrics


def split_args(a):
    return ["--subset", str(a.subset), "--seed", str(a.seed), "--max-len", str(a.max_len)]


def transformers_logits(run, torch, transformers, best):
    device = "cuda" if run.args.mode == "gpu" and torch.cuda.is_available() else "cpu"
    model = transformers.AutoModelForSequenceClassification.from_pretrained(best).to(device).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(best)
    batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=run.args.max_len, return_tensors="pt")
    with torch.no_grad():
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()
    return logits.tolist()


def one_precision(run, torch, transformers, snapshot, before, precision):
    a = run.args
    out = os.path.join(a.work, f"run-{precision}")
    train_args = ["train", "--model", snapshot, "--source", a.sample, *split_args(a), "--epochs", "1",
                  "--batch", str(a.batch), "--lr", str(a.lr), "--optimizer", "adamw", "--precision", precision,
                  "--out", out, "--cache-dir", os.path.join(a.work, "token-cache")]
    code, _, seconds = run.bertlab("train", train_args, a.train_cap, precision=precision)
    if code is None:
        return
    record_path = os.path.join(out, "record.json")
    if code != 0 or not os.path.exists(record_path):
        run.emit("train", False, precision=precision, error=f"exit {code}", seconds=seconds)
        return
    with open(record_path) as f:
        record = json.load(f)
    epoch = record["epochs"][0]
    test = record["test"]
    finite = all(math.isfinite(x) for x in (epoch["train_loss"], epoch["val_loss"], test["loss"]))
    run.emit("train", finite, precision=precision, seconds=seconds, train=record["data"]["train"],
             steps=epoch["steps"], skipped_steps=epoch["skipped_steps"], loss_scale=epoch["loss_scale"],
             train_loss=epoch["train_loss"], val_loss=epoch["val_loss"], test_loss=test["loss"],
             test_accuracy=test["accuracy"], train_seq_per_s=round(epoch["train_seq_per_s"], 1),
             **({} if finite else {"error": "a loss is not finite"}))

    # `bertlab eval` of the exported best/ on the rows it trained on (the record gives eval the
    # run's subset, seed and max_len), against the snapshot's loss on the same rows.
    best = os.path.join(out, "best")
    after = eval_json(run, "eval", best, "train", precision, a.eval_cap)
    if before is not None and after is not None:
        fall = before["loss"] - after["loss"]
        ok = fall >= a.min_fall  # False on NaN
        run.emit("loss falls", ok, precision=precision, before=before["loss"], after=after["loss"],
                 fall=round(fall, 5), min_fall=a.min_fall,
                 **({} if ok else {"error": f"train-split loss fell by {fall:.4f} < {a.min_fall}"}))

    code, out_text, seconds = run.bertlab("predict", ["predict", "--model", best, "--max-len", str(a.max_len),
                                                      "--json", *TEXTS], a.eval_cap, precision=precision)
    if code is None:
        return
    if code != 0:
        run.emit("predict", False, precision=precision, error=f"exit {code}", seconds=seconds)
        return
    ours = [json.loads(line)["logits"] for line in out_text.splitlines() if line.strip()]
    run.emit("predict", len(ours) == len(TEXTS), precision=precision, seconds=seconds, logits=ours)
    if run.left() < 10:
        run.emit("transformers logits", None, precision=precision, skipped="time budget used up")
        return
    t0 = time.monotonic()
    try:
        theirs = transformers_logits(run, torch, transformers, best)
    except Exception as e:  # a best/ that transformers cannot load is a failure of this check
        run.emit("transformers logits", False, precision=precision, error=f"{type(e).__name__}: {e}")
        return
    gap = max(abs(x - y) for r1, r2 in zip(ours, theirs) for x, y in zip(r1, r2))
    ok = gap <= a.logit_tolerance  # False on NaN
    run.emit("transformers logits", ok, precision=precision, max_abs=gap, tolerance=a.logit_tolerance,
             seconds=round(time.monotonic() - t0, 1), transformers=theirs,
             **({} if ok else {"error": f"logits differ by {gap:.3e}"}))


def out_of_memory(run):
    """An absurd batch: the whole sample's training split as one batch at max_len 512."""
    a = run.args
    args = ["train", "--model", os.path.join(a.work, "snapshot"), "--source", a.sample, "--subset", "1",
            "--max-len", "512", "--padding", "fixed", "--batch", "65536", "--epochs", "1", "--precision", "bf16",
            "--out", os.path.join(a.work, "oom"), "--cache-dir", os.path.join(a.work, "token-cache"), "--quiet"]
    code, _, seconds = run.bertlab("out of memory", args, 90)
    if code is None:
        return
    run.emit("out of memory", code == 3, exit_code=code, seconds=seconds,
             **({} if code == 3 else {"error": f"expected exit 3 (CUDA out of memory), got {code}"}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True, help="the bertlab binary")
    ap.add_argument("--sample", required=True, help="IMDB sample in the Hub layout (`bertlab data sample`)")
    ap.add_argument("--tokenizer", required=True, help="folder with vocab.txt and tokenizer.json (bert-base-uncased)")
    ap.add_argument("--work", required=True, help="scratch folder")
    ap.add_argument("--mode", choices=["gpu", "cpu"], default="gpu")
    ap.add_argument("--precision", default="f16,bf16")
    ap.add_argument("--subset", type=float, default=0.375, help="of the sample (0.375 of 1999 rows: 524 to train)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-len", type=int, default=None, help="default 256 (GPU) or 128 (CPU)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=None,
                    help="AdamW learning rate; default 1e-4 (GPU) or 1e-3 (CPU: the narrow model moves its logits less per step)")
    ap.add_argument("--min-fall", type=float, default=0.05, help="nats the train-split loss must fall by")
    ap.add_argument("--logit-tolerance", type=float, default=None,
                    help="bertlab vs transformers logits; default 5e-3 (GPU: f32 matmuls may run as TF32) or 1e-4")
    ap.add_argument("--train-cap", type=float, default=90, help="seconds for one training run at most")
    ap.add_argument("--eval-cap", type=float, default=60, help="seconds for one eval or predict at most")
    ap.add_argument("--max-seconds", type=float, default=150, help="stop starting steps after this")
    ap.add_argument("--no-oom", action="store_true", help="skip the out-of-memory run")
    args = ap.parse_args()
    args.max_len = args.max_len or (256 if args.mode == "gpu" else 128)
    args.lr = args.lr or (1e-4 if args.mode == "gpu" else 1e-3)
    if args.logit_tolerance is None:
        args.logit_tolerance = 5e-3 if args.mode == "gpu" else 1e-4
    try:
        import torch
        import transformers
    except ImportError as e:
        log(f"e2e: skipped: {e} (this stage needs torch and transformers)")
        print(json.dumps({"bench": "e2e-summary", "pass": None, "skipped": str(e)}), flush=True)
        return 0
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    os.makedirs(args.work, exist_ok=True)
    args.work = os.path.abspath(args.work)
    args.bin, args.sample = os.path.abspath(args.bin), os.path.abspath(args.sample)
    run = Run(args)

    snapshot = os.path.join(args.work, "snapshot")
    t0 = time.monotonic()
    try:
        info = make_snapshot(run, torch, transformers, snapshot)
        run.emit("snapshot", True, seconds=round(time.monotonic() - t0, 1), transformers=transformers.__version__,
                 torch=torch.__version__, **info)
    except Exception as e:
        run.emit("snapshot", False, error=f"{type(e).__name__}: {e}")
    if run.failures == 0:
        # The loss before training, once, in f32 (its gap to f16/bf16, ~1e-3, is far below --min-fall;
        # and predict's f32 kernels are then compiled already).
        before = eval_json(run, "loss before", snapshot, "train", "f32", args.eval_cap, split_args(args))
        for precision in [p for p in args.precision.split(",") if p]:
            one_precision(run, torch, transformers, snapshot, before, precision)
        if args.mode == "gpu" and not args.no_oom:
            out_of_memory(run)
        elif not args.no_oom:
            run.emit("out of memory", None, skipped="CPU mode: no device memory to exhaust (host memory is shared)")
    summary = {"bench": "e2e-summary", "pass": run.failures == 0, "failures": run.failures,
               "seconds": round(time.monotonic() - run.started, 1), "mode": args.mode}
    print(json.dumps(summary), flush=True)
    return 0 if run.failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
