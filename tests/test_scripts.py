"""Every script in scripts/ runs: a smoke run of each with a tiny budget and data made here (no downloads).

These check that a script still works end to end after a change elsewhere (an import moved, an
option renamed, a run-directory rule tightened), not how fast anything is: the numbers they print
are not looked at, only that they print their table and exit 0.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_cli, tiny_config, write_reverse_corpus

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"


def run_script(name: str, *args, timeout: int = 600, cwd=None) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(SCRIPTS / name), *map(str, args)], capture_output=True, text=True,
                            timeout=timeout, cwd=cwd)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr
    return result


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("scripts")
    data = write_reverse_corpus(tmp / "data", n_train=300, n_valid=10, n_test=10)
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(data, max_steps=4, validate_every=2).to_dict()), encoding="utf-8")
    return path


def test_every_script_has_a_smoke_test():
    here = Path(__file__).read_text(encoding="utf-8")
    scripts = sorted(p.name for p in SCRIPTS.glob("*.py"))
    assert scripts, "no scripts found"
    missing = [name for name in scripts if f'"{name}"' not in here]
    assert not missing, f"scripts without a smoke run in {Path(__file__).name}: {missing}"


def test_benchmark(tiny_yaml, tmp_path):
    out = tmp_path / "bench.json"
    result = run_script("benchmark.py", "--config", tiny_yaml, "--warmup-steps", 1, "--train-steps", 2,
                        "--sentences", 5, "--quantize", "--profile", 2, "--json", out)
    results = json.loads(out.read_text())
    weights = {row["weights"] for row in results["decoding"]}
    assert weights == {"fp32", "int8"}, result.stdout
    assert "sent/s" in result.stdout and "target tokens/s" in result.stdout
    # --profile: where the time of 2 training updates and of beam-5 decoding went, operator by operator,
    # with the rate of the matrix products counted from their shapes.
    profiles = [results["training_profile"], *results["decoding_profiles"].values()]
    assert sorted(results["decoding_profiles"]) == ["fp32", "int8"]
    for profiled in profiles:
        names = [row["operator"] for row in profiled["operators"]]
        assert any(name in names for name in ("aten::mm", "aten::addmm", "mkldnn::_linear_pointwise")), names
        assert sum(row["share"] for row in profiled["operators"]) == pytest.approx(1.0)
        assert profiled["matrix_products"]["gflops_per_s"] > 0
        assert all(rate > 0 for rate in profiled["matrix_products"]["reachable_gflops_per_s"].values())
    assert "training updates (fp32)" in result.stdout and "beam-5 decoding of 5 sentences" in result.stdout


def test_benchmark_decoding_a_trained_run(small_run, tmp_path):
    _, _, run = small_run
    result = run_script("benchmark.py", "--config", run / "config.yaml", "--run", run, "--skip-training",
                        "--sentences", 5, "--check-exact", 3)
    assert "identical" in result.stdout, result.stdout
    # --shortlist: each weights row again over the run's shortlist (built here, in a copy of the run)
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    assert run_cli("shortlist", "--model", copy).returncode == 0
    out = tmp_path / "bench.json"
    run_script("benchmark.py", "--config", copy / "config.yaml", "--run", copy, "--skip-training", "--sentences", 5,
               "--shortlist", "--json", out)
    rows = json.loads(out.read_text())["decoding"]
    assert {row["weights"] for row in rows} == {"fp32", "fp32+sl"} and all(row["sentences_per_s"] > 0 for row in rows)


def test_benchmark_data(tmp_path):
    result = run_script("benchmark_data.py", "--sizes", "2k", "--updates", 2, "--work-dir", tmp_path / "work",
                        "--json", tmp_path / "data.json")
    rows = json.loads((tmp_path / "data.json").read_text())["rows"]
    assert [row["pairs"] for row in rows] == [2000], result.stdout


def test_benchmark_distributed(tiny_yaml):
    result = run_script("benchmark_distributed.py", "--config", tiny_yaml, "--nproc", 2, "--warmup-steps", 1,
                        "--steps", 2, "--device", "cpu")
    assert "| 2 |" in result.stdout, result.stdout


def test_benchmark_server(small_run, tmp_path):
    _, _, run = small_run
    out = tmp_path / "server.json"
    result = run_script("benchmark_server.py", "--model", run, "--sentences", 8, "--clients", 1, 2,
                        "--skip-no-batching", "--json", out)
    assert json.loads(out.read_text()), result.stdout


def test_benchmark_server_of_many_models(tmp_path):
    """--models-dir: cold and warm first requests per model, the mixed load, and one model alone."""
    from conftest import train_language_pair

    for source, target in (("de", "en"), ("en", "fr")):
        train_language_pair(tmp_path, source, target, steps=1, n_train=100)
    out = tmp_path / "many.json"
    result = run_script("benchmark_server.py", "--models-dir", tmp_path / "models", "--sentences", 6,
                        "--clients", 2, "--max-loaded-models", 1, "--json", out)
    measured = json.loads(out.read_text())
    assert set(measured["first_requests"]) == {"de-en", "en-fr"}, result.stdout
    assert len(measured["rows"]) == 2 and all(row["sent_per_s"] > 0 for row in measured["rows"].values())
    assert "throughput many models / one model" in result.stdout


def test_reproduce(tiny_yaml, tmp_path):
    results = tmp_path / "results.jsonl"
    run_script("reproduce.py", tiny_yaml, "--output-dir", tmp_path / "run", "--results", results, "--device", "cpu")
    row = json.loads(results.read_text().splitlines()[-1])
    assert "bleu" in json.dumps(row).lower()


def test_tune_decoding(small_run):
    _, _, run = small_run
    result = run_script("tune_decoding.py", "--model", run, "--beams", 1, 2, "--length-penalties", 1.0,
                        "--device", "cpu")
    assert "valid BLEU" in result.stdout


def test_make_demo_data(tmp_path):
    run_script("make_demo_data.py", "--out", tmp_path / "demo", "--train", 50, "--valid", 5, "--test", 5)
    assert len((tmp_path / "demo" / "train.src").read_text().splitlines()) == 50


@pytest.mark.parametrize("name", ["download_multi30k.py", "download_wmt14_en_de.py"])
def test_download_scripts_parse_their_options(name):
    # Tests never download: the smoke run is --help (imports and the option parser).
    assert "--out" in run_script(name, "--help").stdout


def test_compare_peers_parses_its_options():
    assert "--toolkits" in run_script("compare_peers.py", "--help").stdout


def load_script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), SCRIPTS / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_profile_counts_every_threads_operators_and_their_multiply_adds():
    """Decoding runs its batches on threads of its own: their operators must be in the profile, each product
    counted once with its 2*m*k*n floating-point operations, and torch's thread count put back."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    benchmark = load_script("benchmark.py")
    a, b = torch.randn(64, 32), torch.randn(32, 48)

    each = 20

    def multiply(middle):
        # Half the products, a meeting point, the other half: each thread's span of operators holds the meeting,
        # so the two spans overlap however busy the machine is (CI runs two test workers).
        first = [a @ b for _ in range(each // 2)]
        middle.wait()
        return first + [a @ b for _ in range(each - each // 2)]

    def work():
        middle = threading.Barrier(2)
        with ThreadPoolExecutor(2) as pool:  # made anew each time, as Translator does
            list(pool.map(lambda _: multiply(middle), range(2)))

    threads = torch.get_num_threads()
    profiled = benchmark.operator_profile(work, 2, torch.device("cpu"), torch.float32, [(64, 32, 48)])
    assert torch.get_num_threads() == threads
    products = [row for row in profiled["operators"] if row["operator"] == "aten::mm"]
    assert products and products[0]["calls"] == 2 * 2 * each, profiled["operators"]  # repeats x threads x products
    assert products[0]["flops"] == 2 * 2 * each * 2 * 64 * 32 * 48
    assert profiled["calling_threads"] == 2


def is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has ended; only its exit status is left to collect


def test_compare_peers_stops_every_process_of_a_toolkit_at_the_end_of_its_slot(tmp_path):
    # A "toolkit" that leaves a worker behind, as OpenNMT-py's data loaders did.
    compare_peers = load_script("compare_peers.py")
    pid_file = tmp_path / "worker.pid"
    trainer = ["bash", "-c", f"sleep 300 & echo $! > {pid_file}; sleep 300"]
    compare_peers.run_for(trainer, minutes=0.03, log_path=tmp_path / "train.log", env=dict(os.environ))
    worker = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while is_running(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not is_running(worker), "the toolkit's worker outlived its slot"

    pid_file.unlink()
    decoder = ["bash", "-c", f"sleep 300 & echo $! > {pid_file}; exit 0"]
    compare_peers.timed(decoder, dict(os.environ), log_path=tmp_path / "decode.log")
    worker = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while is_running(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not is_running(worker), "a decoder's leftover process outlived the timed command"


def test_paragraph_bleu(small_run, tmp_path):
    _, _, run = small_run
    out = tmp_path / "paragraphs.json"
    result = run_script("paragraph_bleu.py", "--model", run, "--mix", 2, 3, "--json", out)
    rows = json.loads(out.read_text())["rows"]
    assert [row["row"].split(",")[-1].strip() for row in rows] == ["one sentence a line", "split",
                                                                     "--no-split-sentences"]
    assert "BLEU" in result.stdout


def test_glossary_bleu(small_run, tmp_path):
    _, _, run = small_run
    out, terms = tmp_path / "glossary.json", tmp_path / "terms.tsv"
    run_script("glossary_bleu.py", "--model", run, "--min-count", 2, "--min-dice", 0.05, "--skip-frequent", 0,
               "--repeat", 1, "--beam-size", 2, "--json", out, "--write-glossary", terms)
    numbers = json.loads(out.read_text())
    rows = numbers["rows"]
    assert set(rows) == {"plain", "glossary"} and numbers["glossary_entries"] == len(terms.read_text().splitlines())
    if rows["plain"]["terms_applicable"]:  # every entry was chosen because the plain translation missed it once
        assert rows["plain"]["term_use"] < 100.0 and rows["glossary"]["term_use"] == 100.0
    termless = rows["glossary"]["sentences_without_terms"]
    assert 0 <= rows["glossary"]["unchanged_without_terms"] <= termless == rows["plain"]["unchanged_without_terms"]


def test_demo_tag_placement(tmp_path):
    from transformer_mt import train

    train(tiny_config(ROOT / "data" / "demo", max_steps=2, validate_every=2), tmp_path / "run", show_progress=False)
    result = run_script("demo_tag_placement.py", "--model", tmp_path / "run", "--limit", 5)
    assert "/5 (" in result.stdout


def test_benchmark_documents(small_run, tmp_path):
    _, data, run = small_run
    out = tmp_path / "documents.json"
    result = run_script("benchmark_documents.py", "--model", run, "--src", data / "test.src", "--ref",
                        data / "test.tgt", "--beam-size", 1, "--json", out)
    rows = json.loads(out.read_text())
    assert [row["format"] for row in rows] == ["txt", "srt", "docx"], result.stdout
    assert all(row["units"] > 0 for row in rows) and "document BLEU" in result.stdout
