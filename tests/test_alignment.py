"""Hard alignments from cross-attention: Translator.translate(return_alignment=True), translate --alignment."""

import pytest
import torch
from conftest import WORDS, assert_clean_error, run_cli

from transformer_mt import Translator
from transformer_mt.decoding.alignment import format_alignment, hard_alignment, piece_words, word_alignment
from transformer_mt.errors import TransformerMTError

SENTENCES = [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(3 + i % 5)) for i in range(6)]


@pytest.fixture(scope="module")
def translator(small_run):
    return Translator.from_run(small_run[2], device="cpu")


def test_each_target_piece_gets_the_source_piece_it_attends_to_most():
    cross = torch.zeros(2, 2, 4, 3)  # layers, heads, steps (3 pieces + the end token), source pieces
    cross[0, 0, :, 0] = 1.0  # layer 1: head 1 on source 0, head 2 split between sources 1 and 2
    cross[0, 1, :, 1], cross[0, 1, :, 2] = 0.4, 0.6
    cross[1, :, torch.arange(4), torch.tensor([2, 1, 0, 0])] = 1.0  # layer 2: reversed
    assert hard_alignment(cross, 1, 3) == [(0, 0), (0, 1), (0, 2)]  # heads averaged: 0.5 / 0.2 / 0.3
    assert hard_alignment(cross, 2, 3) == [(2, 0), (1, 1), (0, 2)]  # one pair per piece; the end step is left out
    assert format_alignment([(2, 0), (1, 1), (0, 2)]) == "2-0 1-1 0-2"


def test_pieces_become_words_at_the_word_marker():
    assert piece_words(["▁The", "▁doc", "t", "ors", "▁", "(", "x", ")", "."]) == (
        [0, 1, 1, 1, 2, 2, 2, 2, 2], ["The", "doctors", "(x)."])
    assert piece_words(["un", "▁mark", "ed"]) == ([0, 1, 1], ["un", "marked"])  # no marker on the first piece
    pairs, source, target = word_alignment([(1, 0), (2, 1), (0, 2), (0, 3)], ["▁A", "▁doc", "tor"],
                                           ["▁Un", "▁medar", "i", "▁x"])
    assert (pairs, source, target) == ([(1, 0), (0, 1), (1, 1), (0, 2)], ["A", "doctor"], ["Un", "medari", "x"])


def test_translate_returns_one_pair_per_target_piece_inside_the_source(translator):
    sentences = SENTENCES + [""]
    plain = translator.translate(sentences, beam_size=3, nbest=2, return_scores=True)
    aligned = translator.translate(sentences, beam_size=3, nbest=2, return_alignment=True)
    for sentence, want, got in zip(sentences, plain, aligned):
        assert [t.text for t in got] == [t.text for t in want]
        assert [t.score for t in got] == pytest.approx([t.score for t in want], abs=1e-5)
        source_pieces = translator.src_tokenizer.pieces(sentence) if sentence else []
        for translation in got:
            assert translation.source_tokens == source_pieces
            assert translation.target_tokens == (translator.tgt_tokenizer.pieces(translation.text)
                                                 if translation.text else [])
            assert [j for _, j in translation.alignment] == list(range(len(translation.target_tokens)))
            assert all(0 <= i < len(source_pieces) for i, _ in translation.alignment)
    assert aligned[-1] == [("", 0.0, [], [], [])]
    assert sum(len(t.alignment) for sentence in aligned for t in sentence) > 2 * len(SENTENCES)  # not vacuous
    greedy = translator.translate(SENTENCES, beam_size=1, return_alignment=True)
    assert [g[0].text for g in greedy] == translator.translate(SENTENCES, beam_size=1)


def test_word_alignments_count_the_words_of_the_texts(translator):
    for source, [translation] in zip(SENTENCES, translator.translate(SENTENCES, return_alignment=True,
                                                                     alignment_unit="words", alignment_layer=1)):
        assert translation.source_tokens == source.split()
        assert translation.target_tokens == translation.text.split()
        targets = [j for _, j in translation.alignment]
        assert set(targets) == set(range(len(translation.target_tokens))) and targets == sorted(targets)


def test_bad_alignment_settings_are_clear_errors(translator):
    with pytest.raises(TransformerMTError, match="alignment layer 2 does not exist: the model has 1 decoder"):
        translator.translate(SENTENCES[:1], return_alignment=True, alignment_layer=2)
    with pytest.raises(TransformerMTError, match="alignment layer 0 does not exist"):
        translator.translate(SENTENCES[:1], return_alignment=True, alignment_layer=0)
    with pytest.raises(TransformerMTError, match="unknown alignment unit 'letters'"):
        translator.translate(SENTENCES[:1], return_alignment=True, alignment_unit="letters")


def test_translate_command_prints_each_translation_with_its_alignment(small_run, translator):
    run = small_run[2]
    result = run_cli("translate", "--model", run, "--device", "cpu", "--nbest", "2", "--beam-size", "2",
                     SENTENCES[0], "", SENTENCES[1], "--alignment")
    assert result.returncode == 0, result.stderr
    expected = translator.translate([SENTENCES[0], "", SENTENCES[1]], beam_size=2, nbest=2, return_alignment=True)
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and lines[1] == "\t\t\t"
    for line, translations in zip(lines, expected):
        fields = line.split("\t")
        assert len(fields) == 4  # two translations, each followed by its alignment (empty ones for an empty line)
        assert fields[0::2] == ([t.text for t in translations] + ["", ""])[:2]
        assert fields[1::2] == ([format_alignment(t.alignment) for t in translations] + ["", ""])[:2]
    words = run_cli("translate", "--model", run, "--device", "cpu", "--alignment", "words", SENTENCES[2])
    [translation] = translator.translate([SENTENCES[2]], return_alignment=True, alignment_unit="words")[0]
    assert words.stdout == f"{translation.text}\t{format_alignment(translation.alignment)}\n"


def test_translate_command_alignment_errors(small_run):
    run = small_run[2]
    assert_clean_error(run_cli("translate", "--model", run, "--alignment-layer", "1", "ba"), "add --alignment")
    assert_clean_error(run_cli("translate", "--model", run, "--device", "cpu", "--alignment-layer", "3",
                               "--alignment", "pieces", "ba"), "alignment layer 3 does not exist")
    assert_clean_error(run_cli("translate", "--model", run, "--engine", "ctranslate2", "--alignment", "pieces", "ba"),
                       "--alignment needs --engine torch")
    help_text = run_cli("translate", "--help").stdout
    assert "--alignment [{pieces,words}]" in help_text and "--alignment-layer L" in help_text
