"""Opening a checkpoint never runs code: crafted files are refused by every command that reads one."""

import shutil

import numpy as np
import pytest
import torch
import yaml
from conftest import Payload, run_cli, tiny_config, write_reverse_corpus

from transformer_mt import Translator, train
from transformer_mt import checkpoint as ckpt
from transformer_mt.errors import TransformerMTError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("safe")
    data = write_reverse_corpus(tmp / "data", n_train=200, n_valid=5, n_test=5)
    config = tiny_config(data, max_steps=4, validate_every=2)
    train(config, tmp / "run", show_progress=False)
    config_path = tmp / "config.yaml"
    config_path.write_text(yaml.safe_dump(config.to_dict()), encoding="utf-8")
    return tmp, data, config_path, tmp / "run"


def test_every_checkpoint_a_run_writes_loads_with_the_safe_unpickler(trained):
    _, _, _, run = trained
    names = sorted(p.name for p in run.glob("checkpoint_*.pt"))
    assert "checkpoint_last.pt" in names and "checkpoint_best.pt" in names
    for name in names:
        state = torch.load(run / name, weights_only=True)
        assert state["format_version"] == ckpt.FORMAT_VERSION
        assert set(state["tokenizer_sha256"]) == {"src", "tgt"}


def plant(run, names, marker, hidden):
    """Replace checkpoints ``names`` of ``run`` with a payload file, or hide the payload inside the real one."""
    for name in names:
        if hidden:
            state = torch.load(run / name, weights_only=True)
            state["notes"] = Payload(marker)  # one extra key: the rest of the checkpoint is genuine
        else:
            state = Payload(marker)
        torch.save(state, run / name)


@pytest.mark.parametrize("hidden", [False, True], ids=["whole-file", "hidden-key"])
@pytest.mark.parametrize("command", ["translate", "evaluate", "average", "resume"])
def test_a_crafted_checkpoint_never_runs_its_payload(trained, tmp_path, command, hidden):
    tmp, data, config_path, run = trained
    victim = tmp_path / "run"
    shutil.copytree(run, victim)
    marker = tmp_path / "payload-ran"
    if command == "translate":
        plant(victim, ["checkpoint_best.pt"], marker, hidden)
        result = run_cli("translate", "--model", victim, "ba de")
    elif command == "evaluate":
        plant(victim, ["checkpoint_best.pt"], marker, hidden)
        result = run_cli("evaluate", "--model", victim, "--split", "test")
    elif command == "average":
        plant(victim, [p.name for p in victim.glob("checkpoint_step*.pt")][:1], marker, hidden)
        result = run_cli("average", "--model", victim, "--last", "2")
    else:
        plant(victim, ["checkpoint_last.pt"], marker, hidden)
        result = run_cli("train", "--config", config_path, "--output-dir", victim, "--set", "training.max_steps=6")
    assert not marker.exists(), "the checkpoint's payload ran"
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "may be unsafe" in last, last
    assert "system" in last  # names what the file wanted to run
    assert "upgrade-checkpoint" not in last  # and never suggests loading it some other way


def make_format1(path):
    """Turn a checkpoint into what transformer-mt wrote before format 2 (numpy RNG state pickled)."""
    state = torch.load(path, weights_only=True)
    state["format_version"] = 1
    state.pop("tokenizer_sha256", None)
    state.pop("log_positions", None)
    if "rng" in state:
        state["rng"]["numpy"] = ckpt.numpy_rng_state_from_plain(state["rng"]["numpy"])
    torch.save(state, path)


def test_old_checkpoint_is_refused_until_upgraded_explicitly(trained, tmp_path):
    tmp, data, config_path, run = trained
    old = tmp_path / "old"
    shutil.copytree(run, old)
    expected = Translator.from_run(run).translate(["ba de gi", "ko mu"])
    for path in old.glob("checkpoint_*.pt"):
        make_format1(path)
    (old / "run.json").unlink()  # a run directory of the earlier version had no marker
    with pytest.raises(TransformerMTError, match=r"before checkpoint format 2.*upgrade-checkpoint --trust"):
        Translator.from_run(old)  # checkpoint_best: weights only, loadable safely but of the old format
    with pytest.raises(TransformerMTError, match=r"before checkpoint format 2 \(it pickles a numpy array\).*"
                                                 r"upgrade-checkpoint --trust"):
        Translator.from_run(old, checkpoint="last")  # checkpoint_last: the pickled numpy RNG state

    refused = run_cli("upgrade-checkpoint", old / "checkpoint_best.pt")
    assert refused.returncode == 2 and "--trust" in refused.stderr.strip().splitlines()[-1]
    assert torch.load(old / "checkpoint_best.pt", weights_only=False)["format_version"] == 1  # untouched

    done = run_cli("upgrade-checkpoint", "--trust", old)
    assert done.returncode == 0, done.stderr
    assert (old / "run.json").exists() and (old / "checkpoint_best.pt.format1").exists()
    assert Translator.from_run(old).translate(["ba de gi", "ko mu"]) == expected
    assert "already" in run_cli("upgrade-checkpoint", old / "checkpoint_best.pt").stdout
    # The upgraded run resumes: the numpy RNG state survived the conversion.
    resumed = run_cli("train", "--config", config_path, "--output-dir", old, "--set", "training.max_steps=6")
    assert resumed.returncode == 0, resumed.stderr
    assert ckpt.load_checkpoint(old / "checkpoint_last.pt")["step"] == 6


def test_upgrading_never_runs_code_even_with_trust(trained, tmp_path):
    tmp, data, config_path, run = trained
    old = tmp_path / "old"
    shutil.copytree(run, old)
    make_format1(old / "checkpoint_last.pt")
    state = torch.load(old / "checkpoint_last.pt", weights_only=False)
    marker = tmp_path / "payload-ran"
    state["notes"] = Payload(marker)  # an old-format file with a payload beside the numpy state
    torch.save(state, old / "checkpoint_last.pt")
    result = run_cli("upgrade-checkpoint", "--trust", old / "checkpoint_last.pt")
    assert not marker.exists()
    assert result.returncode == 2 and "cannot be upgraded" in result.stderr and "system" in result.stderr
    assert not (old / "checkpoint_last.pt.format1").exists()  # left as it was


def test_numpy_rng_state_round_trips_through_plain_values():
    rng = np.random.RandomState(7)
    rng.standard_normal()  # leaves a cached gaussian in the state
    state = rng.get_state()
    restored = ckpt.numpy_rng_state_from_plain(ckpt.numpy_rng_state_to_plain(state))
    other = np.random.RandomState()
    other.set_state(restored)
    assert np.array_equal(other.standard_normal(5), rng.standard_normal(5))


def test_a_tokenizer_from_another_run_is_refused_even_with_the_same_size(trained, tmp_path):
    tmp, data, config_path, run = trained
    swapped = tmp_path / "swapped"
    shutil.copytree(run, swapped)
    # Another run on different text: a tokenizer of the same size whose ids mean other pieces.
    other_data = write_reverse_corpus(tmp_path / "other", n_train=200, n_valid=5, n_test=5, seed=5)
    lines = (other_data / "train.src").read_text().replace("ba", "zu").replace("ko", "xy")
    (other_data / "train.src").write_text(lines)
    train(tiny_config(other_data, max_steps=1, validate_every=1), tmp_path / "other_run", show_progress=False)
    shutil.copy(tmp_path / "other_run" / "spm.model", swapped / "spm.model")
    with pytest.raises(TransformerMTError, match="spm.model is not the one checkpoint .* was trained with"):
        Translator.from_run(swapped)
    result = run_cli("train", "--config", config_path, "--output-dir", swapped, "--set", "training.max_steps=6")
    assert result.returncode == 2 and "is not the one checkpoint" in result.stderr, result.stderr


def test_average_refuses_checkpoints_of_different_runs(trained, tmp_path):
    tmp, data, config_path, run = trained
    other = tmp_path / "other"
    train(tiny_config(data, max_steps=2, validate_every=2, lr=0.001), other, show_progress=False)
    paths = [run / "checkpoint_best.pt", other / "checkpoint_best.pt"]
    with pytest.raises(TransformerMTError, match=r"different configs \(training.lr"):
        ckpt.average_checkpoints(paths, tmp_path / "avg.pt")
    bigger = tmp_path / "bigger"
    config = tiny_config(data, max_steps=2, validate_every=2).to_dict()
    config["tokenizer"]["vocab_size"] = 30
    from transformer_mt.config import config_from_dict

    train(config_from_dict(config), bigger, show_progress=False)
    with pytest.raises(TransformerMTError, match="different configs"):
        ckpt.average_checkpoints([run / "checkpoint_best.pt", bigger / "checkpoint_best.pt"], tmp_path / "avg.pt")
    # Same config, another training: a different tokenizer (SentencePiece shuffles its input).
    again = tmp_path / "again"
    train(tiny_config(data, max_steps=4, validate_every=2), again, show_progress=False)
    if ckpt.file_sha256(again / "spm.model") != ckpt.file_sha256(run / "spm.model"):
        with pytest.raises(TransformerMTError, match="different tokenizers"):
            ckpt.average_checkpoints([run / "checkpoint_best.pt", again / "checkpoint_best.pt"], tmp_path / "avg.pt")
    # Same config and tokenizer (the run's own step checkpoints): averaged.
    ckpt.average_checkpoints(sorted(run.glob("checkpoint_step*.pt")), tmp_path / "avg.pt")
    assert ckpt.load_checkpoint(tmp_path / "avg.pt")["format_version"] == ckpt.FORMAT_VERSION


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_checkpoint_with_non_finite_weights_is_refused_naming_file_and_tensor(trained, tmp_path, value):
    _, _, _, run = trained
    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    state = ckpt.load_checkpoint(bad / "checkpoint_best.pt")
    name = [k for k in state["model"] if k.endswith("norm.bias")][-1]  # a tensor no other shares
    state["model"][name].view(-1)[:3] = value
    ckpt.atomic_save(state, bad / "checkpoint_best.pt")
    with pytest.raises(TransformerMTError, match=fr"checkpoint_best.pt: weight {name} holds 3 of .* NaN or infinite"):
        Translator.from_run(bad)
    result = run_cli("translate", "--model", bad, "ba de")
    assert result.returncode == 2 and "Traceback" not in result.stderr and result.stdout == ""
    assert str(bad / "checkpoint_best.pt") in result.stderr and name in result.stderr


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int8, torch.uint8, torch.bool, torch.complex64])
def test_a_checkpoint_whose_weights_are_not_floating_point_is_refused(trained, tmp_path, dtype):
    """Loading converts an integer tensor into a float weight silently: a model of integers translated nonsense
    with exit 0 (fourth probe). Every weight of these models is floating point."""
    _, _, _, run = trained
    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    state = ckpt.load_checkpoint(bad / "checkpoint_best.pt")
    name = sorted(state["model"])[len(state["model"]) // 2]
    state["model"][name] = state["model"][name].to(dtype)
    ckpt.atomic_save(state, bad / "checkpoint_best.pt")
    with pytest.raises(TransformerMTError, match=fr"weight {name} is of type {dtype}, where every weight"):
        Translator.from_run(bad)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=30, deadline=None)
@given(stored=st.integers(1, 64), rows=st.integers(1, 10**6), nested=st.booleans())
def test_a_view_with_more_values_than_its_storage_is_refused_before_it_is_used(tmp_path_factory, stored, rows,
                                                                              nested):
    """torch.save keeps an expand()ed view as its few stored bytes: loading must refuse it, not let the first
    operation on it allocate rows x stored values (the fourth probe's 110 kB file asked for 8 TB)."""
    path = tmp_path_factory.mktemp("view") / "c.pt"
    view = torch.zeros(stored).expand(rows, stored)
    state = {"model": {"w": view}} if nested else {"optimizer": {"state": {0: {"exp_avg": [view]}}}}
    torch.save(state, path)
    with open(path, "rb") as handle:
        if rows == 1:  # a view of all its values, once: an ordinary tensor
            ckpt.load_torch_file(handle, "checkpoint c.pt")
            return
        with pytest.raises(TransformerMTError, match=rf"c.pt holds a tensor of {rows * stored:,} values .* not loaded"):
            ckpt.load_torch_file(handle, "checkpoint c.pt")


@settings(max_examples=20, deadline=None)
@given(rows=st.integers(1, 20), cols=st.integers(1, 20), start=st.integers(0, 5))
def test_ordinary_views_load_as_saved(tmp_path_factory, rows, cols, start):
    """Slices and transposes own no more values than their storage: they load, equal to what was saved."""
    base = torch.randn(rows + start, cols)
    saved = {"t": base.t(), "slice": base[start:], "column": base[:, -1]}
    path = tmp_path_factory.mktemp("views") / "c.pt"
    torch.save(saved, path)
    with open(path, "rb") as handle:
        loaded = ckpt.load_torch_file(handle, "checkpoint c.pt")
    assert all(torch.equal(loaded[key], value) for key, value in saved.items())
