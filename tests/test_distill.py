"""transformer-mt distill (training/distill.py): a tiny teacher, a student trained end to end on its
translations, and a distill interrupted in its translation phase continued where it stopped."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from conftest import assert_clean_error, run_cli, tiny_config

from transformer_mt.checkpoint import load_checkpoint
from transformer_mt.config import config_from_dict
from transformer_mt.data.corpus import read_lines
from transformer_mt.decoding.translator import Translator
from transformer_mt.errors import TransformerMTError
from transformer_mt.training.distill import distill


def student(data, **training):
    """A student unlike the teacher: a deeper encoder, one decoder layer."""
    raw = tiny_config(data, **{"max_steps": 2, "validate_every": 2, "warmup_steps": 1, **training}).to_dict()
    raw["model"].update(num_encoder_layers=2, num_decoder_layers=1)
    return config_from_dict(raw)


class Interrupt(Exception):
    pass


def test_distill_translates_resumes_after_an_interruption_and_trains_the_student(tmp_path, small_run, monkeypatch):
    _, data, teacher = small_run
    translated = []
    plain_translate = Translator.translate

    def counting(self, sentences, **options):
        if options.get("beam_size") == 2:  # the teacher's (validation searches with beam 1)
            translated.append(len(sentences))
        return plain_translate(self, sentences, **options)

    monkeypatch.setattr(Translator, "translate", counting)

    def stop_after_two(corpus, done, chunks, lines):
        assert chunks == 4  # 200 lines in chunks of 60
        if done == 2:
            raise Interrupt

    run = tmp_path / "student"
    with pytest.raises(Interrupt):
        distill(teacher, student(data), run, beam_size=2, chunk_lines=60, progress=stop_after_two,
                show_progress=False)
    folder = run / "distill"
    assert sorted(p.name for p in folder.glob("corpus0.part*")) == ["corpus0.part000000.tgt", "corpus0.part000001.tgt"]
    assert not (run / "checkpoint_last.pt").exists()
    assert translated == [60, 60]

    translated.clear()
    damaged = folder / "corpus0.part000001.tgt"  # a chunk cut short (by hand, or a disk that filled) is not kept
    damaged.write_text("".join(damaged.read_text().splitlines(keepends=True)[:10]))
    summary = distill(teacher, student(data), run, beam_size=2, chunk_lines=60, resume=True, show_progress=False)
    assert translated == [60, 60, 20]  # only the chunks not yet written whole
    assert summary["step"] == 2
    assert not list(folder.glob("corpus0.part*"))  # joined into one file
    # Line for line what the teacher makes of the sources, as one uninterrupted translation would.
    sources = read_lines(data / "train.src")
    expected = Translator.from_run(teacher, device="cpu").translate(sources, beam_size=2)
    assert read_lines(folder / "corpus0.tgt") == expected
    # The student: its own model, the teacher's tokenizer, the translations as its training corpus.
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["num_decoder_layers"] == 1 and saved["model"]["num_encoder_layers"] == 2
    assert saved["tokenizer"]["model"] == str(teacher / "spm.model")
    [corpus] = saved["data"]["train_corpora"]
    assert {key: corpus[key] for key in ("src", "tgt", "weight", "tag")} == {
        "src": str(data / "train.src"), "tgt": str(folder / "corpus0.tgt"), "weight": 1.0, "tag": ""}
    assert (run / "spm.model").read_bytes() == (teacher / "spm.model").read_bytes()
    assert load_checkpoint(run / "checkpoint_last.pt")["tokenizer_sha256"] == \
        load_checkpoint(teacher / "checkpoint_last.pt")["tokenizer_sha256"]

    # Run again with a larger budget: training resumes from its checkpoint, nothing is translated again.
    translated.clear()
    assert distill(teacher, student(data, max_steps=3), run, beam_size=2, chunk_lines=60,
                   show_progress=False)["step"] == 3
    assert translated == []
    # Another search than the translations on disk were made with is refused, not mixed in.
    with pytest.raises(TransformerMTError, match=r"another teacher, corpus or search \(beam_size differ"):
        distill(teacher, student(data, max_steps=3), run, beam_size=3, chunk_lines=60, show_progress=False)
    # A student config its checkpoint cannot continue is refused before any translating, not after it.
    (folder / "corpus0.tgt").unlink()
    wider = student(data, max_steps=3).to_dict()
    wider["model"]["ffn_dim"] = 96
    with pytest.raises(TransformerMTError, match=r"holds a run with a different config \(model.ffn_dim: 64 -> 96"):
        distill(teacher, config_from_dict(wider), run, beam_size=2, chunk_lines=60, show_progress=False)
    assert translated == []


def test_distill_refuses_what_it_cannot_do_before_translating(tmp_path, small_run):
    _, data, teacher = small_run
    with pytest.raises(TransformerMTError, match="holds no distillation to continue"):
        distill(teacher, student(data), tmp_path / "new", resume=True, show_progress=False)
    other_pair = student(data).to_dict()
    other_pair["data"].update(src_lang="tgt", tgt_lang="src")
    with pytest.raises(TransformerMTError, match="translates src -> tgt but the student config's data is tgt -> src"):
        distill(teacher, config_from_dict(other_pair), tmp_path / "other", show_progress=False)
    several = student(data).to_dict()  # a multilingual student: one direction only (its tokens, its files)
    several["data"]["train_corpora"] = [{"prefix": "train", "src_lang": "src", "tgt_lang": "tgt"},
                                        {"prefix": "train", "src_lang": "tgt", "tgt_lang": "src"}]
    with pytest.raises(TransformerMTError, match="the student config has several directions"):
        distill(teacher, config_from_dict(several), tmp_path / "several", show_progress=False)
    assert not (tmp_path / "several").exists()
    given = student(data).to_dict()
    given["tokenizer"]["model"] = str(teacher / "spm.model")
    with pytest.raises(TransformerMTError, match="sets 'tokenizer.model'; distill gives the student the teacher's"):
        distill(teacher, config_from_dict(given), tmp_path / "given", show_progress=False)
    with pytest.raises(TransformerMTError, match="are one directory or inside each other"):
        distill(teacher, student(data), teacher, overwrite=True, show_progress=False)
    assert (teacher / "checkpoint_last.pt").exists()
    with pytest.raises(TransformerMTError, match="beam_size"):
        distill(teacher, student(data), tmp_path / "beam", beam_size=0, show_progress=False)
    assert not (tmp_path / "beam").exists()  # refused before the output directory was made


def test_the_distill_command_mixes_the_original_targets_and_builds_a_shortlist(tmp_path, small_run):
    _, data, teacher = small_run
    config = tmp_path / "student.yaml"
    config.write_text(yaml.safe_dump(student(data).to_dict()))
    run = tmp_path / "student"
    result = run_cli("distill", "--teacher", teacher, "--config", config, "--output-dir", run, "--beam-size", "1",
                     "--mix-original", "--shortlist", "--set", "training.max_steps=1", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "teacher translations of training corpus 1: chunk 1 of 1 (200 lines)" in result.stderr
    assert "distillation finished" in result.stderr
    corpora = yaml.safe_load((run / "config.yaml").read_text())["data"]["train_corpora"]
    assert [c["tgt"] for c in corpora] == [str(run / "distill" / "corpus0.tgt"), str(data / "train.tgt")]
    manifest = json.loads((run / "distill" / "manifest.json").read_text())
    assert manifest["beam_size"] == 1 and manifest["sources"][0]["lines"] == 200
    with np.load(run / "shortlist.npz") as shortlist:
        assert shortlist["candidates"].shape[0] == len(Translator.from_run(run, device="cpu").src_tokenizer)
    translated = run_cli("translate", "--model", run, "--device", "cpu", "--shortlist", "ba de gi")
    assert translated.returncode == 0, translated.stderr
    # --overwrite deletes the run, translations included, and starts again.
    again = run_cli("distill", "--teacher", teacher, "--config", config, "--output-dir", run, "--beam-size", "2",
                    "--overwrite", "--set", "training.max_steps=1", "--device", "cpu")
    assert again.returncode == 0, again.stderr
    assert json.loads((run / "distill" / "manifest.json").read_text())["beam_size"] == 2
    assert not (run / "shortlist.npz").exists()
    assert_clean_error(run_cli("distill", "--teacher", tmp_path / "missing", "--config", config, "--output-dir",
                               tmp_path / "x"), "missing")
