"""The big-data recipe trains (with its model made tiny), so it does not rot while nobody can run it here."""

from __future__ import annotations

from conftest import write_reverse_corpus

from transformer_mt import load_config, train
from transformer_mt.checkpoint import load_checkpoint


def test_wmt14_recipe_trains_a_few_updates_with_a_tiny_model(tmp_path):
    corpus = write_reverse_corpus(tmp_path / "generated", n_train=300, n_valid=10, n_test=10)
    data = tmp_path / "wmt14_en_de"
    data.mkdir()
    for ours, theirs in (("train", "train"), ("valid", "newstest2013"), ("test", "newstest2014")):
        (data / f"{theirs}.en").write_bytes((corpus / f"{ours}.src").read_bytes())
        (data / f"{theirs}.de").write_bytes((corpus / f"{ours}.tgt").read_bytes())
    config = load_config("configs/wmt14_en_de.yaml", {
        "data.root": str(data), "tokenizer.vocab_size": 34, "tokenizer.model_type": "word",
        "model.d_model": 32, "model.num_heads": 2, "model.num_encoder_layers": 1, "model.num_decoder_layers": 1,
        "model.ffn_dim": 64, "training.batch_tokens": 300, "training.max_steps": 3, "training.validate_every": 3,
        "training.warmup_steps": 2, "training.num_threads": 1, "training.device": "cpu"})
    # What makes it the recipe stays as written.
    assert (config.training.accumulate, config.training.scheduler, config.tokenizer.joint) == (4, "inverse_sqrt", True)
    summary = train(config, tmp_path / "run", show_progress=False)
    assert summary["step"] == 3
    assert load_checkpoint(tmp_path / "run" / "checkpoint_last.pt")["step"] == 3


def test_the_multi30k_student_recipe_distills_from_a_tiny_teacher(tmp_path):
    from transformer_mt.training.distill import distill

    corpus = write_reverse_corpus(tmp_path / "generated", n_train=120, n_valid=5, n_test=5)
    data = tmp_path / "multi30k"
    data.mkdir()
    for ours, theirs in (("train", "train"), ("valid", "val"), ("test", "test2016")):
        (data / f"{theirs}.de").write_bytes((corpus / f"{ours}.src").read_bytes())
        (data / f"{theirs}.en").write_bytes((corpus / f"{ours}.tgt").read_bytes())
    tiny = {"data.root": str(data), "tokenizer.vocab_size": 34, "tokenizer.model_type": "word", "model.d_model": 32,
            "model.num_heads": 2, "model.ffn_dim": 64, "training.batch_tokens": 300, "training.max_steps": 2,
            "training.validate_every": 2, "training.warmup_steps": 1, "training.num_threads": 1,
            "training.device": "cpu", "training.average_last_n": 0, "decoding.batch_size": 32}
    teacher = load_config("configs/multi30k_de_en.yaml", {**tiny, "model.num_encoder_layers": 1,
                                                            "model.num_decoder_layers": 1})
    train(teacher, tmp_path / "teacher", show_progress=False)
    config = load_config("configs/multi30k_de_en_student.yaml", tiny)
    # What makes it the recipe stays as written: the depth in the encoder, one decoder layer.
    assert (config.model.num_encoder_layers, config.model.num_decoder_layers) == (6, 1)
    summary = distill(tmp_path / "teacher", config, tmp_path / "student", beam_size=2, show_progress=False)
    assert summary["step"] == 2
    assert load_checkpoint(tmp_path / "student" / "checkpoint_last.pt")["config"]["model"]["num_decoder_layers"] == 1
