"""transformer-mt plot: learning curves from metrics.jsonl."""

import shutil

import pytest

pytest.importorskip("matplotlib")

from transformer_mt.plotting import plot_learning_curves, read_metrics  # noqa: E402

from conftest import assert_clean_error, run_cli  # noqa: E402


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
