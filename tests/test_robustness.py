"""Bad input: one clear message (file, line, key), a non-zero exit status, no traceback, nothing lost."""

import pytest
import torch
import yaml
from conftest import assert_clean_error, run_cli, tiny_config, write_reverse_corpus

from transformer_mt import Translator, train
from transformer_mt.data.batches import encode_parallel, read_lines
from transformer_mt.errors import TransformerMTError


def config_file(tmp_path, data):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(data).to_dict()), encoding="utf-8")
    return path


def test_line_count_mismatch_names_both_files_and_counts(tmp_path):
    data = write_reverse_corpus(tmp_path / "data", n_train=50, n_valid=5, n_test=5)
    lines = (data / "train.tgt").read_text().splitlines()
    (data / "train.tgt").write_text("\n".join(lines[:-3]) + "\n")
    result = run_cli("train", "--config", config_file(tmp_path, data), "--output-dir", tmp_path / "run")
    assert_clean_error(result, "train.src has 50 lines", "train.tgt has 47")


def test_invalid_utf8_names_the_line(tmp_path):
    data = write_reverse_corpus(tmp_path / "data", n_train=50, n_valid=5, n_test=5)
    raw = (data / "train.src").read_bytes().split(b"\n")
    raw[6] = b"ba \xff\xfe de"
    (data / "train.src").write_bytes(b"\n".join(raw))
    result = run_cli("train", "--config", config_file(tmp_path, data), "--output-dir", tmp_path / "run")
    assert_clean_error(result, "train.src is not valid UTF-8: line 7")


def test_empty_and_overlong_pairs_are_dropped_together_and_counted(tmp_path, caplog):
    from transformer_mt.config import TokenizerConfig
    from transformer_mt.data.tokenizer import build_tokenizers

    data = write_reverse_corpus(tmp_path / "data", n_train=100, n_valid=5, n_test=5)
    src = (data / "train.src").read_text().splitlines()
    tgt = (data / "train.tgt").read_text().splitlines()
    src[3] = ""  # empty source: its target must go too
    tgt[10] = ""
    src[20] = " ".join(["ba"] * 80)  # longer than max_len
    (data / "train.src").write_text("\n".join(src) + "\n")
    (data / "train.tgt").write_text("\n".join(tgt) + "\n")
    run = tmp_path / "run"
    run.mkdir()
    tok, _ = build_tokenizers(run, TokenizerConfig(model_type="word", vocab_size=34), data / "train.src",
                              data / "train.tgt")
    with caplog.at_level("WARNING"):
        corpus = encode_parallel(data / "train.src", data / "train.tgt", tok, tok, max_len=64)
    assert len(corpus) == 97
    assert "skipped 2 pairs with an empty side and 1 pairs longer than data.max_len=64" in caplog.text
    kept = [i for i in range(100) if i not in (3, 10, 20)]
    for row, i in enumerate(kept):  # alignment is preserved
        assert tok.decode([corpus.src(row).tolist()])[0] == src[i]
        assert tok.decode([corpus.tgt(row).tolist()])[0] == tgt[i]


def test_missing_data_file(tmp_path):
    data = write_reverse_corpus(tmp_path / "data", n_train=50, n_valid=5, n_test=5)
    (data / "valid.tgt").unlink()
    result = run_cli("train", "--config", config_file(tmp_path, data), "--output-dir", tmp_path / "run")
    assert_clean_error(result, "valid.tgt", "does not exist")


def test_vocab_size_too_large_for_corpus(tmp_path):
    data = write_reverse_corpus(tmp_path / "data", n_train=50, n_valid=5, n_test=5)
    config = tiny_config(data).to_dict()
    config["tokenizer"] = {"model_type": "bpe", "vocab_size": 5000}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_cli("train", "--config", path, "--output-dir", tmp_path / "run")
    assert_clean_error(result, "tokenizer.vocab_size 5000 is too large")


def test_translate_with_missing_run_directory(tmp_path):
    assert_clean_error(run_cli("translate", "--model", tmp_path / "nope", "hello"), "nope does not exist")


def test_translate_with_truncated_checkpoint(small_run, tmp_path):
    tmp, data, run = small_run
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    for name in ("checkpoint_best.pt", "checkpoint_last.pt"):
        blob = (broken / name).read_bytes()
        (broken / name).write_bytes(blob[: len(blob) // 3])
    assert_clean_error(run_cli("translate", "--model", broken, "ba de"), "corrupt or truncated")


def test_checkpoint_from_an_incompatible_run(small_run, tmp_path):
    tmp, data, run = small_run
    import shutil

    other = tmp_path / "other"
    shutil.copytree(run, other)
    state = torch.load(other / "checkpoint_best.pt", weights_only=False)
    state["config"]["model"]["d_model"] = 64  # weights no longer fit the described model
    torch.save(state, other / "checkpoint_best.pt")
    assert_clean_error(run_cli("translate", "--model", other, "ba de"), "does not match the model")


def test_input_longer_than_max_positions_is_translated(small_run):
    tmp, data, run = small_run
    translator = Translator.from_run(run)
    translator.model.src_embed.positions.table = translator.model.src_embed.positions.table[:8]
    out = translator.translate([" ".join(["ba", "de"] * 20)], beam_size=2, max_length_b=30)
    assert isinstance(out[0], str)


def test_invalid_utf8_on_stdin(small_run):
    tmp, data, run = small_run
    result = run_cli("translate", "--model", run, input_bytes=b"ba de\n\xff\xfe\n")
    assert_clean_error(result, "standard input is not valid UTF-8 at line 2")


def test_non_finite_losses_are_skipped_then_stop(tmp_path, monkeypatch):
    from transformer_mt.training import trainer as trainer_module

    data = write_reverse_corpus(tmp_path / "data", n_train=100, n_valid=5, n_test=5)
    original = trainer_module.Trainer.compute_loss
    calls = {"n": 0}

    def sometimes_nan(self, batch, model):
        calls["n"] += 1
        loss, nll = original(self, batch, model)
        return (loss * float("nan"), nll) if calls["n"] in (2, 3) else (loss, nll)

    monkeypatch.setattr(trainer_module.Trainer, "compute_loss", sometimes_nan)
    summary = train(tiny_config(data, max_steps=4, validate_every=4), tmp_path / "run", show_progress=False)
    assert summary["step"] == 4  # two skipped updates did not count as steps
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count('"nonfinite"') == 2

    monkeypatch.setattr(trainer_module.Trainer, "compute_loss",
                        lambda self, batch, model: tuple(x * float("nan") for x in original(self, batch, model)))
    with pytest.raises(TransformerMTError, match="3 updates in a row had a non-finite loss"):
        train(tiny_config(data, max_steps=10, validate_every=10, max_nonfinite_in_row=3), tmp_path / "run2",
              show_progress=False)


def test_read_lines_handles_crlf_bom_and_no_final_newline(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes("\ufeffone\r\ntwo\r\nthree".encode("utf-8"))
    assert read_lines(path) == ["one", "two", "three"]


def test_fixing_a_config_mistake_before_any_checkpoint_is_not_refused(tmp_path):
    data = write_reverse_corpus(tmp_path / "data", n_train=100, n_valid=5, n_test=5)
    bad = tiny_config(tmp_path / "wrong-folder", max_steps=2, validate_every=2)
    with pytest.raises(TransformerMTError, match="does not exist"):
        train(bad, tmp_path / "run", show_progress=False)
    summary = train(tiny_config(data, max_steps=2, validate_every=2), tmp_path / "run", show_progress=False)
    assert summary["step"] == 2
