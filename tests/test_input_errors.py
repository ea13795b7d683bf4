"""Input mistakes in configs, data files, tokenizer training text and the encoded-corpus cache:
one clear TransformerMTError naming the key or file, or (for a cache) a warning and a rebuild."""

import os
import re
import shutil

import numpy as np
import pytest
import yaml
from conftest import assert_clean_error, run_cli, tiny_config, write_reverse_corpus
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer_mt.config import (
    TokenizerConfig,
    check_data_files,
    load_config,
    parse_number,
    parse_overrides,
    parse_whole_number,
    training_warnings,
)
from transformer_mt.data.batches import EncodedCorpus, count_oversized, encode_parallel, make_batches, read_lines
from transformer_mt.data.tokenizer import build_tokenizers
from transformer_mt.errors import TransformerMTError


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# 1. Non-finite numbers

@pytest.mark.parametrize("text, key", [
    ("training:\n  lr: .nan\n", "training.lr"),
    ("training:\n  lr: .inf\n", "training.lr"),
    ("training:\n  lr: -.inf\n", "training.lr"),
    ("training:\n  max_minutes: .inf\n", "training.max_minutes"),
    ("decoding:\n  length_penalty: .nan\n", "decoding.length_penalty"),  # no range check would catch it
    ("training:\n  betas: [.nan, 0.98]\n", "training.betas"),
    ("training:\n  betas: [0.9, .inf]\n", "training.betas"),
    ("training:\n  betas: [-.inf, 0.9]\n", "training.betas"),
])
def test_non_finite_numbers_name_the_key(tmp_path, text, key):
    with pytest.raises(TransformerMTError, match=rf"key '{key}' must be a (list of )?finite number"):
        load_config(write(tmp_path, text))


def test_non_finite_number_from_set(tmp_path):
    with pytest.raises(TransformerMTError, match=r"key 'training.lr' must be a finite number, got nan"):
        load_config(write(tmp_path, "model: {}\n"), parse_overrides(["training.lr=.nan"]))


# 2. --set items

@pytest.mark.parametrize("item", ["training.max_steps=[1", "training.betas={a: 1", "training.lr=\"x"])
def test_set_value_that_is_not_yaml_names_the_item(item):
    with pytest.raises(TransformerMTError, match=re.escape(f"--set {item!r}: the value is not valid YAML")):
        parse_overrides([item])


@pytest.mark.parametrize("item", [".x=1", "training.=1", "=1", ".=1", " . =1", "training.lr"])
def test_set_key_needs_both_parts(item):
    with pytest.raises(TransformerMTError, match=r"expected SECTION.KEY=VALUE"):
        parse_overrides([item])


def test_cli_set_with_bad_yaml(tmp_path):
    result = run_cli("train", "--config", write(tmp_path, "model: {}\n"), "--output-dir", tmp_path / "run",
                     "--set", "training.max_steps=[1")
    assert_clean_error(result, "--set 'training.max_steps=[1'", "not valid YAML")


# 3. Overrides on a config whose top level or section is not a mapping

@pytest.mark.parametrize("text, message", [
    ("- a\n- b\n", r"top level must be a mapping"),
    ("5\n", r"top level must be a mapping"),
    ("just text\n", r"top level must be a mapping"),
    ("training: 5\n", r"section 'training' must be a mapping"),
    ("training: [1, 2]\n", r"section 'training' must be a mapping"),
    ("training: text\n", r"section 'training' must be a mapping"),
])
def test_overrides_on_a_config_that_is_not_a_mapping(tmp_path, text, message):
    with pytest.raises(TransformerMTError, match=message):
        load_config(write(tmp_path, text), {"training.lr": 0.1})


def test_overrides_fill_empty_sections_and_keep_other_keys(tmp_path):
    config = load_config(write(tmp_path, "training:\nmodel:\n  d_model: 64\n"),
                         {"training.lr": 0.25, "model.num_heads": 8})
    assert (config.training.lr, config.model.d_model, config.model.num_heads) == (0.25, 64, 8)


# 4. Duplicate keys

@pytest.mark.parametrize("text, message", [
    ("training:\n  lr: 0.1\nmodel:\n  d_model: 64\ntraining:\n  warmup_steps: 3\n",
     r"line 5, column 1: key 'training' is given twice \(lines 1 and 5\)"),
    ("training:\n  lr: 0.1\n  warmup_steps: 3\n  lr: 0.2\n",
     r"line 4, column 3: key 'training.lr' is given twice \(lines 2 and 4\)"),
    ("training: {lr: 0.1, lr: 0.2}\n", r"line 1, column 21: key 'training.lr' is given twice \(lines 1 and 1\)"),
])
def test_duplicate_keys_name_the_key_and_both_lines(tmp_path, text, message):
    with pytest.raises(TransformerMTError, match=r"c.yaml is not valid YAML at " + message):
        load_config(write(tmp_path, text))


def test_anchors_and_merge_keys_still_work(tmp_path):
    text = ("model:\n  <<: [{d_model: 64, num_heads: 2}, {num_heads: 4, ffn_dim: 128}]\n  num_heads: 8\n"
            "decoding:\n  beam_size: &beam 4\n  valid_beam_size: *beam\n")
    config = load_config(write(tmp_path, text))
    assert (config.model.d_model, config.model.num_heads, config.model.ffn_dim) == (64, 8, 128)
    assert config.decoding.valid_beam_size == 4


def test_cli_duplicate_section(tmp_path):
    result = run_cli("train", "--config", write(tmp_path, "training:\n  lr: 0.1\ntraining:\n  lr: 0.2\n"),
                     "--output-dir", tmp_path / "run")
    assert_clean_error(result, "key 'training' is given twice (lines 1 and 3)")


# 5. Warnings about valid but self-defeating settings

@pytest.mark.parametrize("scheduler", ["inverse_sqrt", "noam", "cosine", "constant"])
def test_warmup_longer_than_training_is_warned_about(tmp_path, scheduler):
    config = tiny_config(tmp_path, scheduler=scheduler, warmup_steps=11, max_steps=10)
    assert training_warnings(config) == [
        "training.warmup_steps (11) > training.max_steps (10): the learning rate never reaches its peak "
        "training.lr; lower warmup_steps"]
    assert training_warnings(tiny_config(tmp_path, scheduler=scheduler, warmup_steps=4000, max_steps=6))


@pytest.mark.parametrize("warmup, max_steps", [(5, 10), (10, 10), (0, 10), (1000, 0)])
def test_no_warning_when_warmup_ends_before_training(tmp_path, warmup, max_steps):
    assert training_warnings(tiny_config(tmp_path, warmup_steps=warmup, max_steps=max_steps)) == []


# 6. Sentences longer than a batch

def corpus_of_lengths(src_lengths, tgt_lengths):
    def flat(lengths):
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return np.full(offsets[-1], 5, dtype=np.int32), offsets

    return EncodedCorpus(*flat(src_lengths), *flat(tgt_lengths))


def test_count_oversized_counts_the_sentences_make_batches_puts_alone_over_budget():
    corpus = corpus_of_lengths([3, 10, 2, 7, 8, 1, 9], [2, 1, 9, 6, 7, 8, 3])
    # padded lengths max(src, tgt + 1): 3, 10, 10, 7, 8, 9, 9
    assert count_oversized(corpus, 8) == 4
    assert count_oversized(corpus, 10) == 0
    assert count_oversized(corpus, 2) == 7
    over_budget = [b for b in make_batches(corpus, 8, seed=0, epoch=0)
                   if max(max(corpus.src_lengths[b]), max(corpus.tgt_lengths[b]) + 1) * len(b) > 8]
    assert all(len(b) == 1 for b in over_budget) and len(over_budget) == 4
    assert count_oversized(corpus_of_lengths([], []), 8) == 0


# 7. Data paths that are not files

def test_data_file_that_is_a_symlink_loop(tmp_path):
    data = write_reverse_corpus(tmp_path / "data", n_train=5, n_valid=5, n_test=5)
    (data / "train.src").unlink()
    os.symlink(data / "train.src", data / "train.src")
    with pytest.raises(TransformerMTError, match=r"data file .*train.src \(split 'train', language 'src'\) is a "
                                                 r"symbolic link loop \(absolute: /.*data/train.src\); check"):
        check_data_files(tiny_config(data))
    with pytest.raises(TransformerMTError, match=r"file .*train.src is a symbolic link loop"):
        read_lines(data / "train.src")


def test_data_file_that_is_a_directory_or_a_dangling_link(tmp_path):
    data = write_reverse_corpus(tmp_path / "data", n_train=5, n_valid=5, n_test=5)
    (data / "valid.tgt").unlink()
    (data / "valid.tgt").mkdir()
    with pytest.raises(TransformerMTError, match=r"valid.tgt .* is a directory, expected a text file"):
        check_data_files(tiny_config(data))
    (data / "valid.tgt").rmdir()
    os.symlink(tmp_path / "nowhere", data / "valid.tgt")
    with pytest.raises(TransformerMTError, match=r"valid.tgt .* is a symbolic link to a missing file"):
        check_data_files(tiny_config(data))


def test_cli_data_file_that_is_a_symlink_loop(tmp_path):
    data = write_reverse_corpus(tmp_path / "data", n_train=5, n_valid=5, n_test=5)
    (data / "valid.src").unlink()
    os.symlink(data / "valid.src", data / "valid.src")
    config = write(tmp_path, yaml.safe_dump(tiny_config(data).to_dict()))
    result = run_cli("train", "--config", config, "--output-dir", tmp_path / "run")
    assert_clean_error(result, "valid.src", "is a symbolic link loop")


# 8. Training text with nothing to learn from

@pytest.mark.parametrize("content", [b"", b"\n\n", b"  \n\t\n \r\n", "\u3000\n\ufeff\n".encode("utf-8")])
def test_blank_training_file_is_named_before_sentencepiece_runs(tmp_path, content):
    data = write_reverse_corpus(tmp_path / "data", n_train=20, n_valid=2, n_test=2)
    (data / "train.tgt").write_bytes(content)
    (tmp_path / "run").mkdir()
    for joint in (True, False):
        with pytest.raises(TransformerMTError, match=r"training file .*train.tgt has no non-blank lines"):
            build_tokenizers(tmp_path / "run", TokenizerConfig(joint=joint, model_type="word", vocab_size=34),
                             data / "train.src", data / "train.tgt")


def test_text_that_sentencepiece_normalizes_away_gives_a_clear_error(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.src").write_text("\u200b\n" * 5, encoding="utf-8")  # zero-width spaces: not white space
    (tmp_path / "run").mkdir()
    with pytest.raises(TransformerMTError, match=r"SentencePiece found no text to learn from in .*train.src"):
        build_tokenizers(tmp_path / "run", TokenizerConfig(joint=False, model_type="word", vocab_size=8),
                         data / "train.src", data / "train.src")


# 9. A damaged encoded-corpus cache is rebuilt

@pytest.fixture(scope="module")
def cached_corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cache")
    data = write_reverse_corpus(tmp / "data", n_train=60, n_valid=2, n_test=2)
    (tmp / "run").mkdir()
    tok, _ = build_tokenizers(tmp / "run", TokenizerConfig(model_type="word", vocab_size=34), data / "train.src",
                              data / "train.tgt")
    fresh = encode_parallel(data / "train.src", data / "train.tgt", tok, tok, max_len=64)
    return data, tok, fresh


def write_arrays(**changes):
    """Save some arrays of the entry replaced (by a value or a function of the corpus) or left out (None)."""
    def damage(entry, corpus):
        for name, value in changes.items():
            if value is None:
                (entry / f"{name}.npy").unlink()
            else:
                np.save(entry / f"{name}.npy", value(corpus) if callable(value) else value, allow_pickle=True)
    return damage


def write_bytes(cut, name="src_ids"):
    def damage(entry, corpus):
        path = entry / f"{name}.npy"
        path.write_bytes(cut(path.read_bytes()))
    return damage


def sparse_giant_ids(entry, corpus):
    """A valid header for 25e9 ids and offsets that index them, the ids file a 100 GB hole taking no disk:
    reading its values to check them would take minutes."""
    count = 25 * 10**9
    np.save(entry / "src_offsets.npy", np.array([0] * (len(corpus.src_offsets) - 1) + [count], dtype=np.int64))
    path = entry / "src_ids.npy"
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "<i4", "fortran_order": False, "shape": (count,)})
        handle.truncate(handle.tell() + 4 * count)


def replace_entry_by_a_file(entry, corpus):
    shutil.rmtree(entry)
    entry.write_bytes(b"not a cache")


def changed(name, index, value):
    def change(corpus):
        array = np.array(getattr(corpus, name))
        array[index] = value
        return array
    return change


# kind of damage -> (how to do it, words of the reason given in the warning)
DAMAGE = {
    "truncated": (write_bytes(lambda blob: blob[: len(blob) // 2]), "src_ids.npy: truncated"),
    "empty": (write_bytes(lambda blob: b"", "tgt_offsets"), "tgt_offsets.npy: ValueError: EOF"),
    "not a .npy file": (write_bytes(lambda blob: b"garbage" * 50), "src_ids.npy: ValueError"),
    "header bit flips": (write_bytes(lambda blob: blob[:12] + bytes(b ^ 0xFF for b in blob[12:40]) + blob[40:]),
                         "src_ids.npy: "),
    "object array": (write_arrays(src_ids=np.array([1, "x", None], dtype=object)), "holds Python objects"),
    "missing array": (write_arrays(tgt_offsets=None), "tgt_offsets.npy: FileNotFoundError"),
    "a file, not a directory": (replace_entry_by_a_file, "NotADirectoryError"),
    "sparse giant ids": (sparse_giant_ids, "src_ids.npy: 25000000000 entries, more than its corpus files can give"),
    "float ids": (write_arrays(src_ids=lambda c: np.array(c.src_ids, dtype=np.float64)), "expected 1-D int32/int64"),
    "big-endian ids": (write_arrays(src_ids=lambda c: np.array(c.src_ids, dtype=">i4")), "expected 1-D int32/int64"),
    "2-D offsets": (write_arrays(tgt_offsets=lambda c: np.array(c.tgt_offsets)[None]), "expected 1-D int32/int64"),
    "offsets not from 0": (write_arrays(src_offsets=changed("src_offsets", 0, 1)), "offsets do not index"),
    "offsets decreasing": (write_arrays(src_offsets=changed("src_offsets", 5, 0)), "offsets do not index"),
    "offsets past the ids": (write_arrays(tgt_offsets=changed("tgt_offsets", -1, 10**6)), "offsets do not index"),
    "no offsets": (write_arrays(src_offsets=np.zeros(0, dtype=np.int64),
                                tgt_offsets=np.zeros(0, dtype=np.int64)), "offsets do not index"),
    "sentence counts differ": (write_arrays(src_offsets=lambda c: np.array(c.src_offsets[:-1]),
                                            src_ids=lambda c: np.array(c.src_ids[:c.src_offsets[-2]])),
                               "59 source but 60 target sentences"),
    "id too large": (write_arrays(tgt_ids=changed("tgt_ids", 7, 34)), "tgt: ids outside [0, 34)"),
    "negative id": (write_arrays(src_ids=changed("src_ids", 0, -1)), "src: ids outside [0, 34)"),
}


def assert_same_corpus(a, b):
    for name in ("src_ids", "src_offsets", "tgt_ids", "tgt_offsets"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert getattr(a, name).dtype == getattr(b, name).dtype


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_cache_is_rebuilt(cached_corpus, tmp_path, caplog, kind):
    data, tok, fresh = cached_corpus
    cache = tmp_path / "cache"

    def encode():
        return encode_parallel(data / "train.src", data / "train.tgt", tok, tok, max_len=64, cache_dir=cache)

    assert_same_corpus(encode(), fresh)
    [entry] = [path for path in cache.iterdir() if path.is_dir()]
    damage, reason = DAMAGE[kind]
    damage(entry, fresh)
    with caplog.at_level("WARNING"):
        assert_same_corpus(encode(), fresh)
    assert f"cache {entry} is invalid (" in caplog.text and "); rebuilding it" in caplog.text
    assert reason in caplog.text
    # rebuilt in place; besides it only its lock file, no temporary files
    assert sorted(path.name for path in cache.iterdir()) == sorted([entry.name, f".{entry.name}.lock"])
    assert entry.is_dir()
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert_same_corpus(encode(), fresh)  # the rebuilt cache is valid
    assert "invalid" not in caplog.text


# 10. Lines end at "\n" only

def test_read_lines_splits_at_newline_only(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes("a\u2028b\x85c\x0bd\x1ce\rf\r\n\r\nlast\r".encode("utf-8"))
    assert read_lines(path) == ["a\u2028b\x85c\x0bd\x1ce\rf", "", "last"]


def test_training_logs_the_warmup_and_oversized_sentence_warnings(tmp_path):
    from transformer_mt import train

    data = write_reverse_corpus(tmp_path / "data", n_train=100, n_valid=5, n_test=5)
    # Sentences of 3-8 words need up to 9 padded target tokens: a budget of 6 is too small for some.
    config = tiny_config(data, max_steps=2, validate_every=2, warmup_steps=50, batch_tokens=6)
    train(config, tmp_path / "run", show_progress=False)
    log_text = (tmp_path / "run" / "train.log").read_text()
    assert "training.warmup_steps (50) > training.max_steps (2)" in log_text
    assert "training sentences are longer than training.batch_tokens=6" in log_text


# Counts and numbers typed by people: the digits 0-9 only, on the command line, in --set and in form fields alike
# (int() and float() also read "١٢" and "１２", which YAML and JSON never give as numbers).
_OTHER_DIGITS = st.characters(categories=["Nd"]).filter(lambda c: not c.isascii())


@settings(max_examples=60, deadline=None)
@given(st.integers(-10**30, 10**30), st.floats(allow_nan=False, allow_infinity=False))
def test_numbers_written_with_ascii_digits_are_read(n, x):
    assert parse_whole_number(f" {n} ") == n and parse_number(str(n)) == float(n)
    assert parse_number(repr(x)) == x and parse_whole_number(repr(x)) is None  # repr of a float has "." or "e"


@settings(max_examples=60, deadline=None)
@given(st.text(st.sampled_from("0123456789.-+e"), max_size=6), _OTHER_DIGITS, st.integers(0, 6))
def test_numbers_with_other_scripts_digits_are_refused(text, digit, at):
    text = text[:at] + digit + text[at:]
    assert parse_whole_number(text) is None and parse_number(text) is None


@pytest.mark.parametrize("option, value", [("--beam-size", "\u0661\u0662"), ("--beam-size", "\uff15"),
                                           ("--beam-size", "\u00b2"), ("--nbest", "--5"),
                                           ("--temperature", "\u0661.\u0665"), ("--top-p", "\u00bd")])
def test_cli_refuses_the_numbers_that_set_refuses(tmp_path, option, value):
    result = run_cli("translate", "--model", tmp_path, f"{option}={value}", "a")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"argument {option}: {value!r} is not a" in result.stderr.splitlines()[-1]
    key = {"--beam-size": "decoding.beam_size", "--nbest": "decoding.beam_size", "--temperature": "training.lr",
           "--top-p": "training.lr"}[option]
    with pytest.raises(TransformerMTError, match=rf"key '{key}' must be an? (integer|number)"):
        load_config(write(tmp_path, "model: {}\n"), parse_overrides([f"{key}={value}"]))


@pytest.mark.parametrize("written, hint", [("1e-300", "1.0e-300"), ("5e-4", "5.0e-4"), ("1.5e3", "1.5e+3"),
                                           ("2E5", "2.0e+5")])
def test_a_number_yaml_reads_as_text_gets_the_spelling_it_reads(tmp_path, written, hint):
    with pytest.raises(TransformerMTError, match=re.escape(f"write {hint}: a dot, and a sign after the e")):
        load_config(write(tmp_path, "model: {}\n"), parse_overrides([f"training.lr={written}"]))
    assert load_config(write(tmp_path, "model: {}\n"), parse_overrides([f"training.lr={hint}"])).training.lr > 0


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=-1e300, max_value=-1e-300), st.sampled_from(["{:e}", "{:.3E}", "{!r}", "{:g}"]))
def test_a_negative_number_in_any_notation_is_a_value_not_an_option(value, notation):
    """"-1e-1" and "-1E+5" are numbers (argparse took them for unknown options: "expected one argument"), as are
    "-1" and "-.5"; the option's own check then judges the value."""
    from transformer_mt.cli import build_parser

    written = notation.format(value)
    args = build_parser().parse_args(["translate", "--model", "run", "--length-penalty", written, "text"])
    assert args.length_penalty == float(written)


def test_minus_infinity_reaches_the_options_own_message(small_run):
    result = run_cli("translate", "--model", small_run[2], "--length-penalty", "-inf", "text")
    assert_clean_error(result, "--length-penalty")
    assert "expected one argument" not in result.stderr
