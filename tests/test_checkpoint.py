"""Checkpoint files: atomic writes, clear errors for damaged files, averaging."""

import os

import pytest
import torch

from transformer_mt import checkpoint as ckpt
from transformer_mt.errors import TransformerMTError


def fake_state(value: float) -> dict:
    return {"format_version": ckpt.FORMAT_VERSION, "config": {}, "step": int(value),
            "model": {"w": torch.full((2, 3), value), "b": torch.tensor([value, 2 * value])}}


def test_average_equals_mean_of_inputs(tmp_path):
    paths = []
    for i, value in enumerate([1.0, 2.0, 6.0]):
        paths.append(tmp_path / f"c{i}.pt")
        ckpt.atomic_save(fake_state(value), paths[-1])
    averaged = ckpt.average_checkpoints(paths, tmp_path / "avg.pt")
    assert torch.allclose(averaged["model"]["w"], torch.full((2, 3), 3.0))
    assert torch.allclose(averaged["model"]["b"], torch.tensor([3.0, 6.0]))
    reloaded = ckpt.load_checkpoint(tmp_path / "avg.pt")
    assert torch.equal(reloaded["model"]["w"], averaged["model"]["w"])


def test_average_of_random_state_dicts_is_elementwise_mean():
    g = torch.Generator().manual_seed(0)
    dicts = [{"a": torch.randn(4, 5, generator=g), "b": torch.randn(3, generator=g)} for _ in range(4)]
    avg = ckpt.average_state_dicts(dicts)
    for key in ("a", "b"):
        assert torch.allclose(avg[key], torch.stack([d[key] for d in dicts]).mean(0), atol=1e-6)


def test_atomic_save_replaces_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "ck.pt"
    ckpt.atomic_save(fake_state(1.0), path)
    ckpt.atomic_save(fake_state(2.0), path)
    assert ckpt.load_checkpoint(path)["step"] == 2
    assert os.listdir(tmp_path) == ["ck.pt"]


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    ckpt.atomic_save(fake_state(1.0), path)

    def disk_full(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(TransformerMTError, match="No space left on device.*previous checkpoint.*unchanged"):
        ckpt.atomic_save(fake_state(2.0), path)
    monkeypatch.undo()
    assert ckpt.load_checkpoint(path)["step"] == 1
    assert os.listdir(tmp_path) == ["ck.pt"]


@pytest.mark.parametrize("damage, message", [("truncate", "is corrupt or truncated"),
                                             ("garbage", "is not a PyTorch file"), ("empty", "is empty")])
def test_damaged_checkpoint_gives_a_clear_error(tmp_path, damage, message):
    path = tmp_path / "ck.pt"
    ckpt.atomic_save(fake_state(1.0), path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint at all" * 10)
    else:
        path.write_bytes(b"")
    with pytest.raises(TransformerMTError, match=f"checkpoint {path} {message}"):
        ckpt.load_checkpoint(path)


def test_foreign_file_and_version_mismatch(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": 1}, path)
    with pytest.raises(TransformerMTError, match="not a transformer-mt checkpoint"):
        ckpt.load_checkpoint(path)
    state = fake_state(1.0)
    state["format_version"] = 99
    torch.save(state, path)
    with pytest.raises(TransformerMTError, match="format version 99"):
        ckpt.load_checkpoint(path)


def test_training_validates_its_average_as_decoding_the_average_file_scores_it(tmp_path):
    # The log's advice (--checkpoint average or best) rests on this figure: it must be the average's own
    # validation BLEU (what decoding checkpoint_average.pt gives), and the trained weights must be untouched.
    import json

    from conftest import tiny_config, write_reverse_corpus

    from transformer_mt import Trainer, Translator
    from transformer_mt.scoring import score

    data = write_reverse_corpus(tmp_path / "data", n_train=200, n_valid=8, n_test=5)
    trainer = Trainer(tiny_config(data, max_steps=9, validate_every=3, average_last_n=3), tmp_path / "run",
                      show_progress=False)
    trainer.run()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    average = [r for r in records if r["type"] == "valid_average"]
    assert len(average) == 1 and average[0]["checkpoints"] == 3
    best = max(r["bleu"] for r in records if r["type"] == "valid")
    assert average[0]["best_bleu"] == best

    translator = Translator.from_run(tmp_path / "run", checkpoint="average", device="cpu")
    sources = (data / "valid.src").read_text().splitlines()
    references = (data / "valid.tgt").read_text().splitlines()
    assert score(translator.translate(sources, beam_size=1), references)["bleu"] == pytest.approx(average[0]["bleu"])
    advice = "average" if average[0]["bleu"] > best else "best (the default)"
    assert f"decode with --checkpoint {advice}" in (tmp_path / "run" / "train.log").read_text()
    # the model holds its trained weights again afterwards (those of the last checkpoint), not the average
    last = ckpt.load_checkpoint(tmp_path / "run" / "checkpoint_last.pt")["model"]
    assert all(torch.equal(value, last[key]) for key, value in trainer.model.state_dict().items())
