#!/usr/bin/env python3
"""Write the demo corpus: a rule-based synthetic language pair, deterministically.

Source ("src") is English-like: subject-verb-object, adjectives before nouns,
numbers, negation with "does not", past tense with "yesterday".
Target ("tgt") is an invented language with other rules, so a model must learn
reordering and agreement rather than word-by-word copying:
  * word order subject-object-verb, time word first, adjectives after nouns;
  * two noun classes with their own articles (lo / la) and adjective endings;
  * plural by a suffix on the noun and on its adjectives (agreement);
  * objects take an accusative particle "em";
  * the verb agrees with the subject's number and takes a past-tense suffix;
  * negation is a particle "ne" before the verb.

Usage: python scripts/make_demo_data.py [--out data/demo] [--train 20000] [--seed 7]
The same arguments always give the same files.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

# source noun -> (target stem, noun class 0/1); all target words are invented.
NOUNS = {
    "cat": ("miro", 0), "dog": ("vasko", 0), "bird": ("pelu", 1), "horse": ("taven", 0), "fish": ("solin", 1),
    "child": ("keru", 0), "woman": ("dami", 1), "man": ("orto", 0), "teacher": ("lumar", 1), "farmer": ("gondu", 0),
    "river": ("nalla", 1), "tree": ("boska", 1), "house": ("kasel", 0), "boat": ("vetra", 1), "apple": ("pomi", 1),
    "book": ("libor", 0), "song": ("kanta", 1), "letter": ("skribo", 0), "garden": ("hortu", 0), "stone": ("petra", 1),
    "doctor": ("medar", 0), "singer": ("kantor", 1), "baker": ("panor", 0), "king": ("regor", 0), "queen": ("regina", 1),
    "friend": ("amik", 0), "mountain": ("monta", 1), "cloud": ("nubo", 1), "door": ("porta", 1), "window": ("fenes", 0),
}
ADJECTIVES = {
    "big": "grand", "small": "pik", "red": "rub", "green": "verd", "old": "vek", "young": "jun", "happy": "fel",
    "quiet": "sil", "fast": "rap", "tired": "las", "bright": "klar", "dark": "obsk", "kind": "bon", "strange": "stran",
}
# source verb (3rd person singular, plural form, past) -> target stem
VERBS = {
    ("sees", "see", "saw"): "vid", ("likes", "like", "liked"): "am", ("finds", "find", "found"): "trov",
    ("helps", "help", "helped"): "help", ("follows", "follow", "followed"): "sekv", ("paints", "paint", "painted"): "pikt",
    ("watches", "watch", "watched"): "rigard", ("carries", "carry", "carried"): "port", ("calls", "call", "called"): "vok",
    ("visits", "visit", "visited"): "vizit", ("draws", "draw", "drew"): "desegn", ("hears", "hear", "heard"): "aud",
}
NUMBERS = {"two": "du", "three": "tri", "four": "kvar"}
ARTICLES = ("lo", "la")
ADJ_ENDING = ("o", "a")


def noun_phrase(rng: random.Random, plural: bool):
    noun = rng.choice(sorted(NOUNS))
    stem, noun_class = NOUNS[noun]
    adjectives = rng.sample(sorted(ADJECTIVES), k=rng.choice((0, 0, 1, 1, 2)))
    number = rng.choice(sorted(NUMBERS)) if plural else None
    noun_src = noun + ("ren" if noun == "child" and plural else "s" if plural else "")
    if plural and noun in ("man", "woman"):
        noun_src = noun[:-2] + "en"
    if plural and noun == "fish":
        noun_src = "fish"
    determiner = number if plural else rng.choice(("the", "a"))
    src = [determiner] + adjectives + [noun_src]
    suffix = "s" if plural else ""
    tgt = [ARTICLES[noun_class]]
    if plural:
        tgt.append(NUMBERS[number])
    tgt.append(stem + ("i" if plural else ""))
    tgt += [ADJECTIVES[a] + ADJ_ENDING[noun_class] + suffix for a in adjectives]
    if determiner == "a":
        tgt.insert(0, "un")
    return src, tgt


def sentence(rng: random.Random):
    subject_plural = rng.random() < 0.35
    object_plural = rng.random() < 0.35
    subject_src, subject_tgt = noun_phrase(rng, subject_plural)
    object_src, object_tgt = noun_phrase(rng, object_plural)
    forms = rng.choice(sorted(VERBS))
    stem = VERBS[forms]
    past = rng.random() < 0.3
    negated = rng.random() < 0.25
    if past:
        verb_src = (["did", "not", forms[1]] if negated else [forms[2]])
    elif negated:
        verb_src = ["do" if subject_plural else "does", "not", forms[1]]
    else:
        verb_src = [forms[1] if subject_plural else forms[0]]
    src = subject_src + verb_src + object_src + (["yesterday"] if past else []) + ["."]
    verb_tgt = stem + ("an" if subject_plural else "a") + ("ta" if past else "")
    tgt = (["iera"] if past else []) + subject_tgt + ["em"] + object_tgt + (["ne"] if negated else []) + [verb_tgt, "."]
    src[0] = src[0].capitalize()
    tgt[0] = tgt[0].capitalize()
    return " ".join(src)[:-2] + ".", " ".join(tgt)[:-2] + "."


def write_corpus(out_dir: Path, sizes: dict, seed: int) -> None:
    rng = random.Random(seed)
    seen = set()
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, size in sizes.items():
        pairs = []
        while len(pairs) < size:
            pair = sentence(rng)
            if pair[0] in seen:  # no sentence in two splits (or twice in one)
                continue
            seen.add(pair[0])
            pairs.append(pair)
        (out_dir / f"{split}.src").write_text("".join(p[0] + "\n" for p in pairs), encoding="utf-8")
        (out_dir / f"{split}.tgt").write_text("".join(p[1] + "\n" for p in pairs), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/demo", help="output folder (default: data/demo)")
    parser.add_argument("--train", type=int, default=20000, help="training pairs (default: 20000)")
    parser.add_argument("--valid", type=int, default=500, help="validation pairs (default: 500)")
    parser.add_argument("--test", type=int, default=500, help="test pairs (default: 500)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default: 7)")
    args = parser.parse_args()
    write_corpus(Path(args.out), {"train": args.train, "valid": args.valid, "test": args.test}, args.seed)
    print(f"wrote {args.train}/{args.valid}/{args.test} pairs to {args.out}")


if __name__ == "__main__":
    main()
