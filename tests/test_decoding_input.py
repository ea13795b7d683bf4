"""Decoding input: beam sizes, --output paths, empty scoring input, line splitting, over-long sentences.

Each case must end in a translation or one clear "error:" line, and never lose a file.
"""

import errno
import io
import itertools
import logging
import os
import pathlib
import sys
import tempfile
from unittest import mock

import pytest
import torch
from conftest import WORDS, run_cli, tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer_mt import Translator, cli
from transformer_mt.data.batches import read_lines, split_lines
from transformer_mt.data.tokenizer import BOS_ID, EOS_ID
from transformer_mt.decoding.search import NEVER_GENERATED, beam_search
from transformer_mt.errors import TransformerMTError
from transformer_mt.scoring import score


@pytest.fixture(scope="module")
def translator(small_run):
    return Translator.from_run(small_run[2])


def main_error(capsys, *argv):
    """Run the CLI in-process (fast: no interpreter start) and return its one error line."""
    assert cli.main([str(a) for a in argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: "), lines
    return lines[-1]


def refuse_model_loading(monkeypatch):
    """Checks that must come before decoding must also come before loading the model."""
    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(Translator, "from_run", fail)


# 1. Beam sizes up to and beyond the vocabulary.

@pytest.mark.parametrize("beam_size", [17, 18, 33, 34, 35, 80])
def test_any_beam_size_translates(translator, beam_size):
    # The tiny model has 34 target pieces, so the first step has only 34 candidates: before, a beam of 18
    # or more died in torch.topk ("selected index k out of range").
    assert len(translator.tgt_tokenizer) == 34
    for early_exit in (False, True):
        out = translator.translate(["ba de gi", "ko", ""], beam_size=beam_size, nbest=beam_size,
                                   early_exit=early_exit)
        assert [len(o) for o in out] == [beam_size] * 3
        assert all(isinstance(t, str) for t in out[0])


def test_beam_larger_than_the_vocabulary_from_the_cli(small_run):
    result = run_cli("translate", "--model", small_run[2], "--beam-size", 40, "--nbest", 40, "ba de")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1 and result.stdout.count("\t") == 39


def test_nbest_larger_than_beam_is_a_clean_error(small_run, capsys):
    line = main_error(capsys, "translate", "--model", small_run[2], "--beam-size", 2, "--nbest", 3, "ba")
    assert "nbest (3) cannot exceed the beam size (2)" in line


def exhaustive_ranking(model, src, length_penalty, max_len):
    """Every hypothesis of at most max_len tokens, scored as beam search scores them, best first."""
    tokens = [t for t in range(model.generator.out_features) if t not in NEVER_GENERATED + [EOS_ID]]

    def log_probs(prefix):
        with torch.no_grad():
            logits = model(src.unsqueeze(0), torch.tensor([[BOS_ID] + prefix]))[0, -1].float()
        logits[NEVER_GENERATED] = float("-inf")
        return torch.log_softmax(logits, dim=-1)

    def normalise(log_prob, length):
        return log_prob / (((5.0 + length) / 6.0) ** length_penalty)

    ranked = []
    for length in range(max_len + 1):
        for prefix in itertools.product(tokens, repeat=length):
            log_prob = sum(float(log_probs(list(prefix[:i]))[prefix[i]]) for i in range(length))
            if length < max_len:  # ends in eos
                ranked.append((normalise(log_prob + float(log_probs(list(prefix))[EOS_ID]), length + 1), list(prefix)))
            else:  # stopped by the length limit
                ranked.append((normalise(log_prob, length), list(prefix)))
    return sorted(ranked, key=lambda pair: pair[0], reverse=True)


def test_a_beam_wider_than_all_hypotheses_is_exact_search():
    model = tiny_model(vocab_size=8, seed=1)  # 5 generatable tokens besides eos
    src = torch.tensor([4, 5, 6])
    expected = exhaustive_ranking(model, src, 1.0, max_len=2)  # 1 + 5 + 25 hypotheses
    assert len(expected) == 31
    [found] = beam_search(model, src.unsqueeze(0), beam_size=100, length_penalty=1.0, max_length_a=0.0,
                          max_length_b=2, nbest=31)
    assert [h.tokens for h in found] == [tokens for _, tokens in expected]
    assert [h.score for h in found] == pytest.approx([s for s, _ in expected], abs=1e-4)
    [uncached] = beam_search(model, src.unsqueeze(0), beam_size=100, length_penalty=1.0, max_length_a=0.0,
                             max_length_b=2, nbest=31, incremental=False)
    assert [h.tokens for h in uncached] == [h.tokens for h in found]


# 2. --output paths are checked before the model is loaded, and written atomically.

@pytest.mark.parametrize("command", ["translate", "evaluate"])
def test_output_that_is_a_directory(small_run, capsys, monkeypatch, command, tmp_path):
    tmp, data, run = small_run
    refuse_model_loading(monkeypatch)
    inputs = ["ba de"] if command == "translate" else ["--src", data / "test.src", "--ref", data / "test.tgt"]
    line = main_error(capsys, command, "--model", run, "--output", tmp_path, *inputs)
    assert line == f"error: --output {tmp_path} is a directory; give a file name, e.g. {tmp_path / 'out.txt'}"


@pytest.mark.parametrize("command", ["translate", "evaluate"])
def test_output_in_a_missing_directory(small_run, capsys, monkeypatch, command, tmp_path):
    tmp, data, run = small_run
    refuse_model_loading(monkeypatch)
    inputs = ["ba de"] if command == "translate" else ["--src", data / "test.src", "--ref", data / "test.tgt"]
    out = tmp_path / "missing" / "out.txt"
    line = main_error(capsys, command, "--model", run, "--output", out, *inputs)
    assert line == (f"error: --output {out}: directory {tmp_path / 'missing'} does not exist; create it or "
                    f"choose another --output")
    assert not (tmp_path / "missing").exists()


def test_output_below_a_file(small_run, capsys, monkeypatch, tmp_path):
    refuse_model_loading(monkeypatch)
    (tmp_path / "file").write_text("keep\n")
    out = tmp_path / "file" / "out.txt"
    line = main_error(capsys, "translate", "--model", small_run[2], "--output", out, "ba")
    assert line == f"error: --output {out}: {tmp_path / 'file'} is not a directory; choose another --output"
    assert (tmp_path / "file").read_text() == "keep\n"


def answer_access_as_a_user(monkeypatch):
    """Root may write anywhere, so os.access says yes to it; answer from the owner's bits instead."""
    if os.geteuid() == 0:
        monkeypatch.setattr(os, "access", lambda path, mode: not mode & os.W_OK or bool(os.stat(path).st_mode & 0o200))


def test_output_in_a_read_only_directory(small_run, capsys, monkeypatch, tmp_path):
    refuse_model_loading(monkeypatch)
    answer_access_as_a_user(monkeypatch)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        line = main_error(capsys, "translate", "--model", small_run[2], "--output", locked / "out.txt", "ba")
    finally:
        locked.chmod(0o700)
    assert line == f"error: --output {locked / 'out.txt'}: directory {locked} is not writable; choose another --output"


def test_read_only_output_file(small_run, capsys, monkeypatch, tmp_path):
    refuse_model_loading(monkeypatch)
    answer_access_as_a_user(monkeypatch)
    out = tmp_path / "out.txt"
    out.write_text("keep\n")
    out.chmod(0o400)
    line = main_error(capsys, "translate", "--model", small_run[2], "--output", out, "ba")
    assert line == f"error: --output {out} is read-only; make it writable or choose another --output"
    assert out.read_text() == "keep\n"


def test_output_that_is_the_input_is_refused(small_run, capsys, monkeypatch, tmp_path):
    tmp, data, run = small_run
    refuse_model_loading(monkeypatch)
    src = tmp_path / "src.txt"
    src.write_text("ba de\n")
    line = main_error(capsys, "translate", "--model", run, "--input", src, "--output", src)
    assert line == (f"error: --output {src} is the --input file; writing it would replace the input; "
                    f"choose another --output")
    assert src.read_text() == "ba de\n"


def test_evaluate_output_that_is_the_reference_is_refused(small_run, capsys, tmp_path):
    tmp, data, run = small_run
    ref = tmp_path / "ref.txt"
    ref.write_bytes((data / "test.tgt").read_bytes())
    line = main_error(capsys, "evaluate", "--model", run, "--src", data / "test.src", "--ref", ref, "--output", ref)
    assert line == (f"error: --output {ref} is the --ref file; writing it would replace the input; "
                    f"choose another --output")
    assert ref.read_bytes() == (data / "test.tgt").read_bytes()


def test_a_failed_write_leaves_the_old_output_intact(small_run, capsys, monkeypatch, tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("old translations\n")
    def disk_full(handle, content):  # how safe_files writes the temporary file
        handle.write(content.encode("utf-8")[: len(content) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("transformer_mt.safe_files._write_content", disk_full)
    line = main_error(capsys, "translate", "--model", small_run[2], "--output", out, "ba de gi", "ko mu")
    assert line == f"error: could not write --output {out}: No space left on device; it was left as it was"
    assert out.read_text() == "old translations\n"
    assert os.listdir(tmp_path) == ["out.txt"]  # no temporary file left behind


def test_output_replaces_an_existing_file_and_keeps_its_mode(small_run, tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("old\n")
    out.chmod(0o640)
    assert cli.main(["translate", "--model", str(small_run[2]), "--beam-size", "1", "--output", str(out),
                     "ba", "de"]) == 0
    assert out.read_text().count("\n") == 2 and "old" not in out.read_text()
    assert out.stat().st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["out.txt"]


# 3. Scoring nothing, and files of different lengths.

def test_evaluate_empty_hyp_and_ref(capsys, tmp_path):
    hyp, ref = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    hyp.write_text("")
    ref.write_text("")
    line = main_error(capsys, "evaluate", "--hyp", hyp, "--ref", ref)
    assert line == f"error: nothing to score: {hyp} and {ref} are empty"


def test_evaluate_empty_src_and_ref_with_a_model(small_run, capsys, tmp_path):
    src, ref = tmp_path / "src.txt", tmp_path / "ref.txt"
    src.write_text("")
    ref.write_text("")
    line = main_error(capsys, "evaluate", "--model", small_run[2], "--src", src, "--ref", ref)
    assert line == f"error: nothing to score: {src} and {ref} are empty"


def test_evaluate_hyp_and_ref_of_different_lengths(capsys, tmp_path):
    hyp, ref = tmp_path / "hyp.txt", tmp_path / "ref.txt"
    hyp.write_text("a\nb\nc\n")
    ref.write_text("a\nb\n")
    line = main_error(capsys, "evaluate", "--hyp", hyp, "--ref", ref)
    assert line == (f"error: --hyp {hyp} has 3 lines but --ref {ref} has 2; line i of the translations must go "
                    f"with line i of the references")


def test_evaluate_hyp_with_output_is_refused(capsys, tmp_path):
    hyp = tmp_path / "hyp.txt"
    hyp.write_text("a\n")
    line = main_error(capsys, "evaluate", "--hyp", hyp, "--ref", hyp, "--output", tmp_path / "out.txt")
    assert "--output writes the model's translations, and --hyp translates nothing" in line


def test_score_of_nothing_is_a_clear_error():
    with pytest.raises(TransformerMTError, match="nothing to score"):
        score([], [])


# 4. One output line per input line, whatever characters the input holds.

LINE_BREAKS = ["\n", "\r", "\r\n", "\u2028", "\u2029", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\ufeff",
               "\u0000", "\t", " "]
texts = st.lists(st.one_of(st.sampled_from(LINE_BREAKS + WORDS[:4]), st.characters(blacklist_categories=("Cs",))),
                 max_size=30).map("".join)


def expected_line_count(text):
    pieces = text.removeprefix("\ufeff").split("\n")  # a byte order mark alone is an empty file
    return len(pieces) - (pieces[-1] == "")


@settings(max_examples=100, deadline=None)
@given(texts)
def test_split_lines_agrees_with_read_lines(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "lines.txt"
        path.write_bytes(text.encode("utf-8"))
        assert split_lines(text) == read_lines(path)


class FakeStdin:
    def __init__(self, data: bytes):
        self.buffer = io.BytesIO(data)

    def isatty(self):
        return False


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("lines")


@settings(max_examples=30, deadline=None)
@given(texts)
def test_one_output_line_per_input_line(small_run, scratch, text):
    run = str(small_run[2])
    source = scratch / "input.txt"
    source.write_bytes(text.encode("utf-8"))
    outputs = []
    for extra in ([], ["--input", str(source)]):
        out = scratch / "out.txt"
        with mock.patch.object(sys, "stdin", FakeStdin(text.encode("utf-8"))):
            assert cli.main(["translate", "--model", run, "--beam-size", "1", "--output", str(out), *extra]) == 0
        outputs.append(out.read_text(encoding="utf-8"))
    assert outputs[0] == outputs[1]  # standard input and --input read the same lines
    assert outputs[0].count("\n") == expected_line_count(text)
    assert len(outputs[0].splitlines()) == expected_line_count(text)  # no other line break in a translation


def test_an_argument_with_line_breaks_is_one_sentence(small_run, capsys):
    run = str(small_run[2])
    assert cli.main(["translate", "--model", run, "--beam-size", "1", "ba\nde", "gi\u2028ko\r\n", "mu"]) == 0
    with_breaks = capsys.readouterr().out
    assert cli.main(["translate", "--model", run, "--beam-size", "1", "ba de", "gi ko", "mu"]) == 0
    assert with_breaks == capsys.readouterr().out
    assert with_breaks.count("\n") == 3


def test_translations_never_contain_line_breaks(small_run, monkeypatch):
    translator = Translator.from_run(small_run[2])
    monkeypatch.setattr(translator.tgt_tokenizer, "decode",
                        lambda ids: ["a\nb\r\nc\u2028d\x85e\n" for _ in ids])
    assert translator.translate(["ba", "de"], beam_size=1) == ["a b c d e", "a b c d e"]
    assert translator.translate(["ba"], beam_size=2, nbest=2) == [["a b c d e", "a b c d e"]]


# 5. Inputs longer than the model was trained on.

def long_sentence(words):
    return " ".join(WORDS[i % len(WORDS)] for i in range(words))


def test_inputs_longer_than_data_max_len_warn_once(translator, caplog):
    assert translator.config.data.max_len == 64
    with caplog.at_level(logging.WARNING, logger="transformer_mt"):
        out = translator.translate([long_sentence(70), "ba de", long_sentence(65)], beam_size=1)
    assert len(out) == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["2 input sentence(s) longer than the model's training limit data.max_len=64 tokens "
                        "(longest: 70); translations of such long inputs are often truncated or wrong; split "
                        "them into sentences"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="transformer_mt"):
        translator.translate([long_sentence(64), "ba de"], beam_size=1)
    assert not caplog.records


def test_long_input_warning_reaches_the_cli_user(small_run):
    result = run_cli("translate", "--model", small_run[2], "--beam-size", "1", input_bytes=(
        long_sentence(70) + "\nba de\n").encode())
    stderr = result.stderr
    assert result.returncode == 0, stderr
    assert "1 input sentence(s) longer than the model's training limit data.max_len=64 tokens (longest: 70)" in stderr
    assert result.stdout.count("\n") == 2


def test_quantize_with_bf16_and_non_finite_length_penalty_are_clean_errors(small_run):
    run = small_run[2]
    with pytest.raises(TransformerMTError, match="--quantize .* cannot be combined with --precision bf16"):
        Translator.from_run(run, quantize=True, precision="bf16", device="cpu")
    with pytest.raises(TransformerMTError, match=r"length_penalty \(--length-penalty\) must be a finite number"):
        Translator.from_run(run).translate(["ba de"], length_penalty=float("nan"))
