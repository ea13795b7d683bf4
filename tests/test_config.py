"""Config loading: every mistake is one clear message naming the key or file."""

import subprocess
import sys

import pytest

from transformer_mt.config import check_data_files, config_from_dict, load_config
from transformer_mt.errors import TransformerMTError

REPO_CONFIGS = sorted(str(p) for p in __import__("pathlib").Path("configs").glob("*.yaml"))


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("path", REPO_CONFIGS)
def test_shipped_configs_load(path):
    load_config(path)


def test_unknown_key_suggests_the_closest_valid_key(tmp_path):
    path = write(tmp_path, "model:\n  d_modle: 128\n")
    with pytest.raises(TransformerMTError, match=r"unknown key 'model.d_modle'.*did you mean 'model.d_model'"):
        load_config(path)


def test_unknown_section(tmp_path):
    with pytest.raises(TransformerMTError, match=r"unknown section 'trainig'.*'training'"):
        load_config(write(tmp_path, "trainig:\n  lr: 0.1\n"))


@pytest.mark.parametrize("text, message", [
    ("model:\n  d_model: big\n", r"'model.d_model' must be an integer, got 'big'"),
    ("training:\n  lr: [1]\n", r"'training.lr' must be a number"),
    ("model:\n  pre_norm: 1\n", r"'model.pre_norm' must be true or false"),
    ("model:\n  dropout: -0.1\n", r"'model.dropout' must be >= 0.0"),
    ("model:\n  d_model: 100\n  num_heads: 3\n", r"'model.d_model' \(100\) must be divisible by 'model.num_heads' \(3\)"),
    ("training:\n  scheduler: exponential\n",
     r"'training.scheduler' must be one of inverse_sqrt, noam, cosine, linear, constant"),
    ("tokenizer:\n  joint: false\n", r"share_embeddings: true' needs 'tokenizer.joint: true'"),
    ("- a\n- b\n", r"top level must be a mapping"),
    ("training:\n  seed: -1\n", r"'training.seed' must be >= 0"),
    ("training:\n  seed: 4294967296\n", r"'training.seed' must be <= 4294967295"),
    ("decoding:\n  beam_size: 100000\n", r"'decoding.beam_size' must be <= 256"),
    ("data:\n  train_corpora:\n  - prefix: train\n    tag: <" + "x" * 100 + ">\n",
     r"'data.train_corpora\[0\].tag' is 102 characters long"),
])
def test_wrong_types_and_values(tmp_path, text, message):
    with pytest.raises(TransformerMTError, match=message):
        load_config(write(tmp_path, text))


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "model:\n  d_model: 128\n  heads: [1, 2\ntraining:\n  lr: 1\n")
    with pytest.raises(TransformerMTError, match=r"c.yaml is not valid YAML at line \d+"):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(TransformerMTError, match=r"config file .*nope.yaml does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_missing_data_file_names_the_file_and_key(tmp_path):
    config = load_config(write(tmp_path, f"data:\n  root: {tmp_path}/corpus\n  src_lang: de\n  tgt_lang: en\n"))
    with pytest.raises(TransformerMTError, match=r"data file .*corpus/train.de .*does not exist.*data.root"):
        check_data_files(config)


def test_environment_variables_in_paths(tmp_path, monkeypatch):
    path = write(tmp_path, "data:\n  root: ${TMT_TEST_ROOT:-/default}/multi30k\n")
    assert load_config(path).data.root == "/default/multi30k"
    monkeypatch.setenv("TMT_TEST_ROOT", "/elsewhere")
    assert load_config(path).data.root == "/elsewhere/multi30k"


def test_cli_reports_config_errors_without_traceback(tmp_path):
    path = write(tmp_path, "model:\n  d_modle: 128\n")
    result = subprocess.run([sys.executable, "-m", "transformer_mt.cli", "train", "--config", str(path),
                             "--output-dir", str(tmp_path / "run")], capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "did you mean 'model.d_model'" in result.stderr


def test_reference_config_documents_every_key_with_its_default():
    import dataclasses

    import yaml

    from transformer_mt.config import Config

    raw = yaml.safe_load(open("configs/reference.yaml", encoding="utf-8"))
    defaults = Config()
    for section in dataclasses.fields(Config):
        documented = set(raw[section.name])
        keys = {f.name for f in dataclasses.fields(getattr(defaults, section.name))}
        assert documented == keys, f"section {section.name}: missing {keys - documented}, extra {documented - keys}"
    assert load_config("configs/reference.yaml") == defaults


def test_parse_overrides_reads_values_as_yaml_and_names_bad_items():
    from transformer_mt.config import parse_overrides

    assert parse_overrides(["training.max_steps=100", "model.pre_norm=false", "training.precision=bf16"]) == {
        "training.max_steps": 100, "model.pre_norm": False, "training.precision": "bf16"}
    with pytest.raises(TransformerMTError, match="max_steps100"):
        parse_overrides(["max_steps100"])


@pytest.mark.parametrize("section, key", [("data", "root"), ("data", "train_prefix"), ("data", "src_lang"),
                                          ("tokenizer", "model")])
def test_a_nul_character_in_a_text_key_is_one_error(section, key):
    """A NUL in a path or code reached the OS as "embedded null byte" (a traceback, second probe)."""
    with pytest.raises(TransformerMTError, match=rf"key '{section}\.{key}' holds a NUL character"):
        config_from_dict({section: {key: "de\x00en"}})


def _yaml_notations(n: int) -> list[str]:
    """The ways YAML 1.1 (PyYAML) reads as a number that do not mean what a reader of digits would think."""
    minutes, seconds = divmod(n, 60)
    return [f"0{n:o}", f"0x{n:x}", f"0b{n:b}", f"{minutes}:{seconds:02d}", f"{n:,}".replace(",", "_") + "_0",
            f"{n}_0.5", f"{minutes}:{seconds:02d}.5"]


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 10**6), notation=st.integers(0, 6), where=st.sampled_from(["file", "set"]))
def test_numbers_in_yaml_11_notations_are_refused_not_misread(tmp_path_factory, n, notation, where):
    """max_steps: 010 is 8 to PyYAML and 1:30 is 90: a config's numbers are plain digits, or an error says so."""
    from transformer_mt.config import parse_overrides

    text = _yaml_notations(n)[notation]
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    # Refused either way: as a number in a misleading notation, or (0:01 is no YAML number) as text for a number.
    refused = f"'{text}' is a (whole )?number in YAML 1.1's .*plain digits|must be an integer, got '{text}'"
    with pytest.raises(TransformerMTError, match=refused):
        if where == "file":
            path.write_text(f"training:\n  max_steps: {text}\n")
            load_config(path)
        else:
            path.write_text("training:\n  max_steps: 5\n")
            load_config(path, parse_overrides([f"training.max_steps={text}"]))
    path.write_text(f"training:\n  max_steps: {n}\n  lr: {n}.5e-7\n")
    config = load_config(path)
    assert config.training.max_steps == n and config.training.lr == float(f"{n}.5e-7")
