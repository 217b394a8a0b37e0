#!/usr/bin/env python3
"""PyTorch baseline for `cargo bench -p bertlab --bench finetune` and the device check's first-run
stage (scripts/device_first_run.py): the plain Hugging Face loop.

Fine-tunes a BERT-family checkpoint on the rows `--data` holds (JSON Lines of
{"split": "train"|"val"|"test", "text", "label"}, written by the bench from bertlab's split, so
both sides see the same rows): the checkpoint's fast tokenizer, truncation to --max-len, batches
padded to their longest row, `AutoModelForSequenceClassification` with a fresh head, AdamW
(--lr, eps 1e-8, weight decay 0.01 except biases and LayerNorm weights, as HF's Trainer),
shuffled batches of --batch, --epochs epochs each followed by a validation pass, then a test
pass at --eval-batch — what a PyTorch notebook does, eager, on --threads CPU threads or on the
GPU (--device cuda), in --precision f32, or bf16 / f16 under torch.autocast (f16 with a
GradScaler: the notebook's mixed_float16).

Prints one JSON line: seconds of each phase (load, tokenize, train, val, test, total) and the
test accuracy.

    python3 scripts/torch_finetune.py --model DIR --data rows.jsonl --max-len 128 --batch 16 \
        --eval-batch 64 --epochs 1 --lr 5e-5 --seed 11 --threads 2 [--device cuda --precision bf16]

(`bertlab data split --json --rows-out rows.jsonl` writes the rows of a run's splits.)

Needs torch and transformers; nothing else (no network).
"""

import argparse
import json
import random
import sys
import time

started = time.perf_counter()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--max-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--eval-batch", type=int, default=64)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--precision", default="f32", choices=["f32", "bf16", "f16"])
    args = p.parse_args()

    import torch
    import transformers

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = {"f32": None, "bf16": torch.bfloat16, "f16": torch.float16}[args.precision]
    scaler = torch.amp.GradScaler("cuda") if args.precision == "f16" and args.device == "cuda" else None

    def autocast():
        if dtype is None:
            return torch.autocast(device.type, enabled=False)
        return torch.autocast(device.type, dtype=dtype)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    torch.manual_seed(args.seed)
    random.seed(args.seed)

    t = time.perf_counter()
    rows = {"train": [], "val": [], "test": []}
    with open(args.data, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            rows[row["split"]].append((row["text"], row["label"]))
    num_labels = 1 + max(label for split in rows.values() for _, label in split)
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.model)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=num_labels
    ).to(device)
    load_s = time.perf_counter() - t

    t = time.perf_counter()
    encoded = {
        name: (tokenizer([r[0] for r in split], truncation=True, max_length=args.max_len)["input_ids"],
               [r[1] for r in split])
        for name, split in rows.items()
    }
    tokenize_s = time.perf_counter() - t

    def batches(ids, labels, size, shuffle):
        order = list(range(len(ids)))
        if shuffle:
            random.shuffle(order)
        for start in range(0, len(order), size):
            picked = order[start:start + size]
            padded = tokenizer.pad({"input_ids": [ids[i] for i in picked]}, return_tensors="pt")
            yield (padded["input_ids"].to(device), padded["attention_mask"].to(device),
                   torch.tensor([labels[i] for i in picked], device=device))

    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
         "weight_decay": 0.01},
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)],
         "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=args.lr, eps=1e-8)

    def evaluate(name):
        model.eval()
        correct = 0
        with torch.no_grad():
            for ids, mask, labels in batches(*encoded[name], args.eval_batch, False):
                with autocast():
                    logits = model(input_ids=ids, attention_mask=mask).logits
                correct += int((logits.argmax(-1) == labels).sum())
        return correct / len(encoded[name][0])

    train_s = val_s = 0.0
    for _ in range(args.epochs):
        model.train()
        t = time.perf_counter()
        for ids, mask, labels in batches(*encoded["train"], args.batch, True):
            with autocast():
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            optimizer.zero_grad()
        sync()
        train_s += time.perf_counter() - t
        t = time.perf_counter()
        evaluate("val")
        val_s += time.perf_counter() - t

    t = time.perf_counter()
    accuracy = evaluate("test")
    test_s = time.perf_counter() - t
    print(json.dumps({
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "precision": args.precision,
        "train_rows": len(encoded["train"][0]),
        "load_seconds": load_s,
        "tokenize_seconds": tokenize_s,
        "train_seconds": train_s,
        "val_seconds": val_s,
        "test_seconds": test_s,
        "total_seconds": time.perf_counter() - started,
        "test_accuracy": accuracy,
    }), flush=True)


if __name__ == "__main__":
    sys.exit(main())
