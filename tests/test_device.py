"""Device selection and the CPU memory setting."""

import platform

import pytest
import torch

from transformer_mt.device import keep_freed_cpu_memory, resolve_device
from transformer_mt.errors import TransformerMTError


def test_auto_device_is_cuda_only_when_available():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"


@pytest.mark.parametrize("name", ["tpu7", "meta", "mps", "xpu", "xpu:0", "cpu:1", "", 3])
def test_a_device_this_torch_cannot_run_is_a_clear_error(name):
    if name == "":
        assert resolve_device(name).type in ("cpu", "cuda")  # "" is auto
        return
    with pytest.raises(TransformerMTError, match="is not one transformer-mt runs on; use auto"):
        resolve_device(name)


def test_a_cuda_device_beyond_the_machines_is_a_clear_error():
    with pytest.raises(TransformerMTError, match="CUDA is not available|does not exist"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_commands_refuse_an_unusable_device_before_any_work(tmp_path, capsys):
    from conftest import tiny_config, write_reverse_corpus
    from test_decoding_input import main_error

    from transformer_mt.config import save_config

    data = write_reverse_corpus(tmp_path / "data", n_train=20, n_valid=5, n_test=5)
    save_config(tiny_config(data), tmp_path / "config.yaml")
    line = main_error(capsys, "train", "--config", tmp_path / "config.yaml", "--output-dir", tmp_path / "run",
                      "--device", "meta")
    assert "device 'meta' is not one transformer-mt runs on" in line
    assert not (tmp_path / "run").exists()  # refused before the run directory was made
    for command in ("translate", "serve"):
        line = main_error(capsys, command, "--model", tmp_path / "run", "--device", "meta",
                          *(["ba"] if command == "translate" else []))
        assert "device 'meta'" in line


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_cpu_memory_is_accepted_by_glibc_and_tensors_still_work():
    # mallopt returns 0 for a parameter it does not know: True means both settings took effect.
    assert keep_freed_cpu_memory() is True
    big = torch.ones(5000, 4000)  # 80 MB: above glibc's mmap threshold
    del big
    again = torch.full((5000, 4000), 2.0)
    assert again.sum().item() == 2.0 * 5000 * 4000


def test_trainer_and_translator_leave_process_wide_settings_to_the_entry_point(tmp_path):
    """training.num_threads is applied by the transformer-mt command, not by constructing a Trainer."""
    import yaml
    from conftest import run_cli, tiny_config, write_reverse_corpus

    from transformer_mt import Translator, train

    data = write_reverse_corpus(tmp_path / "data", n_train=100, n_valid=5, n_test=5)
    before = torch.get_num_threads()
    train(tiny_config(data, max_steps=1, validate_every=1, num_threads=before + 1), tmp_path / "api",
          show_progress=False)
    Translator.from_run(tmp_path / "api").translate(["ba de"])
    assert torch.get_num_threads() == before
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(data, max_steps=1, validate_every=1, num_threads=2).to_dict()))
    result = run_cli("train", "--config", config, "--output-dir", tmp_path / "cli")
    assert result.returncode == 0, result.stderr
    assert "device cpu (2 threads)" in (tmp_path / "cli" / "train.log").read_text()
