#!/usr/bin/env python3
"""First-run stage of scripts/device-check.sh (issue 23): what a user's first fine-tuning costs,
bertlab against PyTorch's whole process, on the same rows.

1. snapshot: a randomly initialised DistilBERT classifier made by transformers (GPU mode:
   distilbert-base-uncased's sizes; CPU mode: 2 layers of width 64), as scripts/device_e2e.py
   makes it, with the carried tokenizer files.
2. rows: `bertlab data split --json --rows-out` writes the rows of the run's splits (--source
   SAMPLE --subset F --seed S), which PyTorch then trains on: the same train, validation and
   test rows as `bertlab train`.
3. PyTorch's whole process, timed from outside (import, tokenize, one epoch under autocast,
   validation, test): scripts/torch_finetune.py.
4. `bertlab train` of the same epoch (then its validation and test), twice, as a user runs it:
   from its working folder with the default caches in an empty home (cold: every kernel
   compiled), then again with the caches the first run left (warm).

Prints one JSON line: {"bench": "first-run", "bertlab_cold_s", "bertlab_warm_s", "torch_s",
"cold_vs_torch", "warm_vs_torch", ...} with the commit measured (--commit), and exits 1 when a
run fails; 0 with a printed reason when torch or transformers is missing.

    python3 scripts/device_first_run.py --bin BERTLAB --sample DIR --tokenizer DIR --work DIR \
        [--mode gpu|cpu] [--subset 1] [--batch 32] [--max-len 128] [--precision bf16]
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def timed(cmd, cwd=None, env=None, timeout=None):
    """Run CMD; (exit code, stdout, wall seconds). stderr goes to the log."""
    log("$ " + " ".join(cmd))
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, text=True, timeout=timeout)
        code, out = p.returncode, p.stdout
    except subprocess.TimeoutExpired:
        code, out = "timeout", ""
    return code, out, round(time.monotonic() - t0, 1)


def clock(max_seconds):
    """A function giving the seconds left of MAX_SECONDS from now (at least 5, for a last step)."""
    started = time.monotonic()
    return lambda: max(5.0, max_seconds - (time.monotonic() - started))


def import_torch(stage):
    """(torch, transformers), or None after saying that STAGE is skipped without them."""
    try:
        import torch
        import transformers
    except ImportError as e:
        log(f"{stage}: skipped ({e}: it needs python3 with torch and transformers)")
        return None
    return torch, transformers


def stage_options(doc, subset):
    """The options every snapshot-making stage script takes (this one and
    scripts/device_pipeline.py): the bertlab binary, the carried IMDB sample and tokenizer, a
    work folder, the mode, the data's subset and seed, the precision, the commit measured and
    the stage's time. The caller adds its own, then parses."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--sample", required=True, help="IMDB in the Hub layout (`bertlab data sample`)")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--mode", default="gpu", choices=["gpu", "cpu"])
    ap.add_argument("--subset", type=float, default=subset)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--commit", default=None)
    ap.add_argument("--max-seconds", type=float, default=600)
    return ap


def main():
    ap = stage_options(__doc__, subset=1.0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--lr", type=float, default=5e-5)
    args = ap.parse_args()
    left = clock(args.max_seconds)
    imported = import_torch("first-run")
    if imported is None:
        return 0
    torch, transformers = imported
    import device_e2e

    os.makedirs(args.work, exist_ok=True)
    # device_e2e's snapshot reads the tokenizer, the mode and the seed from its options.
    snapshot = os.path.join(args.work, "snapshot")
    sizes = device_e2e.make_snapshot(device_e2e.Run(args), torch, transformers, snapshot)

    rows = os.path.join(args.work, "rows.jsonl")
    data = ["--source", args.sample, "--subset", str(args.subset), "--seed", str(args.seed)]
    code, _, _ = timed([args.bin, "data", "split", *data, "--json", "--rows-out", rows], timeout=left())
    if code != 0:
        log(f"first-run: `bertlab data split` failed ({code})")
        return 1
    with open(rows, encoding="utf-8") as f:
        train_rows = sum(1 for line in f if json.loads(line)["split"] == "train")

    device = "cuda" if args.mode == "gpu" else "cpu"
    code, out, torch_s = timed(
        [sys.executable, os.path.join(HERE, "torch_finetune.py"), "--model", snapshot, "--data", rows,
         "--max-len", str(args.max_len), "--batch", str(args.batch), "--eval-batch", str(args.batch),
         "--epochs", "1", "--lr", str(args.lr), "--device", device, "--precision", args.precision,
         "--threads", str(os.cpu_count() or 1)],
        timeout=left(),
    )
    torch_line = json.loads(out.strip().splitlines()[-1]) if code == 0 and out.strip() else {}
    if code != 0:
        log(f"first-run: PyTorch failed ({code})")

    # A user's setting: no cubecl.toml in the working folder, the default caches under HOME.
    home = os.path.join(args.work, "home")
    cwd = os.path.join(args.work, "cwd")
    os.makedirs(home, exist_ok=True)
    os.makedirs(cwd, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BERTLAB_KERNEL_CACHE", "BERTLAB_AUTOTUNE"))}
    env.update(HOME=home, XDG_CACHE_HOME=os.path.join(home, ".cache"))
    runs = {}
    for label in ("cold", "warm"):
        code, out, seconds = timed(
            [args.bin, "train", "--model", snapshot, *data, "--epochs", "1", "--batch", str(args.batch),
             "--max-len", str(args.max_len), "--precision", args.precision, "--lr", str(args.lr),
             "--quiet", "--out", os.path.join(args.work, f"run-{label}")],
            cwd=cwd, env=env, timeout=left(),
        )
        record = os.path.join(args.work, f"run-{label}", "record.json")
        accuracy = None
        if code == 0 and os.path.exists(record):
            accuracy = json.load(open(record, encoding="utf-8"))["test"]["accuracy"]
        runs[label] = {"code": code, "seconds": seconds, "test_accuracy": accuracy}
        log(f"first-run: bertlab {label}: {seconds} s (exit {code})")

    ok = all(r["code"] == 0 for r in runs.values()) and bool(torch_line)

    def ratio(seconds):
        return round(seconds / torch_s, 3) if ok and torch_s > 0 else None

    print(json.dumps({
        "bench": "first-run", "ok": ok, "mode": args.mode, "commit": args.commit,
        "model": f"random DistilBERT ({sizes['layers']} layers × {sizes['dim']})",
        "train_rows": train_rows, "batch": args.batch, "max_len": args.max_len, "precision": args.precision,
        "bertlab_cold_s": runs["cold"]["seconds"], "bertlab_warm_s": runs["warm"]["seconds"],
        "torch_s": torch_s if torch_line else None,
        "cold_vs_torch": ratio(runs["cold"]["seconds"]), "warm_vs_torch": ratio(runs["warm"]["seconds"]),
        "bertlab_test_accuracy": runs["warm"]["test_accuracy"],
        "torch_test_accuracy": torch_line.get("test_accuracy"),
        "torch_phases": {k: torch_line.get(k) for k in ("load_seconds", "tokenize_seconds", "train_seconds",
                                                         "val_seconds", "test_seconds")},
    }), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
