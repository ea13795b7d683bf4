"""MetricsWriter: metrics.jsonl as before, TensorBoard event files with the expected scalar tags."""

import json
import sys

import pytest

from transformer_mt.errors import TransformerMTError
from transformer_mt.training.metrics import MetricsWriter

TRAIN = [{"type": "train", "step": step, "epoch": 1, "loss": 6.0 - step / 10, "lr": step * 1e-4,
          "tokens_per_s": 2500.0 + step, "grad_norm": 1.5} for step in (10, 20, 30)]
VALID = {"type": "valid", "step": 30, "epoch": 1, "loss": 5.2, "nll": 5.0, "ppl": 148.4, "bleu": 3.25,
         "chrf": 20.5, "seconds": 1.2, "best_bleu": 3.25}
NONFINITE = {"type": "nonfinite", "step": 31, "in_row": 1, "total": 1}


def test_jsonl_lines_are_the_records_as_before(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"type": "train", "step": 5}\n')  # a resumed run's earlier lines
    records = [*TRAIN, VALID, NONFINITE, {"type": "valid", "step": 40, "loss": float("nan"), "note": "ü"}]
    with MetricsWriter(tmp_path, tensorboard=False) as writer:
        assert not writer.tensorboard
        for record in records:
            writer.write(record)
    expected = '{"type": "train", "step": 5}\n' + "".join(json.dumps(record) + "\n" for record in records)
    assert (tmp_path / "metrics.jsonl").read_text(encoding="utf-8") == expected
    assert not (tmp_path / "tensorboard").exists()


def test_a_metrics_file_that_cannot_be_written_is_one_clear_error(tmp_path):
    (tmp_path / "metrics.jsonl").mkdir()  # not writable as a file, even for root
    writer = MetricsWriter(tmp_path, tensorboard=False)
    with pytest.raises(TransformerMTError) as error:
        writer.write(TRAIN[0])
    assert str(error.value) == (f"could not write {tmp_path / 'metrics.jsonl'}: Is a directory; free disk space or "
                                f"make the run directory writable, then resume (the last checkpoint is intact)")


def read_events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def test_tensorboard_gets_the_train_and_validation_scalars_and_texts(tmp_path):
    pytest.importorskip("tensorboard")
    with MetricsWriter(tmp_path) as writer:  # "auto": on, tensorboard is installed
        assert writer.tensorboard
        for record in (*TRAIN, VALID, NONFINITE):
            writer.write(record)
        writer.add_text("valid/translations", "**source** ein Hund\n\n**translation** a dog", step=30)
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 1
    events = read_events(tmp_path)
    assert set(events.Tags()["scalars"]) == {"train/loss", "train/lr", "train/tokens_per_s", "train/grad_norm",
                                             "valid/loss", "valid/ppl", "valid/bleu", "valid/chrf"}
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [10, 20, 30]
    assert [e.value for e in loss] == pytest.approx([5.0, 4.0, 3.0])
    assert [(e.step, e.value) for e in events.Scalars("valid/bleu")] == [(30, pytest.approx(3.25))]
    assert events.Scalars("train/lr")[-1].value == pytest.approx(3e-3)
    text = events.Tensors("valid/translations/text_summary")
    assert text[0].step == 30 and b"ein Hund" in text[0].tensor_proto.string_val[0]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 5  # every record, also in JSONL


def test_a_resumed_run_hides_the_steps_after_its_checkpoint(tmp_path):
    pytest.importorskip("tensorboard")
    with MetricsWriter(tmp_path, tensorboard=True) as writer:
        for record in TRAIN:
            writer.write(record)
    with MetricsWriter(tmp_path, tensorboard=True, purge_step=20) as writer:  # resumed from step 20
        writer.write({**TRAIN[1], "loss": 1.0})
    assert [(e.step, e.value) for e in read_events(tmp_path).Scalars("train/loss")] == [
        (10, pytest.approx(5.0)), (20, pytest.approx(1.0))]


def test_without_the_tensorboard_package_auto_is_off_and_true_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import raises ImportError
    writer = MetricsWriter(tmp_path, tensorboard="auto")
    assert not writer.tensorboard
    writer.write(TRAIN[0])
    writer.add_text("valid/translations", "ignored", step=10)
    writer.close()
    assert (tmp_path / "metrics.jsonl").read_text() == json.dumps(TRAIN[0]) + "\n"
    with pytest.raises(TransformerMTError, match=r"pip install 'transformer-mt\[plots\]'"):
        MetricsWriter(tmp_path, tensorboard=True)
    with pytest.raises(ValueError):
        MetricsWriter(tmp_path, tensorboard="yes")


def test_training_writes_tensorboard_events_and_validation_translations(tmp_path):
    """Trainer -> MetricsWriter: the scalars of training and validation, and the translations text."""
    from conftest import tiny_config, write_reverse_corpus
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from transformer_mt import train

    data = write_reverse_corpus(tmp_path / "data", n_train=200, n_valid=5, n_test=5)
    train(tiny_config(data, max_steps=4, validate_every=2), tmp_path / "run", show_progress=False)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "train/lr", "train/tokens_per_s", "train/grad_norm", "valid/loss", "valid/ppl",
            "valid/bleu", "valid/chrf"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("valid/bleu")] == [2, 4]
    assert any("valid/translations" in tag for tag in tags["tensors"])
    off = tmp_path / "off"
    train(tiny_config(data, max_steps=2, validate_every=2, tensorboard=False), off, show_progress=False)
    assert not (off / "tensorboard").exists() and (off / "metrics.jsonl").is_file()


def test_event_files_are_never_written_through_a_link_planted_as_the_tensorboard_folder(tmp_path):
    """A run directory copied from someone may hold tensorboard -> elsewhere: refused, nothing lands there."""
    pytest.importorskip("tensorboard")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "tensorboard").symlink_to(elsewhere)
    with pytest.raises(TransformerMTError, match="tensorboard is a symbolic link"):
        MetricsWriter(run_dir, tensorboard=True)
    assert list(elsewhere.iterdir()) == []
    (run_dir / "tensorboard").unlink()
    (run_dir / "tensorboard").write_text("a file")
    with pytest.raises(TransformerMTError, match="is not a folder"):
        MetricsWriter(run_dir, tensorboard=True)
