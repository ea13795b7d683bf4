"""training.init_from: a new run starts from the weights and tokenizer of a trained one (its parent)."""

import hashlib
import json

import pytest
import torch
import yaml
from conftest import Payload, assert_clean_error, run_cli, tiny_config, write_reverse_corpus

from transformer_mt import train
from transformer_mt.checkpoint import file_sha256, load_checkpoint
from transformer_mt.config import config_from_dict
from transformer_mt.errors import TransformerMTError
from transformer_mt.training.trainer import Trainer


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A parent run trained on one corpus; children train on another (its words in another order)."""
    tmp = tmp_path_factory.mktemp("parent")
    data = write_reverse_corpus(tmp / "data", n_train=200, n_valid=8, n_test=8, seed=0)
    train(tiny_config(data, max_steps=4, validate_every=2), tmp / "run", show_progress=False)
    new_data = write_reverse_corpus(tmp / "new_data", n_train=150, n_valid=8, n_test=8, seed=1)
    return tmp / "run", new_data


def snapshot(folder):
    """Every file of ``folder`` and its SHA-256: the parent must look exactly the same afterwards."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def child_config(new_data, init_from, **training):
    defaults = {"max_steps": 6, "validate_every": 3, "lr": 0.001, "warmup_steps": 2}
    config = tiny_config(new_data, **{**defaults, **training}).to_dict()
    config["training"]["init_from"] = str(init_from)
    return config_from_dict(config)


def train_losses(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["type"] == "train"}


def test_a_child_starts_from_the_parents_weights_and_tokenizer_with_a_fresh_schedule(tmp_path, parent):
    parent_run, new_data = parent
    before = snapshot(parent_run)
    trainer = Trainer(child_config(new_data, parent_run), tmp_path / "child", show_progress=False)
    try:
        best = load_checkpoint(parent_run / "checkpoint_best.pt")
        for name, tensor in trainer.model.state_dict().items():
            assert torch.equal(tensor, best["model"][name]), name
        assert trainer.step == 0 and not trainer.optimizer.state  # fresh optimizer and schedule
    finally:
        trainer.close()
    summary = train(child_config(new_data, parent_run), tmp_path / "child", show_progress=False)
    assert summary["step"] == 6
    child = tmp_path / "child"
    assert (child / "spm.model").read_bytes() == (parent_run / "spm.model").read_bytes()
    sha = file_sha256(parent_run / "checkpoint_best.pt")
    record = json.loads((child / "run.json").read_text())["init_from"]
    step = load_checkpoint(parent_run / "checkpoint_best.pt")["step"]
    assert record == {"checkpoint": str((parent_run / "checkpoint_best.pt").resolve()), "sha256": sha, "step": step}
    assert load_checkpoint(child / "checkpoint_last.pt")["init_from"] == record
    assert sha in (child / "train.log").read_text()
    assert snapshot(parent_run) == before  # nothing written into the parent


def test_a_resumed_child_continues_exactly(tmp_path, parent):
    parent_run, new_data = parent
    train(child_config(new_data, parent_run), tmp_path / "straight", show_progress=False)
    train(child_config(new_data, parent_run, max_steps=3), tmp_path / "resumed", show_progress=False)
    resumed = train(child_config(new_data, parent_run), tmp_path / "resumed", show_progress=False)
    assert resumed["step"] == 6
    expected, got = train_losses(tmp_path / "straight"), train_losses(tmp_path / "resumed")
    assert sorted(got) == list(range(1, 7))
    assert got == expected  # bit-identical on CPU
    straight = load_checkpoint(tmp_path / "straight" / "checkpoint_last.pt")["model"]
    for name, tensor in load_checkpoint(tmp_path / "resumed" / "checkpoint_last.pt")["model"].items():
        assert torch.equal(tensor, straight[name]), name


def test_keeping_the_optimizer_state_takes_the_parents_moments(tmp_path, parent):
    parent_run, new_data = parent
    trainer = Trainer(child_config(new_data, parent_run, init_reset_optimizer=False), tmp_path / "child",
                      show_progress=False)
    try:
        last = load_checkpoint(parent_run / "checkpoint_last.pt")
        for name, tensor in trainer.model.state_dict().items():
            assert torch.equal(tensor, last["model"][name]), name  # the last checkpoint, whose moments they are
        moments = [state["exp_avg"] for state in last["optimizer"]["state"].values()]
        kept = [state["exp_avg"] for state in trainer.optimizer.state_dict()["state"].values()]
        assert len(kept) == len(moments) and all(torch.equal(a, b) for a, b in zip(kept, moments))
        assert trainer.optimizer.param_groups[0]["betas"] == (0.9, 0.98)  # this config's, not the parent's
        assert trainer.step == 0
    finally:
        trainer.close()


def test_keeping_the_optimizer_of_an_ema_parent_takes_the_trained_weights_its_moments_belong_to(tmp_path):
    data = write_reverse_corpus(tmp_path / "data", n_train=200, n_valid=8, n_test=8, seed=0)
    train(tiny_config(data, max_steps=4, validate_every=2, ema_decay=0.9), tmp_path / "parent", show_progress=False)
    last = load_checkpoint(tmp_path / "parent" / "checkpoint_last.pt")
    for keep_optimizer, expected in ((True, last["raw_model"]), (False, last["model"])):
        config = child_config(data, tmp_path / "parent" / "checkpoint_last.pt",
                              init_reset_optimizer=not keep_optimizer)
        trainer = Trainer(config, tmp_path / f"child_{keep_optimizer}", show_progress=False)
        try:
            for name, tensor in trainer.model.state_dict().items():
                assert torch.equal(tensor, expected[name]), (keep_optimizer, name)
        finally:
            trainer.close()


def test_keeping_the_optimizer_needs_a_checkpoint_that_has_one(tmp_path, parent):
    parent_run, new_data = parent
    with pytest.raises(TransformerMTError, match="holds only weights; name the parent's checkpoint_last.pt"):
        Trainer(child_config(new_data, parent_run / "checkpoint_best.pt", init_reset_optimizer=False),
                tmp_path / "child")
    assert not (tmp_path / "child").exists()


def test_another_model_section_is_refused_naming_every_key_that_differs(tmp_path, parent):
    parent_run, new_data = parent
    config = child_config(new_data, parent_run).to_dict()
    config["model"].update(d_model=64, ffn_dim=128, dropout=0.3)  # dropout may differ
    with pytest.raises(TransformerMTError) as error:
        Trainer(config_from_dict(config), tmp_path / "child")
    message = str(error.value)
    assert "model.d_model: 32 (parent) -> 64" in message and "model.ffn_dim: 64 (parent) -> 128" in message
    assert "dropout" not in message
    assert not (tmp_path / "child").exists()


def test_a_crafted_parent_is_refused_without_running_it(tmp_path, parent):
    _, new_data = parent
    marker = tmp_path / "pwned"
    crafted = tmp_path / "parent.pt"
    torch.save(Payload(marker), crafted)
    with pytest.raises(TransformerMTError, match="may be unsafe"):
        Trainer(child_config(new_data, crafted), tmp_path / "child")
    assert not marker.exists()
    assert not (tmp_path / "child").exists()


@pytest.mark.parametrize("where", ["itself", "inside"])
def test_a_run_never_trains_into_its_parents_directory(tmp_path, parent, where):
    parent_run, new_data = parent
    before = snapshot(parent_run)
    output = parent_run if where == "itself" else parent_run / "child"
    with pytest.raises(TransformerMTError, match="never writes into its parent's directory"):
        Trainer(child_config(new_data, parent_run), output, overwrite=True)
    assert snapshot(parent_run) == before


def test_the_command_line_reports_a_missing_parent_in_one_line(tmp_path, parent):
    _, new_data = parent
    config = child_config(new_data, tmp_path / "nowhere").to_dict()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = run_cli("train", "--config", path, "--output-dir", tmp_path / "child")
    assert_clean_error(result, "'training.init_from'", "does not exist")


def test_a_ctranslate2_export_names_its_run_as_the_parent(tmp_path, parent):
    pytest.importorskip("ctranslate2")
    from transformer_mt.interop.ctranslate2_export import export_ctranslate2

    parent_run, new_data = parent
    export_ctranslate2(parent_run, tmp_path / "ct2")
    trainer = Trainer(child_config(new_data, tmp_path / "ct2"), tmp_path / "child", show_progress=False)
    try:
        assert trainer.parent.checkpoint == (parent_run / "checkpoint_best.pt").resolve()
    finally:
        trainer.close()
