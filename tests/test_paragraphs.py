"""Texts, not sentences: Translator.translate_text and translate/evaluate with sentence splitting and --format html."""

import xml.etree.ElementTree as ElementTree

import html5lib
import pytest
from conftest import WORDS, assert_clean_error, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer_mt import Translator
from transformer_mt.config import config_from_dict
from transformer_mt.errors import TransformerMTError

# Sentences of the reversal task's words, written as sentences so that the segmenter finds them.
SENTENCES = [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(3 + i % 4)).capitalize() + "."
             for i in range(12)]


@pytest.fixture(scope="module")
def translator(small_run):
    return Translator.from_run(small_run[2], device="cpu")


PARAGRAPH = st.lists(st.sampled_from(SENTENCES), min_size=1, max_size=4).map(" ".join)
TEXT = st.lists(st.one_of(PARAGRAPH, st.sampled_from(["", " ", "  " + SENTENCES[0] + "\t"])), min_size=1,
                max_size=4).map("\n".join)


@settings(max_examples=15, deadline=None)
@given(st.lists(TEXT, min_size=1, max_size=3))
def test_a_text_translates_like_its_sentences_in_one_batch(translator, texts):
    sentences = [s + "." for text in texts for s in text.replace("\t", " ").split(".") if s.strip()]
    sentences = [s.strip() for s in sentences]
    by_sentence = dict(zip(sentences, translator.translate(sentences, beam_size=2)))
    got = translator.translate_text(texts, beam_size=2)
    assert len(got) == len(texts)
    for text, translation in zip(texts, got):
        lines = text.split("\n")
        assert len(translation.split("\n")) == len(lines)  # N lines in, N lines out
        for line, translated in zip(lines, translation.split("\n")):
            own = [s.strip() + "." for s in line.split(".") if s.strip()]
            want = " ".join(by_sentence[s] for s in own if by_sentence[s].strip())
            lead = line[:len(line) - len(line.lstrip())] if own else line
            trail = line[len(line.rstrip()):] if own else ""
            assert translated == lead + want + trail


def test_without_splitting_each_line_is_one_sentence(translator):
    lines = [" ".join(SENTENCES[:3]), SENTENCES[4], ""]
    assert translator.translate_text(lines, split_sentences=False) == translator.translate(lines)
    translator.config.decoding.split_sentences = False  # the config key is the default
    try:
        assert translator.translate_text(lines) == translator.translate(lines)
    finally:
        translator.config.decoding.split_sentences = True
    assert translator.translate_text(lines) != translator.translate(lines)


def test_html_without_tags_is_the_text_translation(translator):
    text = f"{SENTENCES[0]} {SENTENCES[1]}\n\n{SENTENCES[2]}"
    assert translator.translate_text([text], format="html") == translator.translate_text([text])


def test_html_keeps_its_structure_through_the_model(translator):
    html = (f'<div class="post"><p>{SENTENCES[0][:-1]} <b>{SENTENCES[1][:-1]}</b>. <a href="/x?a=1&amp;b=2">'
            f'{SENTENCES[2]}</a></p><pre>{SENTENCES[3]}</pre><p translate="no">{SENTENCES[4]}</p></div>')
    [output] = translator.translate_text([html], format="html")
    assert elements(output) == elements(html)
    assert f"<pre>{SENTENCES[3]}</pre>" in output and f'<p translate="no">{SENTENCES[4]}</p>' in output


def elements(document: str) -> set:
    """The (tag, attributes) of the document's elements; fails on a parse error."""
    parser = html5lib.HTMLParser(tree=html5lib.getTreeBuilder("etree", ElementTree), namespaceHTMLElements=False)
    tree = parser.parseFragment(document, container="div")
    assert not parser.errors, (parser.errors, document)
    return {(e.tag, tuple(sorted(e.attrib.items()))) for e in tree.iter()}


def test_options_that_give_several_results_per_sentence_are_refused(translator):
    with pytest.raises(TransformerMTError, match="nbest"):
        translator.translate_text(["A text."], nbest=2, beam_size=2)
    with pytest.raises(TransformerMTError, match="unknown format"):
        translator.translate_text(["A text."], format="markdown")
    with pytest.raises(TypeError):
        translator.translate_text("A text.")


def test_the_config_key_is_a_checked_boolean():
    assert config_from_dict({"decoding": {"split_sentences": False}}).decoding.split_sentences is False
    assert config_from_dict({}).decoding.split_sentences is True
    with pytest.raises(TransformerMTError, match="split_sentences"):
        config_from_dict({"decoding": {"split_sentences": "maybe"}})


def test_translate_and_evaluate_give_the_same_lines(small_run, tmp_path):
    _, _, run = small_run
    lines = [" ".join(SENTENCES[:3]), "", "  " + SENTENCES[3] + "  ", " ".join(SENTENCES[4:6]), SENTENCES[6]]
    src, ref = tmp_path / "src.txt", tmp_path / "ref.txt"
    src.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    ref.write_text("".join(f"ref {k}\n" for k in range(len(lines))), encoding="utf-8")
    translated = run_cli("translate", "--model", run, "--input", src, "--device", "cpu")
    assert translated.returncode == 0, translated.stderr
    evaluated = run_cli("evaluate", "--model", run, "--src", src, "--ref", ref, "--output", tmp_path / "hyp.txt",
                        "--device", "cpu")
    assert evaluated.returncode == 0, evaluated.stderr
    assert translated.stdout == (tmp_path / "hyp.txt").read_text(encoding="utf-8")
    assert len(translated.stdout.splitlines()) == len(lines)
    unsplit = run_cli("translate", "--model", run, "--input", src, "--device", "cpu", "--no-split-sentences")
    # Each line one sentence, the whitespace around it kept.
    assert [line.strip() for line in unsplit.stdout.splitlines()] == Translator.from_run(run, device="cpu").translate(lines)
    assert unsplit.stdout.splitlines()[2].startswith("  ")


def test_translate_format_html_reads_a_file_or_standard_input(small_run, tmp_path):
    _, _, run = small_run
    html = f'<p>{SENTENCES[0][:-1]} <em class="e">{SENTENCES[1]}</em></p>\n<script>a < b</script>\n'
    page = tmp_path / "page.html"
    page.write_text(html, encoding="utf-8")
    from_file = run_cli("translate", "--model", run, "--format", "html", "--input", page, "--device", "cpu")
    from_stdin = run_cli("translate", "--model", run, "--format", "html", "--device", "cpu",
                         input_bytes=html.encode("utf-8"))
    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout == from_stdin.stdout
    assert from_file.stdout.startswith("<p>") and from_file.stdout.endswith("</p>\n<script>a < b</script>\n")
    assert elements(from_file.stdout) == elements(html)
    page.write_text("<p>An <b>unclosed tag.</p>", encoding="utf-8")
    assert_clean_error(run_cli("translate", "--model", run, "--format", "html", "--input", page),
                       "malformed HTML", "line 1")
    assert_clean_error(run_cli("translate", "--model", run, "--format", "html", input_bytes=b"  \n"), "empty")
    assert_clean_error(run_cli("translate", "--model", run, "--format", "html", "--nbest", "2", "x"),
                       "--nbest", "--format html")


def test_html_word_pairs_leave_out_punctuation_pieces_and_mismatched_words():
    from transformer_mt.decoding.paragraphs import html_word_pairs
    from transformer_mt.decoding.translator import AlignedTranslation

    result = AlignedTranslation("Lo miro vida.", 0.0, [(3, 0), (0, 0), (1, 1), (2, 2), (3, 3), (3, 2)],
                                ["▁The", "▁cat", "▁sees", "."], ["▁Lo", "▁miro", "▁vida", "."])
    # The final full stop of the source attracts attention (3, 0), (3, 2): those pairs go, as does "." - "."
    assert html_word_pairs("The cat sees.", result) == [(0, 0), (1, 1), (2, 2)]
    assert html_word_pairs("The cat sees .", result) == []  # four words here, three in the pieces
