#!/usr/bin/env python3
"""Pipeline stage of scripts/device-check.sh (opt-in: DEVICE_CHECK_EXTRA=pipeline; issue 23): a
user's `cargo xtask all` on a cold machine, its wall time beside the plan's estimate.

1. snapshots: randomly initialised DistilBERT and BERT classifiers made by transformers (GPU
   mode: the base sizes; CPU mode: 2 layers of width 64), as scripts/device_e2e.py makes them,
   with the carried tokenizer files; the Hub is out of reach.
2. the plan: `xtask PIPELINE --dry-run` with the models, the carried IMDB sample as the source,
   the subset (a fraction of the sample), the epochs and the precision: its "To run" line, the
   runs and the time it estimates.
3. the pipeline itself, as a user runs it: `xtask PIPELINE` with the same options and the given
   bertlab binary, from empty kernel and autotune caches (an empty home; no cubecl.toml),
   timed from outside until it ends or the stage's time runs out.

Prints one JSON line: {"bench": "pipeline", "wall_s", "estimate_s", "wall_vs_estimate",
"runs_planned", "runs_trained", "warmups", "warmup_seconds", ...} with the commit measured
(--commit); a pipeline cut by the time limit is reported with what it finished (ok false).
Exits 1 when the pipeline fails, 0 with a printed reason when torch or transformers is missing.

    python3 scripts/device_pipeline.py --xtask XTASK --bin BERTLAB --sample DIR --tokenizer DIR \
        --work DIR [--mode gpu|cpu] [--pipeline all] [--subset 0.25] [--epochs N] [--precision bf16]
"""

import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from device_first_run import clock, import_torch, log, stage_options, timed  # noqa: E402


def seconds_of(text):
    """`1h 02m`, `10m 01s`, `45s` (bertlab_run::format::format_duration) as seconds."""
    total, found = 0, False
    for number, unit in re.findall(r"(\d+)\s*([hms])", text):
        total += int(number) * {"h": 3600, "m": 60, "s": 1}[unit]
        found = True
    return total if found else None


def plan_line(text):
    """The dry run's `To run: N runs · … ≈ [up to ]DURATION at …` as (runs, seconds, line)."""
    for line in text.splitlines():
        m = re.match(r"To run: (\d+) runs? .*≈ (?:up to )?(.+?) at ", line)
        if m:
            return int(m.group(1)), seconds_of(m.group(2)), line.strip()
    return None, None, None


def records(out):
    """The completed runs' records under the results folder `out`, each once (a run that xtask
    reused from an identical one holds a copy of that run's record, which names its folder)."""
    found = {}
    for folder, dirs, files in os.walk(out):
        dirs[:] = sorted(d for d in dirs if d != "best")
        if "record.json" in files:
            with open(os.path.join(folder, "record.json"), encoding="utf-8") as f:
                record = json.load(f)
            if record.get("status") == "completed":
                found.setdefault(record["spec"]["out"], record)
    return list(found.values())


def main():
    ap = stage_options(__doc__, subset=0.25)
    ap.add_argument("--xtask", required=True)
    ap.add_argument("--pipeline", default="all")
    ap.add_argument("--epochs", type=int, default=None)
    args = ap.parse_args()
    left = clock(args.max_seconds)
    imported = import_torch("pipeline")
    if imported is None:
        return 0
    torch, transformers = imported
    import device_e2e

    os.makedirs(args.work, exist_ok=True)
    run = device_e2e.Run(args)
    models = {}
    for arch in ("distilbert", "bert"):
        snapshot = os.path.join(args.work, f"snapshot-{arch}")
        sizes = device_e2e.make_snapshot(run, torch, transformers, snapshot, arch=arch)
        models[arch] = (snapshot, sizes)

    out = os.path.join(args.work, "results")
    options = [
        args.pipeline, "--backend", "cuda" if args.mode == "gpu" else "cpu", "--bertlab", args.bin,
        "--source", args.sample, "--subset", str(args.subset), "--precision", args.precision, "--out", out,
        *[flag for arch, (snapshot, _) in models.items() for flag in ("--model", f"{arch}={snapshot}")],
        *(["--epochs", str(args.epochs)] if args.epochs else []),
    ]
    # A user's setting: no cubecl.toml where bertlab runs (xtask starts it in the repository
    # root), the default caches in an empty home: the pipeline compiles every kernel it needs.
    home = os.path.join(args.work, "home")
    os.makedirs(home, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BERTLAB_KERNEL_CACHE", "BERTLAB_AUTOTUNE"))}
    env.update(HOME=home, XDG_CACHE_HOME=os.path.join(home, ".cache"))
    code, plan, _ = timed([args.xtask, *options, "--dry-run"], cwd=ROOT, env=env, timeout=left())
    runs_planned, estimate_s, estimate_line = plan_line(plan)
    if code != 0 or runs_planned is None:
        log(f"pipeline: the dry run failed ({code}):\n{plan}")
        return 1
    log(f"pipeline: plan: {estimate_line}")

    code, _, wall_s = timed([args.xtask, *options], cwd=ROOT, env=env, timeout=left())
    done = records(out)
    warmed = [r["timings"] for r in done if r["timings"].get("warmup_shapes")]
    ok = code == 0
    print(json.dumps({
        "bench": "pipeline", "ok": ok, "exit": code, "mode": args.mode, "commit": args.commit,
        "pipeline": args.pipeline, "subset": args.subset, "epochs": args.epochs, "precision": args.precision,
        "models": {arch: f"random {arch} ({s['layers']} layers × {s['dim']})" for arch, (_, s) in models.items()},
        "runs_planned": runs_planned, "runs_trained": len(done),
        "wall_s": wall_s, "estimate_s": estimate_s,
        "wall_vs_estimate": round(wall_s / estimate_s, 2) if ok and estimate_s else None,
        "plan": estimate_line,
        "warmups": len(warmed), "warmup_seconds": round(sum(t.get("warmup_seconds") or 0 for t in warmed), 1),
        "fit_seconds": round(sum(r["timings"]["fit_seconds"] for r in done), 1),
    }), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
