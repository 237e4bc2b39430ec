"""BPE benchmark: training time on 1 MB of text (vocab 512 and 1024) and encode/decode throughput.

    python bench/bpe.py [TEXT_FILE] [--bytes 1000000] [--vocab 512 1024] [--out bench/results]

TEXT_FILE defaults to the corpus shipped with TinyTorch (`tinytorch.data.kjv_text()`); pass e.g.
../shared/data/tinyshakespeare.txt to compare. The first --bytes bytes are used (cut at a character
boundary). Target: training on 1 MB in <= 30 s on the course machine (2 cores).
Writes JSON to bench/results/bpe-<text>-<host>-<date>.json.
"""

import argparse
import datetime as dt
import json
import os
import platform
import socket
import sys
import time
from pathlib import Path

from machine import new_result_path  # bench/machine.py
from tinytorch.data import BPETokenizer, CharTokenizer, kjv_text

TARGET_TRAIN_SECONDS = 30.0


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("text_file", nargs="?", help="UTF-8 text (.txt); default: the shipped KJV corpus")
    p.add_argument("--bytes", type=int, default=1_000_000, help="use the first N bytes of the text")
    p.add_argument("--vocab", type=int, nargs="+", default=[512, 1024], help="vocabulary sizes to train")
    p.add_argument("--repeat", type=int, default=3, help="encode/decode rounds; the best is reported")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--no-json", action="store_true")
    return p.parse_args()


def load_text(path, n_bytes):
    text = Path(path).read_text(encoding="utf-8") if path else kjv_text()
    return text.encode("utf-8")[:n_bytes].decode("utf-8", errors="ignore")  # never half a character


def best_of(repeat, fn):
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main():
    args = parse_args()
    text = load_text(args.text_file, args.bytes)
    n_bytes = len(text.encode("utf-8"))
    source = args.text_file or "tinytorch.data.kjv_text()"
    print(f"text: {source}, {n_bytes:,} bytes, {len(text):,} characters")
    rows = []
    for vocab_size in args.vocab:
        start = time.perf_counter()
        tok = BPETokenizer().train(text, vocab_size)
        train_s = time.perf_counter() - start
        cold_s, ids = best_of(1, lambda tok=tok: tok.encode(text))  # first call fills the word cache
        warm_s, ids = best_of(args.repeat, lambda tok=tok: tok.encode(text))
        decode_s, back = best_of(args.repeat, lambda tok=tok, ids=ids: tok.decode(ids))
        assert back == text, "BPE round trip failed"
        row = {
            "tokenizer": "bpe", "vocab_size": tok.vocab_size, "train_s": round(train_s, 3),
            "train_target_s": TARGET_TRAIN_SECONDS, "train_pass": train_s <= TARGET_TRAIN_SECONDS,
            "tokens": len(ids), "bytes_per_token": round(n_bytes / len(ids), 3),
            "encode_cold_tokens_per_s": round(len(ids) / cold_s), "encode_warm_tokens_per_s": round(len(ids) / warm_s),
            "encode_cold_MB_per_s": round(n_bytes / cold_s / 1e6, 3), "decode_tokens_per_s": round(len(ids) / decode_s),
        }
        rows.append(row)
        verdict = "PASS" if row["train_pass"] else "FAIL"
        print(f"bpe  vocab {tok.vocab_size:5d}: train {train_s:6.2f} s ({verdict}, target <= {TARGET_TRAIN_SECONDS:.0f} s), "
              f"{len(ids):,} tokens ({row['bytes_per_token']:.2f} bytes/token), encode {len(ids) / cold_s / 1e6:.2f} M tok/s "
              f"cold, {len(ids) / warm_s / 1e6:.2f} M tok/s warm, decode {len(ids) / decode_s / 1e6:.2f} M tok/s")

    chars = CharTokenizer(text)
    encode_s, ids = best_of(args.repeat, lambda: chars.encode(text))
    rows.append({"tokenizer": "char", "vocab_size": chars.vocab_size, "tokens": len(ids),
                 "bytes_per_token": round(n_bytes / len(ids), 3), "encode_warm_tokens_per_s": round(len(ids) / encode_s)})
    print(f"char vocab {chars.vocab_size:5d}: {len(ids):,} tokens, encode {len(ids) / encode_s / 1e6:.2f} M tok/s")

    if not args.no_json:
        host = socket.gethostname().split(".")[0] or "host"
        info = {
            "host": host, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "date": dt.datetime.now().isoformat(timespec="seconds"),
            "text": source if args.text_file is None else Path(args.text_file).name, "bytes": n_bytes,
            "loadavg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        }
        stem = Path(args.text_file).stem if args.text_file else "kjv"
        path = new_result_path(args.out, f"bpe-{stem}-{host}-{dt.date.today().isoformat()}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"machine": info, "rows": rows}, indent=2) + "\n")
        print(f"wrote {path}")
    return 0 if all(r.get("train_pass", True) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
