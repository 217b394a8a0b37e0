"""Generate imdb-golden.json: 50 IMDB reviews with the ids python `transformers` gives them.

Run from anywhere: `python3 crates/tokenize/tests/data/make_imdb_golden.py` (needs transformers,
tokenizers, pyarrow, numpy and ../shared, or BERTLAB_SHARED). Read by tests/hf_parity.rs.
"""
import json, os, random, pyarrow.parquet as pq, numpy as np
from transformers import AutoTokenizer
import tokenizers
here = os.path.dirname(os.path.abspath(__file__))
shared = os.environ.get("BERTLAB_SHARED", os.path.join(here, "../../../../../shared"))
rows = []
for split in ["train", "test"]:
    t = pq.read_table(f"{shared}/data/hf-imdb/plain_text/{split}-00000-of-00001.parquet").column("text").to_pylist()
    rows += [(split, i, x) for i, x in enumerate(t)]
tok = AutoTokenizer.from_pretrained(f"{shared}/models/all-MiniLM-L6-v2")
raw = tokenizers.Tokenizer.from_file(f"{shared}/models/all-MiniLM-L6-v2/tokenizer.json")
raw.no_truncation(); raw.no_padding()
lens = np.array([len(e.ids) for e in raw.encode_batch([r[2] for r in rows])])
print("mean", lens.mean(), "median", np.median(lens), "p90", np.percentile(lens, 90), "p99", np.percentile(lens, 99),
      "over", [(lens > n).mean() for n in (128, 256, 512)], "max", lens.max())
tok_left = AutoTokenizer.from_pretrained(f"{shared}/models/all-MiniLM-L6-v2", truncation_side="left")
def tail(text, n):
    return tok_left(text, truncation=True, max_length=n)["input_ids"]
rng = random.Random(20240603)
idx = list(range(len(rows)))
pick = []
def take(cands, n):
    cands = [i for i in cands if i not in pick]
    pick.extend(rng.sample(cands, n))
take([i for i in idx if not rows[i][2].isascii()], 12)
take([i for i in idx if any(ord(c) < 32 and c not in "\t\n\r" or 0x7f <= ord(c) <= 0x9f for c in rows[i][2])], 4)
take([i for i in idx if "[" in rows[i][2]], 4)
take([i for i in idx if 512 < lens[i] < 1500], 12)
pick.append(int(np.argmax(lens)))
take([i for i in idx if 128 < lens[i] <= 512], 8)
take([i for i in idx if lens[i] <= 128], 9)
out = {"model": "all-MiniLM-L6-v2",
       "generator": "python transformers %s AutoTokenizer(text, truncation=True, max_length=N); ids_tail_* with truncation_side=left" % __import__("transformers").__version__,
       "reviews": []}
for i in pick:
    split, row, text = rows[i]
    out["reviews"].append({"split": split, "row": row, "text": text, "untruncated_len": int(lens[i]),
        "ids_128": tok(text, truncation=True, max_length=128)["input_ids"],
        "ids_512": tok(text, truncation=True, max_length=512)["input_ids"],
        "ids_tail_128": tail(text, 128), "ids_tail_512": tail(text, 512)})
s = json.dumps(out, ensure_ascii=False, separators=(",", ":"))
open(os.path.join(here, "imdb-golden.json"), "w").write(s)
print(len(out["reviews"]), len(s))
