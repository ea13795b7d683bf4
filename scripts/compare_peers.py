#!/usr/bin/env python3
"""Train and decode with transformer-mt, JoeyNMT, OpenNMT-py and CTranslate2 side by side.

One run on one machine, same data, same model size, same threads:

* one joint 8k SentencePiece BPE model trained on Multi30k train.de + train.en, used by every
  toolkit (OpenNMT-py and CTranslate2 read the pre-segmented text, JoeyNMT the model itself);
* Transformer 3+3 layers, d_model 256, 4 heads, FFN 1024, dropout 0.1 (attention and activation
  dropout 0.1 too, as the peers do), tied and shared embeddings, label smoothing 0.1, Adam
  (0.9, 0.98), the same inverse-square-root schedule for all (``--warmup`` updates up to a peak
  learning rate of ``--peak-lr``), ``--batch-tokens`` target tokens per batch, fp32, ``--threads``
  CPU threads;
* each toolkit trains for the same wall-clock budget (``--train-minutes``), then decodes
  Multi30k test2016 (1,000 sentences) greedy and with beam 5, 64 sentences per batch.

The budget is split into ``--rounds`` slots run round-robin (transformer-mt, JoeyNMT, OpenNMT-py,
transformer-mt, ...), each slot resuming from the previous slot's checkpoint: a shared VM's speed
drifts by tens of percent over minutes, and interleaving spreads that drift over all toolkits.
Training speed is each toolkit's own log of target tokens per second, averaged over all slots
with each slot's first log interval left out (start-up, warm-up). Decoding speed is measured the
same way for every toolkit: the wall-clock time of its command on the whole test set minus the
time of the same command on one sentence (start-up and model loading), so sentences/s =
999 / difference; the median of ``--decode-rounds`` round-robin passes (one for JoeyNMT, whose
pass takes minutes).
CTranslate2 decodes the OpenNMT-py model after ``ct2-opennmt-py-converter`` (fp32 and int8).
transformer-mt-bf16 trains and decodes transformer-mt once more with bfloat16 autocast, where the
CPU has native bf16 instructions (AVX-512 BF16 or AMX; skipped with a message elsewhere).

Peers are installed into throw-away virtual environments under ``--work`` (torch pinned to
2.13.0 so that pip does not pull CUDA packages), as described in ../shared/peers/README.md.

    python scripts/compare_peers.py --train-minutes 10 --json peers.json
    python scripts/compare_peers.py --toolkits transformer-mt,joeynmt --train-minutes 5

Prints one table (and writes JSON with --json) with each toolkit's numbers and the ratios of
transformer-mt to each peer. Needs package-registry access the first time (to install peers).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sacrebleu  # noqa: E402
import sentencepiece as spm  # noqa: E402
import yaml  # noqa: E402

from transformer_mt.config import TokenizerConfig  # noqa: E402
from transformer_mt.data.tokenizer import build_tokenizers  # noqa: E402
from transformer_mt.device import cpu_has_fast_bf16  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TOOLKITS = ("transformer-mt", "transformer-mt-bf16", "joeynmt", "opennmt-py", "ctranslate2")
SPLITS = ("train", "val", "test2016")
PEER_PACKAGES = {
    # JoeyNMT imports importlib_metadata without declaring it; sentencepiece 0.2 lacks SetVocabulary.
    "joey": [["joeynmt==2.3.0", "importlib_metadata", "sentencepiece==0.1.99"]],
    # OpenNMT-py 3.5.1 declares torch<2.3; it runs on 2.13, so install it without its pins.
    "onmt": [["--no-deps", "OpenNMT-py==3.5.1"],
             ["configargparse", "ctranslate2>=4,<5", "tensorboard", "pyyaml", "sacrebleu", "rapidfuzz", "six",
              "pyonmttok>=1.37,<2", "pyahocorasick", "flask", "waitress", "spacy", "fasttext-wheel",
              "sentencepiece"]],
}


# ---------------------------------------------------------------------------------------------
# set-up: virtual environments and data


def setup_venv(work: Path, name: str) -> Path:
    """Create work/venv-<name> with torch 2.13.0 and the peer's packages (once)."""
    venv = work / f"venv-{name}"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if marker.exists():
        return python
    constraints = work / "constraints.txt"
    constraints.write_text("torch==2.13.0\n")
    print(f"installing {name} into {venv} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + ["torch==2.13.0"], check=True)
    for packages in PEER_PACKAGES[name]:
        subprocess.run(pip + ["-c", str(constraints)] + packages, check=True)
    marker.touch()
    return python


def prepare_data(data: Path, work: Path, src: str, tgt: str) -> dict:
    """Joint SentencePiece model, segmented splits, and each peer's vocabulary file."""
    seg = work / "data"
    seg.mkdir(parents=True, exist_ok=True)
    spm_path = work / "spm.model"
    if not spm_path.exists():
        # transformer-mt's own tokenizer trainer: BPE, pad/unk/bos/eos = 0/1/2/3.
        cfg = TokenizerConfig(joint=True, model_type="bpe", vocab_size=8000, character_coverage=1.0)
        build_tokenizers(work, cfg, data / f"train.{src}", data / f"train.{tgt}")
    sp = spm.SentencePieceProcessor(model_file=str(spm_path))
    counts: collections.Counter = collections.Counter()
    for split in SPLITS:
        for lang in (src, tgt):
            lines = (data / f"{split}.{lang}").read_text(encoding="utf-8").splitlines()
            pieces = sp.encode(lines, out_type=str)
            (seg / f"{split}.{lang}.sp").write_text("".join(" ".join(p) + "\n" for p in pieces), encoding="utf-8")
            if split == "train":
                counts.update(piece for sentence in pieces for piece in sentence)
    specials = {"<pad>", "<unk>", "<s>", "</s>"}
    # JoeyNMT: the pieces of the SentencePiece vocabulary, one per line, without special symbols.
    joey_vocab = work / "joey.vocab"
    pieces = [line.split("\t")[0] for line in (work / "spm.vocab").read_text(encoding="utf-8").splitlines()]
    joey_vocab.write_text("".join(p + "\n" for p in pieces if p not in specials), encoding="utf-8")
    # OpenNMT-py: "piece<TAB>count" lines, most frequent first.
    onmt_vocab = work / "onmt.vocab"
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    onmt_vocab.write_text("".join(f"{p}\t{c}\n" for p, c in ranked), encoding="utf-8")
    return {"spm": spm_path, "sp": sp, "seg": seg, "joey_vocab": joey_vocab, "onmt_vocab": onmt_vocab}


# ---------------------------------------------------------------------------------------------
# running commands


def start_in_own_group(cmd: list[str], **popen_args) -> subprocess.Popen:
    """Start a toolkit's command as the leader of a new process group, so that it can be stopped whole.

    A script started in the background (nohup ... &) inherits SIGINT ignored, and so would the
    trainer: JoeyNMT then never sees its KeyboardInterrupt and saves nothing. Restore the default.
    """
    return subprocess.Popen(cmd, start_new_session=True, **popen_args,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def end_group(proc: subprocess.Popen) -> bool:
    """Kill what is left of ``proc``'s process group once its leader has ended; True if anything was.

    OpenNMT-py's data-loader processes outlive its main process (1.2 GB and some CPU each): left
    running, they would slow every later toolkit's slot and bias the comparison.
    """
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def run_for(cmd: list[str], minutes: float, log_path: Path, env: dict, stop_signal=signal.SIGINT) -> float:
    """Run a training command; after ``minutes`` send it ``stop_signal`` and wait. Returns seconds.

    Whatever the command started is stopped with it: no process of one toolkit outlives its slot.
    """
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = start_in_own_group(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            proc.wait(timeout=minutes * 60)
        except subprocess.TimeoutExpired:
            proc.send_signal(stop_signal)
            try:
                proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        finally:
            if end_group(proc):
                print(f"  stopped processes left behind by {Path(cmd[0]).name} (see {log_path})", flush=True)
    return time.perf_counter() - start


def timed(cmd: list[str], env: dict, stdin_path: Path | None = None, log_path: Path | None = None,
          stdout_path: Path | None = None, cwd: Path | None = None) -> float:
    """Seconds a command takes; stdout goes to ``stdout_path`` (or the log), stderr to the log."""
    start = time.perf_counter()
    with open(stdin_path or os.devnull, "rb") as stdin, open(log_path or os.devnull, "ab") as log, \
            open(stdout_path or os.devnull, "wb") as out:
        proc = start_in_own_group(cmd, stdin=stdin, stdout=out if stdout_path else log, stderr=log, env=env, cwd=cwd)
        try:
            proc.wait()
        finally:
            end_group(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}; see {log_path}")
    return time.perf_counter() - start


def bleu_of(hyp_path: Path, ref_path: Path) -> float:
    hyps = hyp_path.read_text(encoding="utf-8").splitlines()
    refs = ref_path.read_text(encoding="utf-8").splitlines()
    return sacrebleu.corpus_bleu(hyps, [refs]).score


def decode_speed(translate, work: Path, name: str, test_src: Path, test_ref: Path, sp, limit: int) -> dict:
    """Time ``translate(src_file, out_file, beam)`` on 1 sentence and on the test set.

    ``test_src`` is raw text or, for the toolkits that read it (``sp`` given), segmented text; the
    one-sentence file and the ``limit`` (--sentences) head keep its suffixes, hence its format.
    """
    one = _head(test_src, work, 1)
    if limit:  # the first ``limit`` test sentences only (quick checks of the script)
        test_src, test_ref = _head(test_src, work, limit), _head(test_ref, work, limit)
    num = len(test_src.read_text(encoding="utf-8").splitlines())
    results = {}
    for beam in (1, 5):
        out = work / f"{name}.beam{beam}.hyp"
        startup = translate(one, work / f"{name}.one.hyp", beam)
        total = translate(test_src, out, beam)
        if sp is not None:  # segmented output: join the pieces back into text
            lines = out.read_text(encoding="utf-8").splitlines()
            out.write_text("".join(sp.decode(line.split()) + "\n" for line in lines), encoding="utf-8")
        seconds = total - startup  # start-up varies by a second or so: use enough sentences
        # Output words per second too: an under-trained model that runs to the length limit decodes
        # many more words per sentence, so sentences/s alone compares unequal work.
        words = sum(len(line.split()) for line in out.read_text(encoding="utf-8").splitlines())
        results[f"beam{beam}"] = {"seconds": round(seconds, 2), "startup_seconds": round(startup, 2),
                                  "sents_per_s": round((num - 1) / seconds, 1) if seconds > 0 else None,
                                  "words_per_sent": round(words / max(num, 1), 1),
                                  "bleu": round(bleu_of(out, test_ref), 2)}
        print(f"  {name} beam {beam}: {results[f'beam{beam}']}", flush=True)
    return results


# ---------------------------------------------------------------------------------------------
# the toolkits
#
# Each toolkit is an object with the same four steps, so that main() can interleave them:
#   train_slot(minutes, slot)  train for one slot, resuming from the previous slot's checkpoint;
#   train_result()             training numbers over all slots;
#   decoders()                 (result key, name, translate function, test source, sp) to time;
#   decode_once                True where one decoding pass takes minutes (JoeyNMT).


def train_numbers(per_slot: list[list[float]], updates: int, seconds: float) -> dict:
    """Mean logged speed over all slots, each slot's first interval left out (start-up, warm-up)."""
    steady = [values[1:] if len(values) > 1 else values for values in per_slot]
    speeds = [speed for values in steady for speed in values]
    return {"train_tok_per_s": statistics.fmean(speeds) if speeds else None,
            "train_tok_per_s_by_slot": [round(statistics.fmean(values)) if values else None for values in steady],
            "updates": updates, "train_seconds": round(seconds, 1)}


class TransformerMT:
    """transformer-mt; ``precision`` bf16 autocasts training and decoding (CPUs with AVX-512 BF16/AMX)."""

    decode_once = False

    def __init__(self, args, work: Path, prep: dict, env: dict, precision: str = "fp32"):
        self.args, self.work, self.env, self.precision = args, work, env, precision
        self.name = "tmt" if precision == "fp32" else f"tmt_{precision}"
        self.run_dir = work / f"{self.name}_run"
        if args.reuse_training:
            if not self.run_dir.is_dir():
                raise RuntimeError(f"--reuse-training: {self.run_dir} does not exist; train first")
        else:
            if self.run_dir.exists():
                shutil.rmtree(self.run_dir)
        config = {
            "data": {"root": str(args.data), "src_lang": args.src, "tgt_lang": args.tgt, "train_prefix": "train",
                     "valid_prefix": "val", "test_prefix": "test2016", "max_len": 100},
            # The tokenizer every toolkit shares (copied into the run by transformer-mt, not retrained).
            "tokenizer": {"joint": True, "model": str(prep["spm"].resolve())},
            "model": {"d_model": 256, "num_heads": 4, "num_encoder_layers": 3, "num_decoder_layers": 3,
                      "ffn_dim": 1024, "dropout": 0.1, "attention_dropout": args.tmt_attention_dropout,
                      "activation_dropout": args.tmt_activation_dropout, "pre_norm": True,
                      "share_embeddings": True, "tie_output": True},
            # The budget is enforced by the slots (a signal after each); max_minutes is only a backstop.
            "training": {"seed": 1, "device": "cpu", "num_threads": args.threads, "precision": precision,
                         "batch_tokens": args.batch_tokens, "max_minutes": args.train_minutes + 5,
                         "lr": args.peak_lr, "warmup_steps": args.warmup,
                         "scheduler": "inverse_sqrt", "label_smoothing": 0.1, "validate_every": 100000,
                         "log_every": 20, "keep_last_n": 1},
            "decoding": {"beam_size": 5, "length_penalty": 1.0, "batch_size": args.batch_size},
        }
        self.config_path = work / f"{self.name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        exe = ROOT / ".venv" / "bin" / "transformer-mt"
        self.cli = [str(exe)] if exe.exists() else [sys.executable, "-m", "transformer_mt.cli"]
        self.per_slot: list[list[float]] = []
        self.seconds = 0.0

    def _train_rows(self) -> list[dict]:
        path = self.run_dir / "metrics.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return [r for r in rows if r.get("type") == "train"]

    def train_slot(self, minutes: float, slot: int) -> None:
        # SIGINT makes the trainer finish its update and save; the next slot resumes from that checkpoint.
        before = len(self._train_rows())
        self.seconds += run_for(self.cli + ["train", "--config", str(self.config_path), "--output-dir",
                                            str(self.run_dir)], minutes, self.work / f"{self.name}_train_slot{slot}.log",
                                self.env)
        self.per_slot.append([r["tokens_per_s"] for r in self._train_rows()[before:]])

    def train_result(self) -> dict:
        rows = self._train_rows()
        return train_numbers(self.per_slot, rows[-1]["step"] if rows else 0, self.seconds)

    def translate(self, src_file, out_file, beam) -> float:
        return timed(self.cli + ["translate", "--model", str(self.run_dir), "--checkpoint", "last",
                                 "--device", "cpu", "--beam-size", str(beam), "--batch-size", str(self.args.batch_size),
                                 "--precision", self.precision, "--input", str(src_file), "--output", str(out_file)]
                     + (["--early-exit"] if self.args.tmt_early_exit else []),
                     self.env, log_path=self.work / f"{self.name}_translate.log")

    def decoders(self) -> list:
        return [("decode", self.name, self.translate, self.args.data / f"test2016.{self.args.src}", None)]


class JoeyNMT:
    """JoeyNMT 2.3.0: each slot is a new model directory that loads the previous slot's checkpoint
    (weights, optimizer, scheduler, step counter); JoeyNMT saves its weights when interrupted."""

    decode_once = True  # its decoding of the test set takes minutes: one timed pass

    def __init__(self, args, work: Path, prep: dict, env: dict):
        self.args, self.work, self.env = args, work, env
        self.python = setup_venv(work, "joey")
        self.root = work / "joey_run"
        self.checkpoint: Path | None = None
        if args.reuse_training:
            checkpoints = sorted(self.root.glob("slot*/[0-9]*.ckpt"), key=lambda p: int(p.stem))
            if not checkpoints:
                raise RuntimeError(f"--reuse-training: no JoeyNMT checkpoint under {self.root}; train first")
            self.checkpoint = checkpoints[-1]
        else:
            if self.root.exists():
                shutil.rmtree(self.root)
            self.root.mkdir(parents=True)
        side = lambda lang: {"lang": lang, "max_length": 100, "lowercase": False, "normalize": False,  # noqa: E731
                             "level": "bpe", "voc_file": str(prep["joey_vocab"]), "tokenizer_type": "sentencepiece",
                             "tokenizer_cfg": {"model_file": str(prep["spm"])}}
        layers = lambda: {"type": "transformer", "num_layers": 3, "num_heads": 4,  # noqa: E731
                          "embeddings": {"embedding_dim": 256, "scale": True, "dropout": 0.0},
                          "hidden_size": 256, "ff_size": 1024, "dropout": 0.1, "layer_norm": "pre"}
        self.config = {
            "name": "joey_compare", "joeynmt_version": "2.3.0", "model_dir": "", "use_cuda": False,
            "data": {"train": str(args.data / "train"), "dev": str(args.data / "val"),
                     "test": str(args.data / "test2016"), "dataset_type": "plain",
                     "src": side(args.src), "trg": side(args.tgt)},
            "testing": {"n_best": 1, "beam_size": 5, "beam_alpha": 1.0, "batch_size": args.batch_size,
                        "batch_type": "sentence", "max_output_length": 100, "eval_metrics": ["bleu"],
                        "sacrebleu_cfg": {"tokenize": "13a"}},
            "training": {"random_seed": 42, "optimizer": "adam", "normalization": "tokens",
                         "adam_betas": [0.9, 0.98], "scheduling": "warmupinversesquareroot",
                         "learning_rate_warmup": args.warmup, "learning_rate": args.peak_lr,
                         "learning_rate_min": 1e-8, "label_smoothing": 0.1, "loss": "crossentropy",
                         "batch_size": args.batch_tokens, "batch_type": "token", "epochs": 1000,
                         "validation_freq": 1000000, "logging_freq": 20, "overwrite": True, "shuffle": True,
                         "keep_best_ckpts": 1},
            "model": {"initializer": "xavier_uniform", "bias_initializer": "zeros",
                      "embed_initializer": "xavier_uniform", "tied_embeddings": True, "tied_softmax": True,
                      "encoder": layers(), "decoder": layers()},
        }
        self.per_slot: list[list[float]] = []
        self.steps = 0
        self.seconds = 0.0

    def train_slot(self, minutes: float, slot: int) -> None:
        model_dir = self.root / f"slot{slot}"
        self.config["model_dir"] = str(model_dir)
        self.config["training"].pop("load_model", None)
        if self.checkpoint is not None:
            self.config["training"]["load_model"] = str(self.checkpoint)
        config_path = self.work / f"joey_slot{slot}.yaml"
        config_path.write_text(yaml.safe_dump(self.config, sort_keys=False), encoding="utf-8")
        # JoeyNMT saves the current weights when interrupted (KeyboardInterrupt), so SIGINT ends a slot.
        self.seconds += run_for([str(self.python), "-m", "joeynmt", "train", str(config_path), "--skip-test"],
                                minutes, self.work / f"joey_train_slot{slot}.log", self.env, signal.SIGINT)
        checkpoints = sorted(model_dir.glob("[0-9]*.ckpt"), key=lambda p: int(p.stem))
        if not checkpoints:
            raise RuntimeError(f"JoeyNMT left no checkpoint in {model_dir}; see {self.work}/joey_train_slot{slot}.log")
        self.checkpoint = checkpoints[-1]
        log_text = (model_dir / "train.log").read_text(encoding="utf-8")
        self.per_slot.append([float(x) for x in re.findall(r"Tokens per Sec:\s+([\d.]+)", log_text)])
        self.steps = int(self.checkpoint.stem)

    def train_result(self) -> dict:
        return train_numbers(self.per_slot, self.steps, self.seconds)

    def translate(self, src_file, out_file, beam) -> float:
        self.config["testing"].update(beam_size=beam, load_model=str(self.checkpoint))
        path = self.work / f"joey_translate_beam{beam}.yaml"
        path.write_text(yaml.safe_dump(self.config, sort_keys=False), encoding="utf-8")
        # (its -o option fails in 2.3.0 with "'BaseConfig' object has no attribute 'n_best'": use stdout)
        return timed([str(self.python), "-m", "joeynmt", "translate", str(path)], self.env, stdin_path=src_file,
                     log_path=self.work / "joey_translate.log", stdout_path=out_file,
                     cwd=self.work)  # it writes translate.log into its working directory

    def decoders(self) -> list:
        return [("decode", "joey", self.translate, self.args.data / f"test2016.{self.args.src}", None)]


class OpenNMT:
    """OpenNMT-py 3.5.1, optionally with CTranslate2 decoding its converted model (fp32 and int8).

    Each slot resumes with ``-train_from`` the newest checkpoint (weights, optimizer, step). OpenNMT-py
    saves nothing when stopped, so checkpoints are written every 20 updates and a slot loses < 20."""

    decode_once = False

    def __init__(self, args, work: Path, prep: dict, env: dict, with_ctranslate2: bool):
        self.args, self.work, self.env, self.prep = args, work, env, prep
        self.with_ctranslate2 = with_ctranslate2
        self.python = setup_venv(work, "onmt")
        self.bin_dir = self.python.parent
        self.run_dir = work / "onmt_run"
        if args.reuse_training and not self.checkpoints():
            raise RuntimeError(f"--reuse-training: no OpenNMT-py checkpoint in {self.run_dir}; train first")
        if self.run_dir.exists() and not args.reuse_training:
            shutil.rmtree(self.run_dir)
        seg, src, tgt = prep["seg"], args.src, args.tgt
        self.config = {
            "save_data": str(self.run_dir / "data"), "src_vocab": str(prep["onmt_vocab"]),
            "tgt_vocab": str(prep["onmt_vocab"]), "share_vocab": True, "overwrite": True,
            "data": {"corpus_1": {"path_src": str(seg / f"train.{src}.sp"), "path_tgt": str(seg / f"train.{tgt}.sp")},
                     "valid": {"path_src": str(seg / f"val.{src}.sp"), "path_tgt": str(seg / f"val.{tgt}.sp")}},
            "src_seq_length": 100, "tgt_seq_length": 100,
            "encoder_type": "transformer", "decoder_type": "transformer", "enc_layers": 3, "dec_layers": 3,
            "hidden_size": 256, "word_vec_size": 256, "transformer_ff": 1024, "heads": 4,
            "dropout": [0.1], "attention_dropout": [0.1], "position_encoding": True,
            # CTranslate2's converter refuses OpenNMT-py 3.5's default "scaled-dot-flash".
            "self_attn_type": "scaled-dot",
            "share_decoder_embeddings": True, "share_embeddings": True,
            "batch_size": args.batch_tokens, "batch_type": "tokens", "normalization": "tokens",
            # Its batches come from a bucket of examples filled before the first update, 262,144 by default:
            # nine passes over Multi30k's 29,000 pairs, which on a 2-core Zen 1 took the whole of a 3-minute
            # slot (no update, no checkpoint) at every start. A bucket that holds the corpus once batches
            # the same way and starts in seconds.
            "bucket_size": 32768,
            # noam: lr = learning_rate * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5), which peaks at
            # learning_rate * (d_model * warmup)^-0.5; choose learning_rate so that the peak is --peak-lr.
            "optim": "adam", "adam_beta1": 0.9, "adam_beta2": 0.98, "decay_method": "noam",
            "learning_rate": args.peak_lr * (256 * args.warmup) ** 0.5, "warmup_steps": args.warmup,
            "label_smoothing": 0.1, "param_init": 0, "param_init_glorot": True, "train_steps": 1000000,
            "valid_steps": 1000000, "report_every": 20, "save_checkpoint_steps": 20, "keep_checkpoint": 2,
            "save_model": str(self.run_dir / "model"), "seed": 42,
        }
        self.per_slot: list[list[float]] = []
        self.seconds = 0.0
        self.ct2_dir: Path | None = None

    def checkpoints(self) -> list[Path]:
        return sorted(self.run_dir.glob("model_step_*.pt"), key=lambda p: int(re.findall(r"\d+", p.stem)[-1]))

    def train_slot(self, minutes: float, slot: int) -> None:
        config = dict(self.config)
        if self.checkpoints():
            config["train_from"] = str(self.checkpoints()[-1])
        config_path = self.work / f"onmt_slot{slot}.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        log_path = self.work / f"onmt_train_slot{slot}.log"
        self.seconds += run_for([str(self.bin_dir / "onmt_train"), "-config", str(config_path)], minutes,
                                log_path, self.env, signal.SIGTERM)
        log_text = log_path.read_text(encoding="utf-8", errors="replace")
        # report lines: "Step 40/1000000; acc: ...; 1234/ 1500 tok/s;" = source/target tokens per second
        self.per_slot.append([float(t) for _, t in re.findall(r"(\d+)/\s*(\d+) tok/s", log_text)])
        if not self.checkpoints():
            raise RuntimeError(f"OpenNMT-py left no checkpoint in {self.run_dir}; see {log_path}")

    def train_result(self) -> dict:
        updates = int(re.findall(r"\d+", self.checkpoints()[-1].stem)[-1])
        return train_numbers(self.per_slot, updates, self.seconds)

    def prepare_decoding(self) -> None:
        if self.with_ctranslate2:
            self.ct2_dir = convert_to_ctranslate2(self.python, self.checkpoints()[-1], self.work, self.env)
            (self.work / "ct2_translate.py").write_text(CT2_DRIVER, encoding="utf-8")

    def translate(self, src_file, out_file, beam) -> float:
        return timed([str(self.bin_dir / "onmt_translate"), "-model", str(self.checkpoints()[-1]),
                      "-src", str(src_file), "-output", str(out_file), "-beam_size", str(beam),
                      "-batch_size", str(self.args.batch_size), "-batch_type", "sents", "-max_length", "100",
                      "-length_penalty", "wu", "-alpha", "1.0"], self.env, log_path=self.work / "onmt_translate.log")

    def ct2_translator(self, compute_type: str):
        def translate(src_file, out_file, beam):
            return timed([str(self.python), str(self.work / "ct2_translate.py"), str(self.ct2_dir), compute_type,
                          str(self.args.threads), str(beam), str(self.args.batch_size), str(src_file), str(out_file)], self.env,
                         log_path=self.work / "ct2_translate.log")
        return translate

    def decoders(self) -> list:
        test_src_sp = self.prep["seg"] / f"test2016.{self.args.src}.sp"
        sp = self.prep["sp"]
        decoders = [("decode", "onmt", self.translate, test_src_sp, sp)]
        if self.ct2_dir is not None:
            decoders += [("ctranslate2:decode", "ct2_float32", self.ct2_translator("float32"), test_src_sp, sp),
                         ("ctranslate2:decode_int8", "ct2_int8", self.ct2_translator("int8"), test_src_sp, sp)]
        return decoders


CT2_DRIVER = """
import sys, ctranslate2
model_dir, compute_type, threads, beam, batch, src, out = sys.argv[1:]
translator = ctranslate2.Translator(model_dir, device="cpu", compute_type=compute_type,
                                    intra_threads=int(threads), inter_threads=1)
lines = [line.split() for line in open(src, encoding="utf-8").read().splitlines()]
results = translator.translate_batch(lines, beam_size=int(beam), max_batch_size=int(batch),
                                     length_penalty=1.0, max_decoding_length=100)
with open(out, "w", encoding="utf-8") as f:
    for r in results:
        f.write(" ".join(r.hypotheses[0]) + "\\n")
"""


def convert_to_ctranslate2(python: Path, model: Path, work: Path, env: dict) -> Path:
    ct2_dir = work / "ct2_model"
    if ct2_dir.exists():
        shutil.rmtree(ct2_dir)
    # The converter torch.loads with weights_only=True, which refuses the argparse.Namespace that
    # OpenNMT-py stores in its checkpoints: allow that one class, then run the converter.
    convert = ("import argparse, sys, torch\n"
               "torch.serialization.add_safe_globals([argparse.Namespace])\n"
               "from ctranslate2.converters.opennmt_py import main\n"
               "sys.argv = ['ct2-opennmt-py-converter'] + sys.argv[1:]\n"
               "main()\n")
    timed([str(python), "-c", convert, "--model_path", str(model), "--output_dir", str(ct2_dir)], env,
          log_path=work / "ct2_convert.log")
    return ct2_dir


def merge_decode_rounds(rounds: list[dict]) -> dict:
    """Median sentences/s over the rounds (BLEU is the same every round: the outputs are)."""
    merged = {}
    for beam in ("beam1", "beam5"):
        runs = [r[beam] for r in rounds if beam in r]
        speeds = [r["sents_per_s"] for r in runs if r.get("sents_per_s")]
        merged[beam] = dict(runs[-1], sents_per_s=round(statistics.median(speeds), 1) if speeds else None,
                            sents_per_s_by_round=speeds)
    return merged


def _head(path: Path, work: Path, count: int) -> Path:
    out = work / f"head{count}.{path.name}"
    lines = path.read_text(encoding="utf-8").splitlines()[:count]
    out.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return out


# ---------------------------------------------------------------------------------------------
# report


def report(results: dict) -> list[str]:
    lines = ["| toolkit | train tok/s | updates | greedy sent/s | beam-5 sent/s | BLEU greedy | BLEU beam 5 |",
             "|---|---:|---:|---:|---:|---:|---:|"]

    def fmt(x, digits=0):
        return "-" if x is None else f"{x:,.{digits}f}"

    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error'][:80]} |  |  |  |  |  |")
            continue
        decodes = [(name, r.get("decode"))] + ([(name + " int8", r["decode_int8"])] if "decode_int8" in r else [])
        for label, d in decodes:
            d = d or {}
            lines.append(f"| {label} | {fmt(r.get('train_tok_per_s'))} | {fmt(r.get('updates'))} | "
                         f"{fmt(d.get('beam1', {}).get('sents_per_s'), 1)} | {fmt(d.get('beam5', {}).get('sents_per_s'), 1)} | "
                         f"{fmt(d.get('beam1', {}).get('bleu'), 2)} | {fmt(d.get('beam5', {}).get('bleu'), 2)} |")
    for our_name in ("transformer-mt", "transformer-mt-bf16"):
        ours = results.get(our_name)
        if not ours or "error" in ours:
            continue
        lines.append("")
        lines.append(f"{our_name} / peer:")
        for name, r in results.items():
            if name.startswith("transformer-mt"):
                continue
            parts = []
            if ours.get("train_tok_per_s") and r.get("train_tok_per_s"):
                parts.append(f"training {ours['train_tok_per_s'] / r['train_tok_per_s']:.2f}x")
            for beam in ("beam1", "beam5"):
                a = (ours.get("decode") or {}).get(beam, {}).get("sents_per_s")
                b = (r.get("decode") or {}).get(beam, {}).get("sents_per_s")
                if a and b:
                    parts.append(f"{beam.replace('beam1', 'greedy').replace('beam5', 'beam 5')} decoding {a / b:.2f}x")
            lines.append(f"  vs {name}: " + ", ".join(parts))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    default_data = Path(os.environ.get("TRANSFORMER_MT_DATA", ROOT.parent / "shared" / "data")) / "multi30k"
    parser.add_argument("--data", type=Path, default=default_data, help="Multi30k folder (default: %(default)s)")
    parser.add_argument("--src", default="de")
    parser.add_argument("--tgt", default="en")
    parser.add_argument("--work", type=Path, default=Path("/tmp/transformer-mt-peers"),
                        help="virtual environments, segmented data, runs, outputs (default: %(default)s)")
    parser.add_argument("--toolkits", default=",".join(TOOLKITS),
                        help="comma-separated subset of " + ", ".join(TOOLKITS))
    parser.add_argument("--train-minutes", type=float, default=10.0, help="training budget per toolkit")
    parser.add_argument("--rounds", type=int, default=3,
                        help="split each toolkit's training budget into this many slots, run round-robin, each "
                             "resuming from the last (1 = one toolkit after the other)")
    parser.add_argument("--decode-rounds", type=int, default=3,
                        help="timed decoding passes per toolkit, round-robin; the median is reported "
                             "(JoeyNMT: one pass, it takes minutes)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for every toolkit")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per decoding batch")
    parser.add_argument("--batch-tokens", type=int, default=4096, help="tokens per training batch, every toolkit")
    parser.add_argument("--warmup", type=int, default=1000,
                        help="warmup updates of the inverse-square-root schedule, every toolkit (a short "
                             "--train-minutes needs a short warmup to give models that translate at all)")
    parser.add_argument("--peak-lr", type=float, default=1e-3, help="learning rate at the end of warmup")
    parser.add_argument("--tmt-attention-dropout", type=float, default=0.1,
                        help="transformer-mt attention dropout (0.1 matches the peers; 0 is faster on CPU)")
    parser.add_argument("--tmt-activation-dropout", type=float, default=0.1,
                        help="transformer-mt FFN activation dropout (0.1 matches the peers)")
    parser.add_argument("--reuse-training", action="store_true",
                        help="skip training: decode with the models an earlier run left in --work")
    parser.add_argument("--tmt-early-exit", action="store_true",
                        help="transformer-mt beam search with early exit (translate --early-exit), the peers' "
                             "stopping rule; off by default, as in transformer-mt itself")
    parser.add_argument("--sentences", type=int, default=0,
                        help="decode only the first N test sentences (0 = all; for quick checks)")
    parser.add_argument("--json", type=Path, help="also write all numbers to this JSON file")
    args = parser.parse_args()

    wanted = [t.strip() for t in args.toolkits.split(",") if t.strip()]
    unknown = sorted(set(wanted) - set(TOOLKITS))
    if unknown:
        parser.error(f"unknown toolkit(s) {unknown}; choose from {', '.join(TOOLKITS)}")
    for split in SPLITS:
        for lang in (args.src, args.tgt):
            if not (args.data / f"{split}.{lang}").is_file():
                parser.error(f"{args.data / f'{split}.{lang}'} is missing: point --data at the Multi30k folder "
                             f"(or run scripts/download_multi30k.py)")
    args.data = args.data.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    # TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD: OpenNMT-py 3.5.1 and its CTranslate2 converter torch.load
    # their own checkpoints (which hold an argparse.Namespace) without weights_only=False, which
    # torch >= 2.6 refuses by default; these are checkpoints this script just wrote.
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="", TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    prep = prepare_data(args.data, args.work, args.src, args.tgt)

    results: dict = {}
    started = time.time()
    if "transformer-mt-bf16" in wanted and not cpu_has_fast_bf16():
        # Without native bf16 instructions bf16 matmuls are emulated, far slower than fp32.
        print("transformer-mt-bf16 skipped: this CPU has no AVX-512 BF16 or AMX", flush=True)
        wanted.remove("transformer-mt-bf16")
    makers = [("transformer-mt", lambda: TransformerMT(args, args.work, prep, env)),
              ("transformer-mt-bf16", lambda: TransformerMT(args, args.work, prep, env, precision="bf16")),
              ("joeynmt", lambda: JoeyNMT(args, args.work, prep, env)),
              ("opennmt-py", lambda: OpenNMT(args, args.work, prep, env, "ctranslate2" in wanted))]
    toolkits = {}
    for key, make in makers:  # set-up (installs) before anything is timed
        if key in wanted or (key == "opennmt-py" and "ctranslate2" in wanted):
            try:
                toolkits[key] = make()
            except Exception as exc:  # one toolkit failing must not lose the others' numbers
                print(f"  {key} set-up failed: {exc}", flush=True)
                results[key] = {"error": str(exc)}

    # Training in interleaved slots: this VM's speed drifts by tens of percent over minutes, and
    # round-robin slots spread that drift over every toolkit instead of favouring whoever ran first.
    slot_minutes = args.train_minutes / args.rounds
    for slot in range(0 if args.reuse_training else args.rounds):
        for key, toolkit in list(toolkits.items()):
            print(f"== training {key}, slot {slot + 1}/{args.rounds} ({slot_minutes:g} min)", flush=True)
            try:
                toolkit.train_slot(slot_minutes, slot)
            except Exception as exc:
                print(f"  {key} failed: {exc}", flush=True)
                results[key] = {"error": str(exc)}
                del toolkits[key]
    for key, toolkit in list(toolkits.items()):
        try:
            results[key] = {} if args.reuse_training else toolkit.train_result()
            if hasattr(toolkit, "prepare_decoding"):
                toolkit.prepare_decoding()
            print(f"  {key}: {results[key]}", flush=True)
        except Exception as exc:
            print(f"  {key} failed: {exc}", flush=True)
            results[key] = {"error": str(exc)}
            del toolkits[key]

    # Decoding, also round-robin; each speed is the median over --decode-rounds passes.
    rounds: dict = collections.defaultdict(list)
    failed: set = set()  # (toolkit, result key) whose decoding failed once: not retried, not reported
    for round_index in range(args.decode_rounds):
        for key, toolkit in list(toolkits.items()):
            if round_index > 0 and toolkit.decode_once:
                continue
            for result_key, name, translate, test_src, sp in toolkit.decoders():
                if (key, result_key) in failed:
                    continue
                print(f"== decoding {name}, round {round_index + 1}/{args.decode_rounds}", flush=True)
                try:
                    rounds[(key, result_key)].append(decode_speed(
                        translate, args.work, name, test_src, args.data / f"test2016.{args.tgt}", sp,
                        args.sentences))
                except Exception as exc:
                    print(f"  {name} failed: {exc}", flush=True)
                    failed.add((key, result_key))
                    rounds.pop((key, result_key), None)
                    results.setdefault(key, {})[f"{result_key}_error"] = str(exc)
    for (key, result_key), measured in rounds.items():
        if ":" in result_key:  # CTranslate2 decodes the OpenNMT-py model: its own row
            row, result_key = result_key.split(":")
            results.setdefault(row, {})[result_key] = merge_decode_rounds(measured)
        else:
            results[key][result_key] = merge_decode_rounds(measured)
    if "ctranslate2" not in wanted:
        results.pop("ctranslate2", None)
    if "opennmt-py" not in wanted:
        results.pop("opennmt-py", None)

    lines = report(results)
    print("\n".join(lines))
    if args.json:
        meta = {"reuse_training": args.reuse_training, "tmt_early_exit": args.tmt_early_exit,
                "train_minutes": args.train_minutes, "rounds": args.rounds, "decode_rounds": args.decode_rounds,
                "threads": args.threads, "batch_size": args.batch_size,
                "batch_tokens": args.batch_tokens, "warmup": args.warmup, "peak_lr": args.peak_lr,
                "data": str(args.data), "wall_seconds": round(time.time() - started, 1),
                "machine": os.uname().nodename, "cpu_count": os.cpu_count()}
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
