"""The transformer-mt command end to end, in a temporary directory."""

import json
import subprocess
import sys

import pytest
import yaml
from conftest import write_reverse_corpus


def run_cli(*args, input_text=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "transformer_mt.cli", *map(str, args)], input=input_text,
                          capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    data = write_reverse_corpus(tmp / "data", n_train=2000, n_valid=30, n_test=40, seed=5)
    config = {
        "data": {"root": str(data), "src_lang": "src", "tgt_lang": "tgt"},
        "tokenizer": {"model_type": "word", "vocab_size": 34},
        "model": {"d_model": 64, "num_heads": 4, "num_encoder_layers": 2, "num_decoder_layers": 2, "ffn_dim": 128,
                  "dropout": 0.0, "pre_norm": True},
        "training": {"batch_tokens": 1500, "max_steps": 200, "lr": 0.003, "warmup_steps": 100,
                     "validate_every": 100, "log_every": 20, "num_threads": 1, "keep_last_n": 2},
        "decoding": {"beam_size": 3},
    }
    config_path = tmp / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = run_cli("train", "--config", config_path, "--output-dir", tmp / "run")
    assert result.returncode == 0, result.stderr
    return tmp, data, tmp / "run"


def test_train_writes_a_self_contained_run(trained_run):
    tmp, data, run = trained_run
    for name in ("config.yaml", "spm.model", "checkpoint_last.pt", "checkpoint_best.pt", "train.log", "metrics.jsonl"):
        assert (run / name).exists(), name
    assert len(list(run.glob("checkpoint_step*.pt"))) == 2  # keep_last_n
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"train", "valid"} <= {r["type"] for r in records}
    assert all(r["tokens_per_s"] > 0 for r in records if r["type"] == "train")


def test_translate_from_arguments_stdin_and_file(trained_run, tmp_path):
    tmp, data, run = trained_run
    sentences = ["ba de gi ko", "mu pa ba", "ke ke di go pu"]
    from_args = run_cli("translate", "--model", run, *sentences)
    assert from_args.returncode == 0, from_args.stderr
    lines = from_args.stdout.splitlines()
    assert len(lines) == 3
    # stdin, with an empty line in the middle: output keeps order and the empty line.
    from_stdin = run_cli("translate", "--model", run, input_text=f"{sentences[0]}\n\n{sentences[1]}\n")
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert from_stdin.stdout.splitlines() == [lines[0], "", lines[1]]
    # file in, file out, greedy, n-best.
    src = tmp_path / "in.txt"
    src.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    result = run_cli("translate", "--model", run, "--input", src, "--output", out, "--beam-size", "1")
    assert result.returncode == 0, result.stderr
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3
    nbest = run_cli("translate", "--model", run, "--beam-size", "3", "--nbest", "2", sentences[0])
    assert nbest.returncode == 0, nbest.stderr
    assert len(nbest.stdout.rstrip("\n").split("\t")) == 2


def test_translate_quantize_prints_translations_and_no_warning(trained_run):
    # Dynamic int8 quantization made PyTorch 2.13 print a deprecation warning (with its source line) at
    # every translate --quantize: notes for developers, not for the person translating.
    tmp, data, run = trained_run
    plain = run_cli("translate", "--model", run, "ba de gi ko", "mu pa ba")
    result = run_cli("translate", "--model", run, "--quantize", "ba de gi ko", "mu pa ba")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == len(plain.stdout.splitlines()) == 2
    assert "Warning" not in result.stderr and "deprecated" not in result.stderr, result.stderr


def test_evaluate_json_bleu_equals_sacrebleu_command_line(trained_run, tmp_path):
    tmp, data, run = trained_run
    hyp_file = tmp_path / "hyp.txt"
    result = run_cli("evaluate", "--model", run, "--split", "test", "--json", "--output", hyp_file)
    assert result.returncode == 0, result.stderr
    ours = json.loads(result.stdout)
    assert {"bleu", "chrf", "signature"} <= set(ours)
    assert ours["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert ours["bleu"] > 5, "the model should have learned something in 200 steps"
    reference = subprocess.run([sys.executable, "-m", "sacrebleu", str(data / "test.tgt"), "-i", str(hyp_file),
                                "-m", "bleu", "chrf", "-w", "4", "-f", "json"], capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr
    theirs = json.loads(reference.stdout)
    assert abs(theirs[0]["score"] - ours["bleu"]) < 1e-3
    assert abs(theirs[1]["score"] - ours["chrf"]) < 1e-3
    # Scoring the same file with --hyp (no model) gives the same numbers.
    scored = run_cli("evaluate", "--hyp", hyp_file, "--ref", data / "test.tgt", "--json")
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["bleu"] == ours["bleu"]
    human = run_cli("evaluate", "--hyp", hyp_file, "--ref", data / "test.tgt")
    assert "BLEU = " in human.stdout and "signature" in human.stdout


def test_average_command(trained_run):
    tmp, data, run = trained_run
    result = run_cli("average", "--model", run, "--last", "2")
    assert result.returncode == 0, result.stderr
    assert (run / "checkpoint_average.pt").exists()
    translated = run_cli("translate", "--model", run, "--checkpoint", "average", "ba de gi")
    assert translated.returncode == 0 and translated.stdout.strip()


@pytest.mark.parametrize("command", ["train", "translate", "evaluate", "average", "plot"])
def test_help_is_complete(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0
    assert "usage: transformer-mt " + command in result.stdout


def test_python_api_matches_cli(trained_run):
    from transformer_mt import Translator

    tmp, data, run = trained_run
    translator = Translator.from_run(run)
    api = translator.translate(["ba de gi ko", "", "mu pa ba"], beam_size=3)
    cli = run_cli("translate", "--model", run, "--beam-size", "3", "ba de gi ko", "", "mu pa ba")
    assert cli.stdout.splitlines() == api
    assert api[1] == ""


def test_prepare_then_train_reuses_the_tokenizer_and_encoded_corpora(tmp_path):
    import yaml
    from conftest import run_cli, tiny_config

    data = write_reverse_corpus(tmp_path / "data", n_train=200, n_valid=5, n_test=5)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(tiny_config(data, max_steps=2, validate_every=2).to_dict()))
    run = tmp_path / "run"
    prepared = run_cli("prepare", "--config", config_path, "--output-dir", run)
    assert prepared.returncode == 0, prepared.stderr
    assert "prepared" in prepared.stderr and "200 training pairs" in prepared.stderr
    assert not list(run.glob("checkpoint*")) and (run / "spm.model").is_file()
    cached = {p.name: p.stat().st_mtime_ns for p in (run / "cache").iterdir()}
    tokenizer_time = (run / "spm.model").stat().st_mtime_ns
    assert cached
    trained = run_cli("train", "--config", config_path, "--output-dir", run)
    assert trained.returncode == 0, trained.stderr
    assert (run / "spm.model").stat().st_mtime_ns == tokenizer_time
    assert {p.name: p.stat().st_mtime_ns for p in (run / "cache").iterdir() if p.name in cached} == cached
    assert "reusing tokenizer" in (run / "train.log").read_text()
