"""The manual (docs/, README.md) against the code, so that it cannot rot.

- Every configuration key has a comment in the source, and the generated reference lists every key with its
  default (docs/hooks/config_reference.py builds that page from transformer_mt/config.py).
- Every example marked as runnable is run, against a tiny model and files made here. The marker is an HTML
  comment on the line right before a fenced ``bash`` or ``python`` block (readers see only the block):

      <!-- test: run -->
      <!-- test: run; expect: usage: transformer-mt -->
      <!-- test: run; exit: 2; expect: did you mean 'model.d_model'? -->

  ``exit`` is the status the example must end with (default 0); ``expect`` a text its output must hold
  (standard output and error together). Examples run in a folder holding ``configs/``, ``data/demo/``, a tiny
  trained ``runs/demo/`` and the small input files the guides name (``sentences.txt``, ``letter.txt``, ...),
  with ``transformer-mt`` and ``python`` on the PATH running this checkout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import tiny_config, write_reverse_corpus

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MARKER = re.compile(r"^<!--\s*test:\s*run\s*(?P<options>;.*?)?\s*-->$")
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\s*$")


def hook(name: str):
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", DOCS / "hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as mkdocs loads it (its dataclass needs its module registered)
    sys.path.insert(0, str(DOCS / "hooks"))  # as mkdocs does while loading a hook (for page_marker)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(DOCS / "hooks"))
    return module


# --- the configuration reference -------------------------------------------------------------------------

def config_fields() -> dict[str, object]:
    """Every key of the config (``section.name``, ``data.train_corpora[].prefix``) and its default, from the
    dataclasses themselves."""
    import typing

    from transformer_mt.config import Config

    found = {}

    def walk(prefix, cls):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            found[f"{prefix}.{f.name}"] = default
            args = typing.get_args(hints[f.name])
            if typing.get_origin(hints[f.name]) is list and args and dataclasses.is_dataclass(args[0]):
                walk(f"{prefix}.{f.name}[]", args[0])

    hints = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        walk(section.name, hints[section.name])
    return found


def test_every_config_key_has_a_comment_in_the_source():
    reference = hook("config_reference")
    keys = reference.all_keys()
    assert {key.name for key in keys} == set(config_fields())
    silent = [key.name for key in keys if not key.comment.strip()]
    assert not silent, (f"config keys without a comment in the source (write one beside the field; "
                        f"the manual's configuration reference is built from it): {silent}")


def test_generated_reference_lists_every_key_with_its_default():
    rendered = hook("config_reference").render()
    rows = {}
    for line in rendered.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 5 and cells[0].startswith("`") and cells[0] != "`key`":
            rows[cells[0].strip("`")] = yaml.safe_load(cells[2].strip("`"))
    expected = config_fields()
    assert set(rows) == set(expected), (f"missing: {sorted(set(expected) - set(rows))}, "
                                        f"unknown: {sorted(set(rows) - set(expected))}")
    for key, default in expected.items():
        assert rows[key] == default, (key, rows[key], default)


def test_config_reference_page_keeps_its_marker():
    page = (DOCS / "reference" / "configuration.md").read_text(encoding="utf-8")
    assert hook("config_reference").MARKER in page


def test_readme_links_resolve():
    # The README is read on the repository's page, not in the built manual: its relative links must name files.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [t.split("#", 1)[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
    assert local, "the README links into the manual"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"


# --- runnable examples ----------------------------------------------------------------------------------

@dataclasses.dataclass
class Example:
    where: str
    lang: str
    code: str
    exit: int = 0
    expect: str = ""

    def __str__(self):
        return self.where


def examples() -> list[Example]:
    found = []
    for path in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]:
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            match = MARKER.match(line.strip())
            if line.strip().startswith("<!-- test") and not match:
                raise AssertionError(f"{path.relative_to(ROOT)}:{number + 1}: malformed test marker {line!r}")
            if not match:
                continue
            fence = FENCE.match(lines[number + 1]) if number + 1 < len(lines) else None
            where = f"{path.relative_to(ROOT)}:{number + 1}"
            assert fence and fence["lang"] in ("bash", "python"), f"{where}: the marker is not right before a code block"
            indent = len(fence["indent"])
            end = next(i for i in range(number + 2, len(lines)) if lines[i].strip() == "```")
            code = "\n".join(line[indent:] for line in lines[number + 2:end]) + "\n"
            example = Example(where, fence["lang"], code)
            for option in filter(None, (o.strip() for o in (match["options"] or "").split(";"))):
                name, _, value = option.partition(":")
                if name.strip() == "exit":
                    example.exit = int(value)
                elif name.strip() == "expect":
                    example.expect = value.strip()
                else:
                    raise AssertionError(f"{where}: unknown marker option {option!r}")
            found.append(example)
    return found


EXAMPLES = examples()


def test_the_manual_has_runnable_examples():
    assert len(EXAMPLES) >= 10, [str(e) for e in EXAMPLES]
    assert {e.lang for e in EXAMPLES} == {"bash", "python"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder as a reader's checkout after the quick start: configs, the demo data, a (tiny) runs/demo."""
    from transformer_mt import train

    work = tmp_path_factory.mktemp("manual")
    shutil.copytree(ROOT / "configs", work / "configs")
    shutil.copytree(ROOT / "data" / "demo", work / "data" / "demo")
    corpus = write_reverse_corpus(work / "reverse", n_train=200, n_valid=5, n_test=5)
    # The glossary guide's example terms (cat -> miro, dog -> vasko: the demo language's words): a model that cannot spell a
    # target term refuses it, so this stand-in for the demo model must know the word.
    for split, line in (("src", "the cat dog\n"), ("tgt", "lo miro vasko\n")):
        with open(corpus / f"train.{split}", "a", encoding="utf-8") as handle:
            handle.write(line * 20)
    config = tiny_config(corpus, max_steps=2, validate_every=2)
    config.tokenizer.vocab_size = 40  # the 30 words, these 6 and the 4 special pieces
    config.decoding.beam_size = 5
    train(config, work / "runs" / "demo", show_progress=False)
    sentences = "The old farmer sees two small birds.\nA dog sees the cat.\n"
    (work / "sentences.txt").write_text(sentences, encoding="utf-8")
    (work / "test.src").write_text(sentences, encoding="utf-8")
    (work / "test.tgt").write_text("Lo vasko.\nUn lo miro.\n", encoding="utf-8")
    (work / "translations.txt").write_text("the dog sees a cat\ntwo birds sing\n", encoding="utf-8")
    (work / "references.txt").write_text("the dog sees the cat\ntwo birds sing\n", encoding="utf-8")
    (work / "letter.txt").write_text("Dear farmer,\n\nThe old farmer sees two small birds. A dog sees the\n"
                                     "cat, and the cat sees the dog.\n", encoding="utf-8")
    bin_dir = work / "bin"
    bin_dir.mkdir()
    for name, command in (("transformer-mt", f'"{sys.executable}" -m transformer_mt.cli "$@"'),
                          ("python", f'"{sys.executable}" "$@"')):
        (bin_dir / name).write_text(f"#!/bin/sh\nexec {command}\n")
        (bin_dir / name).chmod(0o755)
    return work


@pytest.mark.parametrize("example", EXAMPLES, ids=str)
def test_runnable_example(example, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    if example.lang == "python":
        output = io.StringIO()
        status = 0
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            try:
                exec(compile(example.code, example.where, "exec"), {"__name__": "__main__"})
            except SystemExit as exc:
                status = exc.code or 0
        text = output.getvalue()
    else:
        env = dict(os.environ, PATH=f"{workdir / 'bin'}{os.pathsep}{os.environ['PATH']}",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", example.code], cwd=workdir, env=env,
                                capture_output=True, text=True, timeout=120)
        status, text = result.returncode, result.stdout + result.stderr
    assert status == example.exit, f"{example.where} ended with {status}, not {example.exit}:\n{text}"
    assert "Traceback" not in text or example.lang == "python", text
    assert example.expect in text, f"{example.where}: {example.expect!r} not in its output:\n{text}"
