"""Plain text -> the sentences a model translates, and the translations -> text of the same shape.

    segmented = segment_text("First one. Second one.\n\nA new paragraph.", "en")
    segmented.sentences            # ['First one.', 'Second one.', 'A new paragraph.']
    segmented.join(translations, "de")

The models of this toolkit are trained on one sentence per line; given a paragraph they translate its
first sentence or two and drop the rest. So a text is cut into lines (at "\\n", "\\r\\n" or "\\r"),
each line into sentences, and :meth:`SegmentedText.join` puts the translations back: every line break,
blank line (paragraph) and the whitespace at the start and end of every line exactly where it was;
the sentences of one line joined by one space, or by nothing for a target language written without
spaces between sentences (Chinese, Japanese). Whitespace between two sentences of a line is not kept
as it was: it belongs to the source language's typography, not the target's.

Sentences are found by sentencex (Wikimedia's segmenter, https://github.com/wikimedia/sentencex):
rules for ~300 languages (abbreviations such as "z.B." or "Dr.", ordinal numbers, CJK full stops)
compiled into its wheel, nothing downloaded at run time, languages it has no rules for falling back
along a chain of related languages to generic rules, and a few microseconds a sentence (Rust). pysbd,
the other candidate, knows 22 languages and had its last release in 2021.

Language codes are given to sentencex as their primary subtag in lower case ("de-DE" -> "de",
"zh_Hans" -> "zh"): sentencex knows bare codes only and treats "de-DE" as unknown. A model whose
languages are not language codes (the demo's "src"/"tgt") or no language (None) gets the generic rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sentencex import get_sentence_boundaries

# Languages written without spaces between sentences (ISO 639-1/3 primary subtags).
NO_SPACE_BETWEEN_SENTENCES = frozenset({"zh", "ja", "yue", "wuu", "cmn", "lzh", "hak", "nan", "gan", "hsn", "cjy",
                                        "bo", "dz"})
LINE_BREAK = re.compile(r"\r\n|\r|\n")
GENERIC_LANGUAGE = "und"  # sentencex's fallback rules: no language's abbreviations


def primary_language(language: str | None) -> str:
    """The primary subtag of a language code in lower case ("pt_BR" -> "pt"); GENERIC_LANGUAGE for None or ""."""
    if not language:
        return GENERIC_LANGUAGE
    return re.split(r"[-_]", language.strip(), maxsplit=1)[0].lower() or GENERIC_LANGUAGE


def sentence_separator(language: str | None) -> str:
    """What stands between two translated sentences of one line in ``language``: "" or " "."""
    return "" if primary_language(language) in NO_SPACE_BETWEEN_SENTENCES else " "


def sentence_spans(text: str, language: str | None) -> list[tuple[int, int]]:
    """(start, end) character offsets of the sentences of ``text``, whitespace around them left out, in order;
    none for a text that is only whitespace."""
    spans = []
    for boundary in get_sentence_boundaries(primary_language(language), text):
        start, end = boundary["start_index"], boundary["end_index"]
        chunk = text[start:end]
        stripped = chunk.strip()
        if not stripped:
            continue
        start += len(chunk) - len(chunk.lstrip())
        spans.append((start, start + len(stripped)))
    return spans


@dataclass(frozen=True)
class _Line:
    leading: str  # whitespace before the first sentence
    sentences: int  # how many sentences of SegmentedText.sentences this line holds
    trailing: str  # whitespace after the last sentence
    ending: str  # the line break after the line ("" for the last line)
    text: str  # the whole line, given back as it was when it holds no sentence


@dataclass(frozen=True)
class SegmentedText:
    """A text cut into sentences; :meth:`join` gives the translations back in the text's shape."""

    sentences: list[str]  # the sentences to translate, in order: stripped, never empty
    lines: tuple[_Line, ...]

    def join(self, translations: list[str], target_language: str | None) -> str:
        """The text with sentence i replaced by ``translations[i]``: line breaks, blank lines and the
        whitespace at both ends of each line as they were; the sentences of a line joined by
        :func:`sentence_separator` of ``target_language`` (empty translations left out)."""
        if len(translations) != len(self.sentences):
            raise ValueError(f"{len(self.sentences)} sentences but {len(translations)} translations")
        separator = sentence_separator(target_language)
        parts = []
        position = 0
        for line in self.lines:
            if line.sentences:
                own = translations[position:position + line.sentences]
                position += line.sentences
                parts += [line.leading, separator.join(t.strip() for t in own if t.strip()), line.trailing]
            else:
                parts.append(line.text)
            parts.append(line.ending)
        return "".join(parts)


def segment_text(text: str, language: str | None, split_sentences: bool = True) -> SegmentedText:
    """Cut ``text`` into lines and (``split_sentences``) each line into sentences of ``language``.

    With ``split_sentences=False`` each line that is not only whitespace is one sentence. A text that is
    empty or only whitespace has no sentences, and join() gives it back unchanged.
    """
    if not isinstance(text, str):
        raise TypeError(f"segment_text() takes a string, got {type(text).__name__}")
    sentences: list[str] = []
    lines: list[_Line] = []
    start = 0
    for match in [*LINE_BREAK.finditer(text), None]:
        end = match.start() if match else len(text)
        line = text[start:end]
        ending = match.group() if match else ""
        content = line.strip()
        if not content:
            lines.append(_Line("", 0, "", ending, line))
        else:
            leading = line[:len(line) - len(line.lstrip())]
            trailing = line[len(line.rstrip()):]
            own = [line[s:e] for s, e in sentence_spans(line, language)] if split_sentences else [content]
            sentences += own
            lines.append(_Line(leading, len(own), trailing, ending, line))
        start = match.end() if match else len(text)
    return SegmentedText(sentences, tuple(lines))
