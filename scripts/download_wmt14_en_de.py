#!/usr/bin/env python3
"""Download WMT14 English-German for configs/wmt14_en_de.yaml (users with internet; ~1.5 GB of archives).

Writes, in --out (default data/wmt14_en_de):
    train.en, train.de                 Europarl v7 + Common Crawl + News Commentary v9 (4.5M pairs, raw text)
    newstest2013.en, newstest2013.de   validation
    newstest2014.en, newstest2014.de   test (the "full" newstest2014, 3,003 sentences, as sacreBLEU's wmt14/full)

The training archives come from statmt.org; the dev and test sets through sacreBLEU, which
downloads and caches them itself (~/.sacrebleu). Then:
    TRANSFORMER_MT_DATA=data transformer-mt prepare --config configs/wmt14_en_de.yaml --output-dir runs/wmt14_en_de
Tests never call this script.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

# archive URL -> the English files inside it (the German file has the same name ending in "de")
TRAINING_ARCHIVES = {
    "https://www.statmt.org/wmt13/training-parallel-europarl-v7.tgz": "europarl-v7.de-en.en",
    "https://www.statmt.org/wmt13/training-parallel-commoncrawl.tgz": "commoncrawl.de-en.en",
    "https://www.statmt.org/wmt14/training-parallel-nc-v9.tgz": "news-commentary-v9.de-en.en",
}
# our file prefix -> sacreBLEU test set
EVALUATION_SETS = {"newstest2013": "wmt13", "newstest2014": "wmt14/full"}


def download(url: str, target: Path) -> None:
    if target.exists():
        print(f"{target} exists, not downloaded again")
        return
    print(f"downloading {url}")
    part = target.with_suffix(target.suffix + ".part")
    with urllib.request.urlopen(url, timeout=120) as response, open(part, "wb") as handle:
        while block := response.read(1 << 20):
            handle.write(block)
    part.replace(target)


def member_named(archive: tarfile.TarFile, name: str) -> tarfile.TarInfo:
    for member in archive.getmembers():
        if member.isfile() and Path(member.name).name == name:
            return member
    raise SystemExit(f"error: {archive.name} holds no file named {name}; the archive may have changed")


def append_training_pairs(archive_path: Path, english_name: str, out_en, out_de) -> int:
    """Append one corpus's pairs to train.en/train.de; returns the pair count (the sides must match)."""
    german_name = english_name[:-2] + "de"
    with tarfile.open(archive_path) as archive:
        english = archive.extractfile(member_named(archive, english_name)).read().decode("utf-8", "replace")
        german = archive.extractfile(member_named(archive, german_name)).read().decode("utf-8", "replace")
    # Split at "\n" only, as transformer-mt reads files (str.splitlines would also split at U+2028 ...).
    english_lines, german_lines = english.rstrip("\n").split("\n"), german.rstrip("\n").split("\n")
    if len(english_lines) != len(german_lines):
        raise SystemExit(f"error: {english_name} has {len(english_lines)} lines but {german_name} has "
                         f"{len(german_lines)}")
    for en, de in zip(english_lines, german_lines):
        out_en.write(en.replace("\r", "") + "\n")
        out_de.write(de.replace("\r", "") + "\n")
    return len(english_lines)


def write_evaluation_set(prefix: str, test_set: str, out: Path) -> None:
    for lang, field in (("en", "src"), ("de", "ref")):
        text = subprocess.run([sys.executable, "-m", "sacrebleu", "-t", test_set, "-l", "en-de", "--echo", field],
                              check=True, capture_output=True, text=True).stdout
        (out / f"{prefix}.{lang}").write_text(text, encoding="utf-8")
        print(f"wrote {out / f'{prefix}.{lang}'} ({text.count(chr(10))} lines)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/wmt14_en_de", help="output folder (default: data/wmt14_en_de)")
    parser.add_argument("--archives", default=None, help="where to keep the downloaded archives (default: OUT/archives)")
    args = parser.parse_args()
    out = Path(args.out)
    archives = Path(args.archives) if args.archives else out / "archives"
    archives.mkdir(parents=True, exist_ok=True)
    try:
        for url in TRAINING_ARCHIVES:
            download(url, archives / url.rsplit("/", 1)[1])
        total = 0
        with open(out / "train.en.part", "w", encoding="utf-8") as out_en, \
                open(out / "train.de.part", "w", encoding="utf-8") as out_de:
            for url, english_name in TRAINING_ARCHIVES.items():
                pairs = append_training_pairs(archives / url.rsplit("/", 1)[1], english_name, out_en, out_de)
                print(f"{english_name[:-3]}: {pairs:,} pairs")
                total += pairs
        for lang in ("en", "de"):
            (out / f"train.{lang}.part").replace(out / f"train.{lang}")
        print(f"wrote {out / 'train.en'} and {out / 'train.de'} ({total:,} pairs)")
        for prefix, test_set in EVALUATION_SETS.items():
            write_evaluation_set(prefix, test_set, out)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
