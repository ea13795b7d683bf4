"""transformer-mt plot: learning curves from metrics.jsonl."""

import shutil
import sys

import pytest

pytest.importorskip("matplotlib")

from conftest import assert_clean_error, run_cli  # noqa: E402

from transformer_mt.training.plotting import plot_learning_curves, read_metrics  # noqa: E402


def test_learning_curves_of_two_runs_in_three_formats(small_run, tmp_path):
    run = small_run[2]
    other = tmp_path / "other"
    shutil.copytree(run, other)
    with open(other / "metrics.jsonl", "a") as handle:
        handle.write('{"type": "train", "step": 3, "lo')  # what a kill leaves: a half line
    records = read_metrics(other)
    assert len(records) == len(read_metrics(run))  # the half line is skipped, nothing else
    result = run_cli("plot", "--model", run, "--model", other, "--output", tmp_path / "plots",
                     "--format", "png", "--format", "svg", "--format", "pdf")
    assert result.returncode == 0, result.stderr
    png = (tmp_path / "plots" / "learning_curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1320, 880)  # 12 x 8 inches at 110 dpi
    svg = (tmp_path / "plots" / "learning_curves.svg").read_text()
    for label in ("Validation BLEU and chrF", "Learning rate", "target tokens / s", "run train", "other validation"):
        assert label in svg
    assert (tmp_path / "plots" / "learning_curves.pdf").read_bytes().startswith(b"%PDF")


def test_a_run_without_metrics_is_one_error_line(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_clean_error(run_cli("plot", "--model", tmp_path / "empty"), "metrics.jsonl does not exist")
    (tmp_path / "empty" / "metrics.jsonl").write_text("not json\n")
    with pytest.raises(Exception, match="no training records"):
        plot_learning_curves([tmp_path / "empty"], tmp_path / "out")


def png_pixels(path):
    """A PNG file as an RGB array, checked to be a valid image."""
    import numpy as np
    from PIL import Image

    data = path.read_bytes()
    assert data.startswith(b"\x89PNG")
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_attention_heatmaps_one_per_layer_heads_averaged_or_each(small_run, tmp_path):
    from transformer_mt import Translator
    from transformer_mt.training.plotting import plot_attention

    translator = Translator.from_run(small_run[2], device="cpu")
    sentence = "ba de gi ko"
    result = run_cli("plot", "--model", small_run[2], "--attention", sentence, "--output", tmp_path / "a",
                     "--self-attention")
    assert result.returncode == 0, result.stderr
    assert "translated with beam search (beam size 2)" in result.stdout  # the run's decoding.beam_size
    for name in ("attention_layer1.png", "self_attention_layer1.png"):
        pixels = png_pixels(tmp_path / "a" / name)
        height, width, _ = pixels.shape
        assert width >= 450 and height >= 350  # 4.5 x 3.5 inches at least, at 110 dpi
        assert len({tuple(p) for p in pixels.reshape(-1, 3)[::7]}) > 50  # a heatmap, colorbar, labels: not blank
        assert (pixels != 255).any(axis=2).mean() > 0.1
    attention = translator.attention(sentence)
    source, target = attention.source_pieces, attention.target_pieces
    output = translator.tgt_tokenizer.pieces(attention.text)
    assert source == translator.src_tokenizer.pieces(sentence) and target[:len(output)] == output
    assert target[len(output):] in ([], ["</s>"])  # the end token's row, unless cut at the length limit
    assert attention.cross_attention.shape == (1, 2, len(target), len(source))

    written, greedy = plot_attention(translator, sentence, tmp_path / "b", head="all", beam_size=1,
                                     formats=("png", "svg"))
    assert greedy.search == "greedy search (beam size 1)"
    assert sorted(p.name for p in written) == ["attention_layer1_head1.png", "attention_layer1_head1.svg",
                                               "attention_layer1_head2.png", "attention_layer1_head2.svg"]
    svg = (tmp_path / "b" / "attention_layer1_head2.svg").read_text()
    for label in ("Cross-attention, decoder layer 1 of 1, head 2 of 2", "attention weight", "source piece",
                  "target piece"):
        assert label in svg
    assert png_pixels(tmp_path / "b" / "attention_layer1_head1.png").shape[:2] != (0, 0)
    written, _ = plot_attention(translator, sentence, tmp_path / "c", layer=1, head=2)
    assert [p.name for p in written] == ["attention_layer1_head2.png"]


def test_attention_plot_errors_are_one_line(small_run, tmp_path, monkeypatch, capsys):
    from transformer_mt.cli import main

    run = small_run[2]
    assert_clean_error(run_cli("plot", "--model", run, "--attention", "ba", "--layer", "2"),
                       "--layer 2 does not exist: the model has 1 decoder layer(s), numbered 1 to 1")
    assert_clean_error(run_cli("plot", "--model", run, "--attention", "ba", "--head", "3"),
                       "--head 3 does not exist: the model has 2 attention heads")
    assert_clean_error(run_cli("plot", "--model", run, "--attention", "ba", "--head", "first"),
                       "--head 'first' is not a head number or 'all'")
    assert_clean_error(run_cli("plot", "--model", run, "--attention", "  "), "--attention needs a sentence")
    assert_clean_error(run_cli("plot", "--model", run, "--layer", "1"), "--layer goes with --attention")
    assert_clean_error(run_cli("plot", "--model", run, "--model", run, "--attention", "ba"), "give one --model")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as without the [plots] extra
    assert main(["plot", "--model", str(run), "--attention", "ba", "--output", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "error: plotting needs matplotlib: pip install 'transformer-mt[plots]'"
    assert not list(tmp_path.iterdir())
