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

A document is not a corpus: with ``paragraphs=True`` a hard-wrapped paragraph (an e-mail's, a README's,
a plain-text book's, wrapped at a fixed width) is one unit, its lines joined before it is cut into sentences,
and its translation is wrapped again at the width of its longest source line (``wrapped_paragraphs`` says
which lines are one paragraph, and why).

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
import textwrap
from dataclasses import dataclass

from sentencex import get_sentence_boundaries

# Languages written without spaces between sentences (ISO 639-1/3 primary subtags).
NO_SPACE_BETWEEN_SENTENCES = frozenset({"zh", "ja", "yue", "wuu", "cmn", "lzh", "hak", "nan", "gan", "hsn", "cjy",
                                        "bo", "dz"})
LINE_BREAK = re.compile(r"\r\n|\r|\n")
# What a line that ends a sentence ends with, before closing quotes and brackets.
SENTENCE_END = frozenset(".!?…。！？‼⁇⁈⁉؟।॥")
CLOSING = "\"'”’»›)]}」』）"
# A line that starts a list item, a heading or a table row starts a paragraph of its own.
# Narrower blocks are never taken for wrapped text: a sign-off ("Best,\nTom"), an address, a short list.
MIN_WRAP_WIDTH = 20
LIST_ITEM = re.compile(r"^\s*(?:[-*+•‣◦|#]|\d{1,3}[.)]|[a-zA-Z][.)])\s")
# What stands before a line's text and is not the model's to translate: indentation, e-mail quote marks ("> ",
# "> > "), and a list item's mark ("- ", "* ", "1. "). It is written back before the translation.
QUOTE = re.compile(r"^\s*(?:>[ \t]?)+")
LINE_LEAD = re.compile(r"^\s*(?:>[ \t]?)*\s*(?:(?:[-*+•‣◦]|\d{1,3}[.)])[ \t]+)?")


def line_lead(line: str) -> str:
    """The indentation, quote marks and list mark at the start of ``line`` (see LINE_LEAD)."""
    return LINE_LEAD.match(line).group()


def quote_marks(line: str) -> str:
    """A line's e-mail quote marks without their spacing (">>" for "> > text")."""
    match = QUOTE.match(line)
    return re.sub(r"\s", "", match.group()) if match else ""
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
        spans += _cut_long(text, start, start + len(stripped))
    return spans


# A "sentence" longer than this (a paragraph without full stops, a list run together) is cut at spaces into
# pieces of at most this length: a model reads a few hundred tokens at most, and would drop the rest.
MAX_SENTENCE_CHARS = 600


def _cut_long(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """The span (start, end) of ``text``, cut at white space into spans of at most MAX_SENTENCE_CHARS (a word
    longer than that is a span of its own)."""
    spans = []
    while end - start > MAX_SENTENCE_CHARS:
        cut = max(text.rfind(" ", start, start + MAX_SENTENCE_CHARS + 1), text.rfind("\t", start, start + MAX_SENTENCE_CHARS + 1))
        if cut <= start:  # one long word: up to the next space
            spaces = [i for i in (text.find(" ", start, end), text.find("\t", start, end)) if i > start]
            cut = min(spaces) if spaces else end
        spans.append((start, cut))
        start = cut
        while start < end and text[start].isspace():
            start += 1
    if start < end:
        spans.append((start, end))
    return spans


def ends_sentence(line: str) -> bool:
    """Whether ``line`` ends with a sentence's final punctuation (closing quotes and brackets after it allowed)."""
    stripped = line.rstrip().rstrip(CLOSING)
    return bool(stripped) and stripped[-1] in SENTENCE_END


def wrapped_paragraphs(lines: list[str]) -> list[range]:
    """The hard-wrapped paragraphs among ``lines`` (texts without their line breaks): ranges of two or more
    neighbouring lines that are one paragraph wrapped at a fixed width, as e-mails, READMEs and plain-text
    books are written.

    The rule, per block of non-blank lines whose longest line is W characters long: a line *runs on* into
    the next when the next line's first word would not have fitted on it within W (``len(line) + 1 +
    len(word) > W``: the mark greedy wrapping leaves, whatever the width it wrapped at, since that width is
    at least W) and the next line does not start a list item, quotation or table row. A block is wrapped
    text when at least one line that runs on does not end a sentence; its paragraphs are then the chains
    of lines that run on, so a short line (a heading, a paragraph's last line) ends a paragraph. A block
    whose lines all end sentences (a file of one sentence per line) is left line by line, as is a line that
    a short line follows (a heading over its text, the items of a list): lines are joined only where the
    text shows it was wrapped, never because a sentence lacks its full stop. A block narrower than
    MIN_WRAP_WIDTH characters (a sign-off, an address) is never wrapped text.
    """
    paragraphs: list[range] = []
    start = 0
    while start < len(lines):
        if not lines[start].strip():
            start += 1
            continue
        end = start
        while end < len(lines) and lines[end].strip():
            end += 1
        width = max(len(line.rstrip()) for line in lines[start:end])
        if width < MIN_WRAP_WIDTH:
            start = end
            continue
        runs_on = []
        for k in range(start, end - 1):
            marks = QUOTE.match(lines[k + 1])
            rest = lines[k + 1][marks.end() if marks else 0:]
            following = rest.split() or [""]
            runs_on.append(len(lines[k].rstrip()) + 1 + len(following[0]) > width and not LIST_ITEM.match(rest)
                           and quote_marks(lines[k]) == quote_marks(lines[k + 1]))
        if any(on and not ends_sentence(lines[start + k]) for k, on in enumerate(runs_on)):
            first = start
            for k in range(start, end):
                if k == end - 1 or not runs_on[k - start]:
                    if k > first:
                        paragraphs.append(range(first, k + 1))
                    first = k + 1
        start = end
    return paragraphs


def join_wrapped_lines(lines: list[str]) -> str:
    """The text of a wrapped paragraph's lines as one line: a line break is a space, except after a hyphen
    that ends a word part ("well-" + "known" is "well-known"), which is how greedy wrapping splits at hyphens."""
    text = ""
    for k, line in enumerate(lines):
        line = (line[len(line_lead(line)):] if k else line).strip()
        if text and not (len(text) > 1 and text[-1] == "-" and text[-2].isalpha() and line[:1].isalpha()):
            text += " "
        text += line
    return text


@dataclass(frozen=True)
class _Line:
    leading: str  # whitespace before the first sentence
    sentences: int  # how many sentences of SegmentedText.sentences this line holds
    trailing: str  # whitespace after the last sentence
    ending: str  # the line break after the line ("" for the last line)
    text: str  # the whole line, given back as it was when it holds no sentence
    # A hard-wrapped paragraph of several source lines is one _Line written back wrapped at ``width``
    # characters (0: a line of its own), its lines after the first indented by ``indent`` and broken by
    # ``line_break``.
    width: int = 0
    indent: str = ""
    line_break: str = ""


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
                translated = separator.join(t.strip() for t in own if t.strip())
                if line.width:
                    wrapped = textwrap.wrap(translated, line.width, initial_indent=line.leading,
                                            subsequent_indent=line.indent, break_long_words=False)
                    parts += [line.line_break.join(wrapped) or line.leading, line.trailing]
                else:
                    parts += [line.leading, translated, line.trailing]
            else:
                parts.append(line.text)
            parts.append(line.ending)
        return "".join(parts)


def segment_text(text: str, language: str | None, split_sentences: bool = True,
                 paragraphs: bool = False) -> SegmentedText:
    """Cut ``text`` into lines and (``split_sentences``) each line into sentences of ``language``.

    With ``split_sentences=False`` each line that is not only whitespace is one sentence. With
    ``paragraphs=True`` a hard-wrapped paragraph (see :func:`wrapped_paragraphs`) counts as one line: its
    sentences are cut from its lines joined, and :meth:`SegmentedText.join` writes its translation wrapped at
    the width of its longest source line; a line's quote marks ("> ") and list mark ("- ", "1. ") are kept
    out of the translation and written before it (on every line of a wrapped quoted paragraph). A text that
    is empty or only whitespace has no sentences, and join() gives it back unchanged.
    """
    if not isinstance(text, str):
        raise TypeError(f"segment_text() takes a string, got {type(text).__name__}")
    matches = list(LINE_BREAK.finditer(text))
    starts = [0] + [match.end() for match in matches]
    ends = [match.start() for match in matches] + [len(text)]
    endings = [match.group() for match in matches] + [""]
    raw = [text[start:end] for start, end in zip(starts, ends)]
    first_of = {paragraph.start: paragraph for paragraph in wrapped_paragraphs(raw)} if paragraphs else {}
    sentences: list[str] = []
    lines: list[_Line] = []
    k = 0
    while k < len(raw):
        line = raw[k]
        paragraph = first_of.get(k)
        content = join_wrapped_lines(raw[k:paragraph.stop]) if paragraph else line.strip()
        if not content:
            lines.append(_Line("", 0, "", endings[k], line))
            k += 1
            continue
        # A document's list and quote marks stay out of the translation; a corpus line is translated whole.
        leading = line_lead(line) if paragraphs else line[:len(line) - len(line.lstrip())]
        if paragraph:
            content = content[len(leading.lstrip()):].strip() if leading.strip() else content
        else:
            content = line[len(leading):].strip()
        if not content:  # a line of marks only ("> ", "-"): given back as it is
            lines.append(_Line("", 0, "", endings[k], line))
            k += 1
            continue
        if split_sentences:
            own = [content[s:e] for s, e in sentence_spans(content, language)]
        else:
            own = [content]
        sentences += own
        if paragraph:
            last = raw[paragraph.stop - 1]
            second = raw[k + 1]
            lines.append(_Line(leading, len(own), last[len(last.rstrip()):], endings[paragraph.stop - 1],
                               "\n".join(raw[paragraph.start:paragraph.stop]),
                               width=max(len(one.rstrip()) for one in raw[paragraph.start:paragraph.stop]),
                               indent=line_lead(second), line_break=endings[k]))
            k = paragraph.stop
        else:
            lines.append(_Line(leading, len(own), line[len(line.rstrip()):], endings[k], line))
            k += 1
    return SegmentedText(sentences, tuple(lines))
