"""Plain text cut into sentences and put back in its shape (transformer_mt/text/segment.py)."""

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer_mt.text.segment import primary_language, segment_text, sentence_separator

SENTENCE = st.builds(lambda words, end: " ".join(words).capitalize() + end,
                     st.lists(st.sampled_from(["the", "cat", "sees", "a", "dog", "Anna", "city", "42", "café", "über"]),
                              min_size=1, max_size=6),
                     st.sampled_from([".", "!", "?", ""]))
LINE = st.builds(lambda lead, sentences, trail: lead + " ".join(sentences) + trail,
                 st.sampled_from(["", " ", "\t", "  "]), st.lists(SENTENCE, max_size=4), st.sampled_from(["", " ", "\t "]))
TEXT = st.builds(lambda lines, breaks: "".join(line + brk for line, brk in zip(lines, breaks)),
                 st.lists(LINE, min_size=1, max_size=6), st.lists(st.sampled_from(["\n", "\r\n", "\n\n", ""]),
                                                                 min_size=6, max_size=6))


def squeeze(text: str) -> str:
    return re.sub(r"\s", "", text)


@settings(max_examples=200, deadline=None)
@given(TEXT, st.booleans())
def test_sentences_come_back_in_the_shape_of_the_text(text, split):
    segmented = segment_text(text, "en", split_sentences=split)
    assert all(s and s == s.strip() for s in segmented.sentences)
    assert squeeze("".join(segmented.sentences)) == squeeze(text)  # nothing lost, nothing added
    marked = [f"<{k}>" for k in range(len(segmented.sentences))]
    joined = segmented.join(marked, "de")
    # Every line break, and the whitespace at both ends of every line, exactly where it was.
    source_lines, joined_lines = re.split(r"(\r\n|\r|\n)", text), re.split(r"(\r\n|\r|\n)", joined)
    assert len(joined_lines) == len(source_lines)
    for source, target in zip(source_lines, joined_lines):
        if not source.strip():
            assert target == source
        else:
            assert target[:len(target) - len(target.lstrip())] == source[:len(source) - len(source.lstrip())]
            assert target[len(target.rstrip()):] == source[len(source.rstrip()):]
    assert squeeze(joined) == "".join(marked)  # each translation once, in order
    if not split:  # one sentence per line that has text
        assert segmented.sentences == [line.strip() for line in re.split(r"\r\n|\r|\n", text) if line.strip()]


def test_a_line_of_sentences_becomes_its_sentences_and_joins_with_the_target_spacing():
    segmented = segment_text("  The cat sees a dog.   A dog sees the cat!\n\nAnna runs?", "en")
    assert segmented.sentences == ["The cat sees a dog.", "A dog sees the cat!", "Anna runs?"]
    assert segmented.join(["一。", "二！", "三？"], "zh") == "  一。二！\n\n三？"
    assert segmented.join(["一。", "二！", "三？"], "ja-JP") == "  一。二！\n\n三？"
    assert segmented.join(["Eins.", "Zwei!", "Drei?"], "de") == "  Eins. Zwei!\n\nDrei?"
    assert segmented.join(["Eins.", "", "Drei?"], "de") == "  Eins.\n\nDrei?"  # no double space for an empty one


def test_chinese_and_japanese_sentences_are_found_without_spaces():
    assert segment_text("这是第一句。这是第二句！第三句？", "zh").sentences == ["这是第一句。", "这是第二句！", "第三句？"]
    assert segment_text("これは文です。これも文です。", "ja").sentences == ["これは文です。", "これも文です。"]


def test_the_source_language_rules_apply_with_region_or_script_subtags():
    text = "Er kam z.B. am 3. Mai an. Dann ging er."
    want = ["Er kam z.B. am 3. Mai an.", "Dann ging er."]
    assert segment_text(text, "de").sentences == want
    assert segment_text(text, "de-DE").sentences == want
    assert segment_text(text, "DE_at").sentences == want
    assert primary_language("zh-Hans") == "zh" and sentence_separator("zh_TW") == ""
    assert sentence_separator("en") == " " and sentence_separator(None) == " "


def test_unknown_language_codes_and_none_fall_back_to_generic_rules():
    for language in ("src", "tgt", None, "", "xx-YY"):
        assert segment_text("A dog sees the cat. Two cats run.", language).sentences == [
            "A dog sees the cat.", "Two cats run."]


def test_a_text_without_sentences_comes_back_unchanged():
    for text in ("", " ", "\n", " \n\t\n", "\r\n\r\n"):
        segmented = segment_text(text, "en")
        assert segmented.sentences == []
        assert segmented.join([], "zh") == text


def test_no_split_keeps_each_line_whole():
    segmented = segment_text("One. Two.\n  Three. Four.  \n", "en", split_sentences=False)
    assert segmented.sentences == ["One. Two.", "Three. Four."]
    assert segmented.join(["A", "B"], "en") == "A\n  B  \n"


MULTI30K = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "multi30k"


@pytest.mark.parametrize("language", ["de", "en", "fr"])
def test_multi30k_test2016_lines_are_single_sentences_so_splitting_changes_no_translation(language):
    # Issue 24 asks that test2016 BLEU with splitting on equals splitting off: with every line segmented to
    # itself, the model is given exactly the same sentences both ways, so the translations (and any
    # model's BLEU) are identical, not just within 0.1.
    path = MULTI30K / f"test2016.{language}"
    if not path.is_file():
        pytest.skip(f"{path} is not here (the shared corpora sit beside the repository)")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1000
    for line in lines:
        assert segment_text(line, language).sentences == segment_text(line, language, split_sentences=False).sentences


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(alphabet="abcdefghij", min_size=1, max_size=30), min_size=1, max_size=400),
       st.sampled_from([" ", "  ", "\t"]))
def test_a_sentence_without_an_end_is_cut_at_spaces_into_pieces_a_model_can_read(words, space):
    """A paragraph of words without a full stop would be read only up to the model's length limit, the rest
    dropped: it is cut at white space, nothing lost, each piece within MAX_SENTENCE_CHARS (or one word)."""
    from transformer_mt.text.segment import MAX_SENTENCE_CHARS, sentence_spans

    text = space.join(words)
    spans = sentence_spans(text, "en")
    assert [word for s, e in spans for word in text[s:e].split()] == words
    assert all(e - s <= MAX_SENTENCE_CHARS or not re.search(r"\s", text[s:e]) for s, e in spans)
