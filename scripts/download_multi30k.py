#!/usr/bin/env python3
"""Download Multi30k (task 1: en, de, fr, cs) for users with internet access.

Writes data/multi30k/{train,val,test2016}.{en,de,fr,cs} (test2016.{fr,cs} included),
the layout configs/multi30k_*.yaml expect; then train with
    TRANSFORMER_MT_DATA=data transformer-mt train --config configs/multi30k_de_en.yaml
Tests never call this script.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import urllib.request
from pathlib import Path

BASE = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw"
SPLITS = {"train": "train", "val": "val", "test2016": "test_2016_flickr"}
LANGS = ("en", "de", "fr", "cs")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/multi30k", help="output folder (default: data/multi30k)")
    parser.add_argument("--langs", nargs="+", default=list(LANGS), choices=LANGS)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split, remote in SPLITS.items():
        for lang in args.langs:
            target = out / f"{split}.{lang}"
            if target.exists():
                print(f"{target} exists, skipped")
                continue
            url = f"{BASE}/{remote}.{lang}.gz"
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    text = gzip.decompress(response.read())
            except OSError as exc:
                print(f"error: could not download {url}: {exc}", file=sys.stderr)
                return 1
            tmp = target.with_suffix(target.suffix + ".part")
            tmp.write_bytes(text)
            tmp.replace(target)
            lines = text.count(b"\n")
            print(f"wrote {target} ({lines} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
