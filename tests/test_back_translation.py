"""transformer-mt back-translate: a reverse model's translations of monolingual text as a parallel corpus."""

import os

import pytest
from conftest import assert_clean_error, run_cli

from transformer_mt import Translator
from transformer_mt.data.back_translation import back_translate
from transformer_mt.errors import TransformerMTError


def test_back_translate_writes_a_parallel_corpus_of_the_reverse_models_translations(small_run):
    tmp, data, run = small_run  # a src->tgt model: here the "reverse" model of a tgt->src system
    mono = tmp / "mono.src"
    lines = (data / "test.src").read_text(encoding="utf-8").splitlines()
    mono.write_text("\n".join(lines[:3] + ["", "  "] + lines[3:]) + "\n", encoding="utf-8")
    result = run_cli("back-translate", "--model", run, "--input", mono, "--output-prefix", tmp / "bt",
                     "--beam-size", "2", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "2 blank lines left out" in result.stderr
    # The reverse model translated src -> tgt, so the synthetic *sources* of the new corpus are .tgt.
    synthetic = (tmp / "bt.tgt").read_text(encoding="utf-8").splitlines()
    assert (tmp / "bt.src").read_text(encoding="utf-8").splitlines() == lines
    translator = Translator.from_run(run, device="cpu")
    assert synthetic == translator.translate(lines, beam_size=2)
    # Existing outputs are replaced only when asked to; a link is never written through.
    with pytest.raises(TransformerMTError, match="exists; pass --overwrite"):
        back_translate(translator, mono, tmp / "bt")
    (tmp / "linked.tgt").symlink_to(tmp / "elsewhere")
    with pytest.raises(TransformerMTError, match="symbolic link"):
        back_translate(translator, mono, tmp / "linked", overwrite=True)
    assert not (tmp / "elsewhere").exists()
    summary = back_translate(translator, mono, tmp / "bt", overwrite=True, beam_size=1)
    assert summary["pairs"] == len(lines)
    assert (tmp / "bt.tgt").read_text(encoding="utf-8").splitlines() == translator.translate(lines, beam_size=1)
    # Sampled back-translation: the same seed gives the samples translate() gives.
    back_translate(translator, mono, tmp / "sampled", top_k=5, temperature=1.0, seed=7)
    sampled = (tmp / "sampled.tgt").read_text(encoding="utf-8").splitlines()
    assert sampled == translator.translate(lines, top_k=5, temperature=1.0, seed=7)


def test_each_chunk_of_a_seeded_back_translation_draws_other_samples(small_run, monkeypatch):
    """The input is decoded in chunks; one seed per chunk, or a corpus that repeats would repeat its samples."""
    tmp, data, run = small_run
    lines = (data / "test.src").read_text(encoding="utf-8").splitlines()[:4]
    mono = tmp / "mono_twice.src"
    mono.write_text("\n".join(lines + lines) + "\n", encoding="utf-8")
    monkeypatch.setattr("transformer_mt.data.back_translation.CHUNK_LINES", len(lines))
    translator = Translator.from_run(run, device="cpu")
    options = {"top_k": 0, "temperature": 5.0, "seed": 11}  # a flat distribution: samples vary a lot
    back_translate(translator, mono, tmp / "chunked", **options)
    sampled = (tmp / "chunked.tgt").read_text(encoding="utf-8").splitlines()
    assert sampled[:4] == translator.translate(lines, **options)
    assert sampled[4:] == translator.translate(lines, **{**options, "seed": 12})
    assert sampled[4:] != sampled[:4]


def test_back_translate_refuses_a_bad_sampling_value_before_loading_the_model(tmp_path):
    result = run_cli("back-translate", "--model", tmp_path / "missing", "--input", tmp_path / "mono",
                     "--output-prefix", tmp_path / "bt", "--top-p", "1.5")
    assert_clean_error(result, "--top-p")


@pytest.mark.parametrize("prefix", ["/dev/null", "/dev/shm/../null", "{tmp}/", "{tmp}"])
def test_an_output_prefix_that_is_a_folder_or_among_devices_is_refused_before_loading(tmp_path, prefix):
    prefix = prefix.format(tmp=tmp_path)
    mono = tmp_path / "mono.txt"
    mono.write_text("a b\n")
    result = run_cli("back-translate", "--model", tmp_path / "missing", "--input", mono, "--output-prefix", prefix)
    assert_clean_error(result, "--output-prefix")
    assert not os.path.exists("/dev/null.src") and not list(tmp_path.glob(".*"))
