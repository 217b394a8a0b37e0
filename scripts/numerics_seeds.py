#!/usr/bin/env python3
"""Issue 22's comparison over several initialisations: how far each half precision's loss curve
moves from f32's, in bertlab and in PyTorch on the same weights and batches.

Reads the JSON lines of `bertlab bench numerics --seed N --control --export-dir DIR/...seed-N`
(one run per seed) and of `scripts/torch_numerics.py --export-dir DIR/...seed-N` (its lines name
the export dir, whose `seed-N` pairs them), and prints a markdown table: per seed and curve, the
smoothed max gap to the same side's f32 curve (10-step means, the bench's measure) and the mean
signed gap over the second half of the steps (negative: the curve is below f32's, learning
faster), then the mean over seeds. `f32-rows-reversed` is bertlab's control (f32 with each
batch's rows reversed: rounding alone), `f32 bertlab-torch` the two f32 curves' gap.

A PyTorch f16 cell names the steps GradScaler skipped (an overflow at the initial scale: the
update of that batch is never applied, which moves the whole curve). `f16 bertlab-torch` is the
gap between the two f16 curves, against PyTorch's f16 run that skipped no step: the default
one, or one of `torch_numerics.py --init-scale S` (a lower initial scale) where it skipped.

    python3 scripts/numerics_seeds.py BERTLAB.jsonl TORCH.jsonl
"""

import json
import math
import re
import sys


def smooth(xs, window=10):
    return [sum(xs[max(0, i + 1 - window): i + 1]) / (i + 1 - max(0, i + 1 - window)) for i in range(len(xs))]


def gaps(curve, reference):
    a, b = smooth(curve), smooth(reference)
    n = min(len(a), len(b))
    if n == 0:
        return math.nan, math.nan
    diffs = [x - y for x, y in zip(a[:n], b[:n])]
    if not all(math.isfinite(d) for d in diffs):
        return math.inf, math.nan
    half = diffs[n // 2:]
    return max(abs(d) for d in diffs), sum(half) / len(half)


def read(path, side):
    """{seed: {precision: losses}} and {seed: {precision: skipped steps}} from one side's JSON
    lines; a PyTorch f16 run at another initial loss scale is the precision `f16 scale S`."""
    out, skips = {}, {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            d = json.loads(line)
            if d.get("bench") != "numerics" or "losses" not in d:
                continue
            precision = d["precision"]
            if side == "torch":
                m = re.search(r"seed-(\d+)", d.get("export_dir", ""))
                if not m:
                    continue
                seed = int(m.group(1))
                scale = d.get("init_loss_scale", 65536.0)
                if precision == "f16" and scale != 65536.0:
                    precision = f"f16 scale {scale:g}"
            else:
                seed = d.get("seed")
            out.setdefault(seed, {})[precision] = d["losses"]
            skips.setdefault(seed, {})[precision] = d.get("skipped_steps", [])
    return out, skips


def unskipped_f16(curves, skipped):
    """PyTorch's f16 curve that skipped no step: the default run's, else a lower scale's."""
    lower = sorted((n for n in curves if n.startswith("f16 scale ")), key=lambda n: -float(n.split()[-1]))
    names = ["f16"] + lower
    return next((n for n in names if n in curves and not skipped.get(n)), None)


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    (bertlab, _), (torch, torch_skipped) = read(sys.argv[1], "bertlab"), read(sys.argv[2], "torch")
    columns = [("bertlab", "f16"), ("torch", "f16"), ("bertlab", "bf16"), ("torch", "bf16"),
               ("bertlab", "f32-rows-reversed")]
    header = [f"{side} {p}" for side, p in columns] + ["f32 bertlab-torch", "f16 bertlab-torch"]
    print("| seed | " + " | ".join(header) + " |")
    print("|---:|" + "---:|" * len(header))
    sums = [[] for _ in header]
    for seed in sorted(s for s in bertlab if s is not None):
        cells = []
        for i, (side, precision) in enumerate(columns):
            curves = bertlab[seed] if side == "bertlab" else torch.get(seed, {})
            if precision in curves and "f32" in curves:
                g, signed = gaps(curves[precision], curves["f32"])
                sums[i].append((g, signed))
                skipped = torch_skipped.get(seed, {}).get(precision) if side == "torch" else None
                note = f", skipped step {', '.join(map(str, skipped))}" if skipped else ""
                cells.append(f"{g:.3g} ({signed:+.2g}{note})")
            else:
                cells.append("–")
        if "f32" in torch.get(seed, {}) and "f32" in bertlab[seed]:
            g, signed = gaps(torch[seed]["f32"], bertlab[seed]["f32"])
            sums[-2].append((g, signed))
            cells.append(f"{g:.2e}")
        else:
            cells.append("–")
        other = unskipped_f16(torch.get(seed, {}), torch_skipped.get(seed, {}))
        if other and "f16" in bertlab[seed]:
            g, signed = gaps(bertlab[seed]["f16"], torch[seed][other])
            sums[-1].append((g, signed))
            cells.append(f"{g:.3g} ({signed:+.2g})" + (f" vs {other}" if other != "f16" else ""))
        else:
            cells.append("–")
        print(f"| {seed} | " + " | ".join(cells) + " |")
    means = []
    for col in sums:
        if col:
            g = sum(x for x, _ in col) / len(col)
            s = sum(y for _, y in col) / len(col)
            means.append(f"**{g:.3g}** ({s:+.2g})")
        else:
            means.append("–")
    print("| mean | " + " | ".join(means) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
