"""End-to-end learning: a small model learns a synthetic task to high BLEU in under a minute."""

from conftest import write_reverse_corpus

from transformer_mt import Translator, train
from transformer_mt.config import config_from_dict
from transformer_mt.data.batches import read_lines
from transformer_mt.scoring import score


def test_model_learns_to_reverse_word_order_to_high_bleu(tmp_path):
    data = write_reverse_corpus(tmp_path / "data", n_train=4000, n_valid=60, n_test=200, seed=3)
    config = config_from_dict({
        "data": {"root": str(data), "src_lang": "src", "tgt_lang": "tgt", "max_len": 64},
        "tokenizer": {"model_type": "word", "vocab_size": 34},
        "model": {"d_model": 64, "num_heads": 4, "num_encoder_layers": 2, "num_decoder_layers": 2,
                  "ffn_dim": 256, "dropout": 0.0, "pre_norm": True},
        # max_minutes caps training at one minute whatever the machine's speed.
        "training": {"batch_tokens": 1500, "max_steps": 500, "max_minutes": 1.0, "lr": 0.003, "warmup_steps": 100,
                     "validate_every": 250, "log_every": 50, "clip_norm": 1.0, "seed": 2, "num_threads": 1},
        "decoding": {"beam_size": 4, "valid_beam_size": 1},
    })
    summary = train(config, tmp_path / "run", show_progress=False)
    assert summary["train_seconds"] <= 61
    translator = Translator.from_run(tmp_path / "run")
    hyps = translator.translate(read_lines(data / "test.src"), beam_size=4)
    bleu = score(hyps, read_lines(data / "test.tgt"))["bleu"]
    assert bleu >= 90, f"test BLEU {bleu:.1f} after {summary['step']} steps"
