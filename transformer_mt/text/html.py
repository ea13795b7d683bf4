"""HTML -> the sentences a model translates, and the translations -> HTML of the same structure.

    segmented = segment_html('<p>The <b>big</b> cat sees <a href="/d">a dog</a>.</p>', "en")
    segmented.sentences     # ['The big cat sees a dog.']
    segmented.join(translations, alignments, "de")

The document is parsed by html5lib, which implements the WHATWG HTML parsing algorithm (what browsers
do) and, unlike lxml's, selectolax's or BeautifulSoup's parsers, reports the standard's parse errors:
that is what tells a malformed document (an unclosed or misnested tag, a tag or comment cut off at
the end) from a well-formed one. A malformed document raises :class:`MalformedHtmlError` naming the
line, column and problem, instead of being translated in a shape the author did not mean; a few
character-level slips that every browser reads the same way (a bare "&" or "<" in text, a missing
doctype, a repeated attribute) are accepted. The tree is written back by html5lib's serializer.

What is translated: the text of each block (a paragraph, heading, list item, table cell, the title,
or the text between blocks), taken together with the inline elements inside it (<b>, <i>, <a>, <em>,
<span>, ...): they do not cut a sentence. Whitespace in the text counts as one space (as in a browser),
the block's text is cut into sentences (text/segment.py), and each sentence is translated whole.
Left as they are, text included: <script>, <style>, <code>, <pre>, <textarea>, <template>, the other
raw-text elements (<noscript>, <noembed>, <noframes>, <xmp>, <iframe>), SVG and MathML, elements with
translate="no" or class "notranslate" (and everything inside them), comments, attributes (href, src, alt,
title, class: untouched, entities included).

Putting the inline elements back is the approach of Bergamot (Mozilla's Firefox translations): each
source word knows the inline elements it stood in (the deepest of its characters'), and each target
word takes those of the source word it is aligned to (with several, the one inside the most elements).
A target word aligned to no source word takes the elements that both its aligned neighbours stand in.
An element then spans from its first to its last target word where the nesting allows, so it stays one
element; where the translation moves it across a sibling element, it is written twice (never a broken
or wrongly nested tag). An element whose source words got no target word wraps the target word at the
same relative position (an empty copy of it when the sentence's translation is empty), so no element
is lost. Punctuation that stood outside an element ("<a>the dog</a>.") stays outside it in the
translation, the sentence's final punctuation included. Elements without text (<br>, <img>, an empty
<a>) and protected elements inside a sentence (an inline <code>) stay after the target word aligned to
the source word they followed; a <br> parts two words as a space does.

Documents nested more than MAX_DEPTH elements deep are refused at the tag past it, before html5lib's tree is
that deep (its tree building is quadratic in the nesting), and a tag with more than MAX_ATTRIBUTES attributes as
soon as html5lib's tokenizer reads one more (both counted in that tokenizer: a separate pass with the standard
library's HTMLParser took 39 s on 60 kB of "<a " repeated) (it compares each attribute with all the tag's earlier ones: quadratic
in their number). html5lib is pure Python: about 25 ms a kilobyte here.

Words, as :meth:`SegmentedHtml.join` counts them, are the whitespace-separated words of
``sentences[k]`` and of ``translations[k]`` (``str.split()``): the words of
``Translator.translate(..., return_alignment=True, alignment_unit="words")``, which joins SentencePiece
pieces at their word-start marks (decoding/alignment.py), on the text after SentencePiece's
normalization; where normalization changes the number of words (rare: characters it removes), pairs
that point past the end are ignored and the words they leave unaligned are handled as above.
``decoding.paragraphs.html_word_pairs`` makes these pairs from a translation with piece alignments,
leaving out punctuation pieces (the decoder's attention sink).

A document with no element at all (plain text, entities allowed) is segmented as text (lines and
blank lines kept, as text/segment.py does) and its translation is exactly the text translation,
escaped for HTML.
"""

from __future__ import annotations

import bisect
import html as html_escaping
import re
import secrets
import unicodedata
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field

import html5lib
from html5lib._tokenizer import HTMLTokenizer
from html5lib.constants import E as PARSE_ERROR_MESSAGES
from html5lib.constants import tokenTypes
from html5lib.serializer import HTMLSerializer

from ..errors import TransformerMTError
from .segment import SegmentedText, segment_text, sentence_separator, sentence_spans


class MalformedHtmlError(TransformerMTError):
    """An HTML document that cannot be translated as it stands (malformed, empty, too deeply nested)."""


# Elements whose content is never translated (code, scripts, raw text) and that are written back as they were.
# The raw-text elements of the HTML parsing algorithm (style, xmp, iframe, noembed, noframes; script; noscript)
# are among them: their content is one text node, markup included ("<p>Your <b>browser</b> ..." inside
# <noframes> is characters, not elements), so translated as text its tags would be lost or mangled. Browsers
# never show <noembed> and <noframes> (they support embeds and frames: "display: none" in the rendering rules),
# so their content stays exactly as it was, as <noscript>'s does.
PROTECTED_TAGS = frozenset({"script", "style", "code", "pre", "textarea", "template", "kbd", "samp", "var", "math",
                            "svg", "iframe", "object", "noscript", "noembed", "noframes", "xmp"})
# Of those, the ones that may stand inside a sentence (kept whole there) rather than part two blocks of text.
INLINE_PROTECTED_TAGS = frozenset({"script", "style", "code", "template", "kbd", "samp", "var", "math", "svg",
                                   "noscript", "noembed", "noframes"})
# Inline (phrasing) elements that may stand inside a sentence without cutting it.
INLINE_TAGS = frozenset({"a", "abbr", "b", "bdi", "bdo", "big", "cite", "data", "del", "dfn", "em", "font", "i", "ins",
                         "label", "mark", "nobr", "q", "s", "small", "span", "strike", "strong", "sub", "sup", "time",
                         "tt", "u", "acronym"})
# Elements without text content that may stand inside a sentence: they stay near the word they followed.
VOID_INLINE_TAGS = frozenset({"br", "wbr", "img", "input", "embed", "button", "select", "meter", "progress", "audio",
                              "video", "canvas", "picture"})
# html5lib parse errors that browsers all resolve the same way and that change no structure.
TOLERATED_PARSE_ERRORS = frozenset({
    "expected-named-entity", "named-entity-without-semicolon", "expected-numeric-entity",
    "numeric-entity-without-semicolon", "illegal-codepoint-for-numeric-entity", "cant-convert-numeric-entity",
    "expected-tag-name", "expected-tag-name-but-got-right-bracket", "expected-tag-name-but-got-question-mark",
    "duplicate-attribute", "expected-doctype-but-got-start-tag", "expected-doctype-but-got-chars",
    "expected-doctype-but-got-eof", "unknown-doctype",
})
# Elements without an end tag, or whose end tag may be left out (the next one closes them): not nesting.
NO_END_TAG = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
                        "wbr", "param", "keygen", "p", "li", "dt", "dd", "option", "optgroup", "tr", "td", "th",
                        "thead", "tbody", "tfoot", "colgroup", "caption", "rb", "rt", "rtc", "rp", "html", "head",
                        "body"})
DOCTYPE = "<!DOCTYPE>"  # the tag html5lib's ElementTree builder gives the doctype
_START_TAG, _END_TAG = tokenTypes["StartTag"], tokenTypes["EndTag"]
MAX_DEPTH = 256  # deeper nesting is refused: no real page needs it, and walking it costs a recursion each
# More attributes on one tag are refused: a page's busiest elements have a few dozen. html5lib's time per
# attribute grows with the tag's attributes before it; at 256 a document of nothing but such tags (of distinct
# one-character names, the worst case) parses at ~7 ms a kilobyte, against ~1.5 for ordinary HTML and ~17 at 1,000.
MAX_ATTRIBUTES = 256
DOCUMENT_START = re.compile(r"\s*(<!--.*?-->\s*)*<(!doctype|html[\s>])", re.IGNORECASE | re.DOTALL)


def _serializer() -> HTMLSerializer:
    # Every tag written (no optional end tags left out) and attribute values always quoted: the output
    # reads the same in any parser, and its tags can be compared one by one with the input's.
    return HTMLSerializer(omit_optional_tags=False, quote_attr_values="always", resolve_entities=True)


_WALKER = html5lib.getTreeWalker("etree", ElementTree)


def _render(node) -> str:
    """``node`` (an element, without its tail; or a fragment or document) as HTML."""
    return _serializer().render(_WALKER(node))


def _tag_pair(element) -> tuple[str, str]:
    """The start and end tag of an inline element as HTML, attributes as they were, written as html5lib's
    serializer writes them (values in double quotes, "&" and '"' escaped): asking the serializer would
    cost a tree walk per element, a third of the time on a page full of links."""
    attributes = "".join(f' {name}="{value.replace("&", "&amp;").replace(chr(34), "&quot;")}"'
                         for name, value in element.attrib.items())
    return f"<{element.tag}{attributes}>", f"</{element.tag}>"


def _is_protected(element) -> bool:
    tag = element.tag
    if not isinstance(tag, str) or tag.startswith(("{", "<")):  # a comment, the doctype, SVG/MathML inside
        return True
    if tag.lower() in PROTECTED_TAGS:
        return True
    attributes = {name.lower(): value for name, value in element.attrib.items() if isinstance(name, str)}
    if attributes.get("translate", "").strip().lower() == "no":
        return True
    return "notranslate" in attributes.get("class", "").split()


def _has_text(element) -> bool:
    return any(text.strip() for text in element.itertext())


def _is_inline(element) -> bool:
    """Whether ``element`` may stand inside a sentence: an inline element holding only text and such
    elements, or one that is kept whole there (a comment, a void element, an inline protected element
    such as <code>; a protected block such as <pre> or <div translate="no"> parts the text around it)."""
    tag = element.tag
    if tag == DOCTYPE:
        return False
    if not isinstance(tag, str):  # a comment or a processing instruction
        return True
    name = tag.rsplit("}", 1)[-1].lower()  # SVG and MathML elements are namespaced
    if name in VOID_INLINE_TAGS or name in INLINE_PROTECTED_TAGS:
        return True
    if name not in INLINE_TAGS:
        return False
    return _is_protected(element) or all(_is_inline(child) for child in element)


def _is_kept_whole(element) -> bool:
    """An element that stands inside a sentence as one piece, its text (if any) not translated."""
    tag = element.tag
    return (_is_protected(element) or (isinstance(tag, str) and tag.lower() in VOID_INLINE_TAGS)
            or not _has_text(element))


@dataclass
class _Word:
    text: str
    stack: tuple[int, ...]  # the run's inline elements the word stands in, outermost first
    # Punctuation at the word's start/end that stood outside some of its elements ("<a>dog</a>." ->
    # "."): the stack it stood in, or None. A target word aligned to it keeps such punctuation outside too.
    lead_stack: tuple[int, ...] | None = None
    tail_stack: tuple[int, ...] | None = None
    touched: frozenset[int] = frozenset()  # every element any of its characters stands in


@dataclass
class _Anchor:
    html: str  # the element, written whole
    stack: tuple[int, ...]
    sentence: int  # index among the run's sentences
    after: int | None  # -1: before the sentence's first word; i: after source word i; None: after its last word
    space_before: bool
    space_after: bool


@dataclass
class _Run:
    """The text of one block: inline content between two block boundaries."""

    leading: str  # whitespace before the first sentence, written back as it was
    trailing: str
    first: int  # index of its first sentence in SegmentedHtml.sentences
    words: list[list[_Word]]  # each sentence's source words
    # Each sentence's final punctuation's stack when it stood outside the last word's elements ("... <i>sees</i>
    # a <b>dog</b>." -> ()): a translation's final punctuation goes there, whichever word it is attached to.
    ends: list[tuple[int, ...] | None]
    anchors: list[_Anchor]
    tags: list[tuple[str, str]]  # element id -> (start tag, end tag)
    chains: list[tuple[int, ...]]  # element id -> the element and its ancestors in the run, outermost first


@dataclass
class _Token:
    html: str
    stack: set[int]
    separator: str  # written before the token, unless it is the run's first
    whole: bool = False  # an element kept whole: it stays in the elements it stood in, no other is put around it


@dataclass(frozen=True)
class SegmentedHtml:
    """An HTML document cut into sentences; :meth:`join` writes the translated document."""

    sentences: list[str]  # the plain text of each sentence, inline tags removed, words separated by one space
    _skeleton: str = ""  # the document as HTML, each translated run replaced by a marker
    _marker: re.Pattern | None = None
    _runs: tuple[_Run, ...] = ()
    _plain: SegmentedText | None = None  # the document had no element: it is translated as text
    # Whether any sentence holds an inline element or an element inside it (<br>, <code>), which join()
    # places by alignments: without any, translating needs no alignment.
    has_inline_tags: bool = field(default=False)

    def join(self, translations: list[str], alignments: list[list[tuple[int, int]]] | None,
             target_language: str | None) -> str:
        """The document with each sentence replaced by its translation, inline elements placed by
        ``alignments`` (for each sentence, pairs (i, j): source word i aligned to target word j; None:
        by relative position)."""
        if len(translations) != len(self.sentences):
            raise ValueError(f"{len(self.sentences)} sentences but {len(translations)} translations")
        if alignments is not None and len(alignments) != len(self.sentences):
            raise ValueError(f"{len(self.sentences)} sentences but {len(alignments)} alignments")
        if self._plain is not None:
            return html_escaping.escape(self._plain.join(translations, target_language), quote=False)
        rendered = [_render_run(run, translations, alignments, target_language) for run in self._runs]
        return self._marker.sub(lambda match: rendered[int(match.group(1))], self._skeleton)


class _AttributeBoundTokenizer(HTMLTokenizer):
    """html5lib's tokenizer, refusing a tag (start or end tag) as soon as it reads its attribute number
    MAX_ATTRIBUTES + 1. html5lib compares each attribute name with those of all the tag's earlier attributes (to
    report a repeated one), time quadratic in their number: one <p> of 40,000 attributes (430 kB) took 50 s,
    of 300,000 (3.5 MB) most of an hour. Counted here, in the tokenizer that reads the tags, so that nothing that
    is not an attribute to the parser (a script, a comment, a quoted value holding "<" or "=") is counted."""

    def attributeNameState(self):
        # Entered as each attribute begins, after html5lib has added it to the tag's list.
        if len(self.currentToken["data"]) > MAX_ATTRIBUTES:
            line, column = self.stream.position()
            raise MalformedHtmlError(f"the HTML document has a tag with more than {MAX_ATTRIBUTES} attributes (the "
                                     f"next at line {line}, column {column}); a page needs a few dozen at most: "
                                     f"remove the ones it does not need")
        return super().attributeNameState()

    def __iter__(self):
        """The tokens, with an estimate of how deep the document nests kept as they pass (the open start tags, an
        end tag closing its own and what was left open inside it): html5lib's tree building takes time quadratic
        in the nesting (8,000 nested elements, 130 kB: minutes), so a document deeper than MAX_DEPTH is refused
        at the first tag past it, before the tree is that deep. (_check_depth checks the tree built.)"""
        open_tags: list[str] = []
        for token in super().__iter__():
            kind = token["type"]
            if kind == _START_TAG and token["name"] not in NO_END_TAG:
                open_tags.append(token["name"])
                if len(open_tags) > MAX_DEPTH:
                    raise _too_deep()
            elif kind == _END_TAG and token["name"] in open_tags:  # a stray end tag closes nothing
                del open_tags[len(open_tags) - 1 - open_tags[::-1].index(token["name"]):]
            yield token


class _AttributeBoundParser(html5lib.HTMLParser):
    """html5lib's parser, reading with _AttributeBoundTokenizer. html5lib (1.1, its last release) has no way
    to give it a tokenizer: this is its ``_parse`` with that one class changed, less the reparse that follows
    a <meta charset> in a document given as bytes (a str has no encoding to change)."""

    def _parse(self, stream, innerHTML=False, container="div", scripting=False, **kwargs):
        self.innerHTMLMode = innerHTML
        self.container = container
        self.scripting = scripting
        self.tokenizer = _AttributeBoundTokenizer(stream, parser=self, **kwargs)
        self.reset()
        self.mainLoop()


def _parse(document: str):
    """The document (a full one with <html> or a doctype, else a fragment) as an ElementTree, checked."""
    full = DOCUMENT_START.match(document) is not None
    builder = html5lib.getTreeBuilder("etree", ElementTree, fullTree=True)
    parser = _AttributeBoundParser(tree=builder, namespaceHTMLElements=False)
    tree = parser.parse(document) if full else parser.parseFragment(document, container="div")
    root = tree.getroot() if hasattr(tree, "getroot") else tree
    if next(root.iter("plaintext"), None) is not None:
        # No closing tag exists: everything after <plaintext> is text, which no serializer writes back as it was
        # (html5lib reports only "expected closing tag", a fix the user cannot make).
        raise MalformedHtmlError("the document holds <plaintext> (obsolete: it turns the rest of the document into "
                                 "plain text, so it cannot be written back as HTML); remove it, or send the document "
                                 "as format text")
    for (line, column), code, details in parser.errors:
        if code not in TOLERATED_PARSE_ERRORS:
            message = PARSE_ERROR_MESSAGES.get(code, code)
            try:
                message = message % (details or {})
            except (KeyError, TypeError, ValueError):
                pass
            raise MalformedHtmlError(f"malformed HTML at line {line}, column {column + 1}: {message} "
                                     f"(fix the document, or send it as format text)")
    return tree


def _too_deep() -> MalformedHtmlError:
    return MalformedHtmlError(f"the HTML document nests elements more than {MAX_DEPTH} deep; flatten it before "
                              f"translating")


def _check_depth(root) -> None:
    stack = [(root, 0)]
    while stack:
        element, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _too_deep()
        stack.extend((child, depth + 1) for child in element)


class _Segmenter:
    """Walks a parsed document, cuts the text of each block into sentences and replaces each run of
    inline content that holds a sentence by a marker element."""

    def __init__(self, language: str | None, split_sentences: bool, marker_tag: str):
        self.language = language
        self.split_sentences = split_sentences
        self.marker_tag = marker_tag
        self.sentences: list[str] = []
        self.runs: list[_Run] = []
        self.inline_tags = False

    def container(self, element) -> None:
        """Segment the runs of inline content among ``element``'s children; recurse into block children."""
        children = list(element)
        new_children: list = []
        run_items: list = []  # the children of the current run
        text_before = element.text or ""  # the text at the start of the current run
        element.text = None

        def close_run():
            nonlocal text_before
            marker = self.run(text_before, run_items)
            if marker is None:  # nothing to translate: the run stays as it was
                if new_children:
                    new_children[-1].tail = (new_children[-1].tail or "") + text_before
                else:
                    element.text = (element.text or "") + text_before
                new_children.extend(run_items)
            else:
                new_children.append(marker)
            run_items.clear()
            text_before = ""

        for child in children:
            if _is_inline(child):
                run_items.append(child)
                continue
            close_run()
            tail, child.tail = child.tail or "", None
            if not _is_protected(child):
                self.container(child)
            new_children.append(child)
            text_before = tail
        close_run()
        element[:] = new_children

    def run(self, text_before: str, items: list):
        """The run's marker element, or None when the run holds no sentence."""
        chars: list[str] = []
        stacks: list[tuple[int, ...]] = []
        kept: list[tuple[int, str, tuple[int, ...]]] = []  # (position, html, stack) of elements kept whole
        virtual: set[int] = set()  # positions of the spaces that stand for a <br>
        tags: list[tuple[str, str]] = []
        chains: list[tuple[int, ...]] = []

        def add_text(text, stack):
            chars.extend(text)
            stacks.extend([stack] * len(text))

        def walk(element, stack):
            if _is_kept_whole(element):
                tail, element.tail = element.tail, None
                kept.append((len(chars), _render(element), stack))
                element.tail = tail
                if isinstance(element.tag, str) and (element.tag.lower() == "br" or not _is_protected(element)
                                                     and "".join(element.itertext())[:1].isspace()):
                    # A line break, or an element of nothing but white space (<i> </i>), parts the words on
                    # either side, as a space does, but that space is not written back (the element is).
                    virtual.add(len(chars))
                    add_text(" ", stack)
            else:
                tags.append(_tag_pair(element))
                chains.append(stack + (len(tags) - 1,))
                inner = chains[-1]
                add_text(element.text or "", inner)
                for child in element:
                    walk(child, inner)
            add_text(element.tail or "", stack)

        add_text(text_before, ())
        for item in items:
            walk(item, ())
        text = "".join(chars)
        if not text.strip():
            return None
        flat = "".join(" " if c.isspace() else c for c in text)  # a browser shows any whitespace as one space
        spans = sentence_spans(flat, self.language) if self.split_sentences else [
            (len(flat) - len(flat.lstrip()), len(flat.rstrip()))]
        words: list[list[_Word]] = []
        word_spans: list[list[tuple[int, int]]] = []
        ends = [stacks[end - 1] if _is_punctuation(flat[end - 1]) else None for _, end in spans]
        for start, end in spans:
            own, own_spans = [], []
            for match in re.finditer(r"\S+", flat[start:end]):
                s, e = start + match.start(), start + match.end()
                deepest = max(stacks[s:e], key=len)  # max keeps the first of the deepest
                own.append(_Word(match.group(), deepest, _outside_punctuation(flat, stacks, s, e, deepest, 1),
                                 _outside_punctuation(flat, stacks, e - 1, s - 1, deepest, -1),
                                 frozenset(element for stack in stacks[s:e] for element in stack)))
                own_spans.append((s, e))
            words.append(own)
            word_spans.append(own_spans)
        anchors = [self.anchor(position, html, stack, flat, virtual, spans, word_spans)
                   for position, html, stack in kept]
        first = len(self.sentences)
        self.sentences += [" ".join(word.text for word in own) for own in words]
        if tags or any(anchor.after is not None and anchor.after >= 0 for anchor in anchors):
            self.inline_tags = True  # its elements are placed by the alignment
        # The whitespace before the first and after the last thing in the run (text or an element kept
        # whole: the whitespace between such an element and the text goes with the element).
        lead = min([len(text) - len(text.lstrip())] + [position for position, _, _ in kept])
        trail = max([len(text.rstrip())] + [position for position, _, _ in kept])
        trailing = "".join(c for i, c in enumerate(text[trail:], trail) if i not in virtual)
        self.runs.append(_Run(text[:lead], trailing, first, words, ends, anchors, tags, chains))
        marker = ElementTree.Element(self.marker_tag)
        marker.text = str(len(self.runs) - 1)
        return marker

    @staticmethod
    def anchor(position, html, stack, flat, virtual, spans, word_spans) -> _Anchor:
        def space(i):  # whether the source has a space at i (not the one that stands for a <br>)
            return 0 <= i < len(flat) and flat[i] == " " and i not in virtual

        space_before = space(position - 1)
        space_after = space(position + 1) if position in virtual else space(position)
        sentence = max(0, bisect.bisect_left([start for start, _ in spans], position) - 1)  # the last starting before
        start, end = spans[sentence]
        if position <= start:
            after = -1
        elif position >= end:
            after = None
        else:
            before = bisect.bisect_left([s for s, _ in word_spans[sentence]], position) - 1
            after = None if before >= len(word_spans[sentence]) - 1 else before
        return _Anchor(html, stack, sentence, after, space_before, space_after)


def _is_punctuation(char: str) -> bool:
    return unicodedata.category(char).startswith("P")


def _outside_punctuation(flat, stacks, first, stop, deepest, step):
    """The stack of the punctuation at one end of the word flat[first..stop) (step 1: its start, -1: its end)
    when that punctuation stands outside the word's deepest element, else None."""
    position = first
    while position != stop and _is_punctuation(flat[position]) and len(stacks[position]) < len(deepest):
        position += step
    if position == first or position == stop:  # no such punctuation, or the word is only punctuation
        return None
    return stacks[first]


def _split_punctuation(word: str, lead_stack, tail_stack):
    """``word`` as (text, stack or None) pieces: its leading and trailing punctuation apart when the
    source word's stood outside its elements."""
    start, end = 0, len(word)
    if lead_stack is not None:
        while start < end and _is_punctuation(word[start]):
            start += 1
    if tail_stack is not None:
        while end > start and _is_punctuation(word[end - 1]):
            end -= 1
    if start == end:
        return [(word, None)]
    pieces = [(word[:start], lead_stack)] if start else []
    pieces.append((word[start:end], None))
    if end < len(word):
        pieces.append((word[end:], tail_stack))
    return pieces


def segment_html(html: str, language: str | None, split_sentences: bool = True) -> SegmentedHtml:
    """Parse ``html`` (a document or a fragment) and cut the text of its blocks into sentences of
    ``language``; raises MalformedHtmlError for a malformed or empty document."""
    if not isinstance(html, str):
        raise TypeError(f"segment_html() takes a string, got {type(html).__name__}")
    if not html.strip():
        raise MalformedHtmlError("the HTML document is empty; give a document with some text to translate")
    tree = _parse(html)
    _check_depth(tree)
    if not any(True for _ in tree):  # text only: translated as text, lines and paragraphs kept
        plain = segment_text("".join(tree.itertext()) if tree.text is None else tree.text, language,
                             split_sentences)
        return SegmentedHtml(plain.sentences, _plain=plain)
    marker_tag = "tmt-" + secrets.token_hex(8)
    while marker_tag in html:
        marker_tag = "tmt-" + secrets.token_hex(8)
    segmenter = _Segmenter(language, split_sentences, marker_tag)
    segmenter.container(tree)
    skeleton = _render(tree)
    marker = re.compile(f"<{marker_tag}>(\\d+)</{marker_tag}>")
    return SegmentedHtml(segmenter.sentences, skeleton, marker, tuple(segmenter.runs),
                         has_inline_tags=segmenter.inline_tags)


def _aligned_stacks(words: list[_Word], target: list[str], pairs):
    """The inline elements of each target word, from the source words aligned to it; and that source
    word (None for an unaligned target word)."""
    base = _common_prefix([word.stack for word in words])
    stacks: list[tuple[int, ...] | None] = [None] * len(target)
    sources: list[int | None] = [None] * len(target)
    if pairs is None:  # no alignment: by relative position
        sources = [min(len(words) - 1, j * len(words) // len(target)) for j in range(len(target))]
        return [words[i].stack for i in sources], sources
    for i, j in pairs:
        if 0 <= i < len(words) and 0 <= j < len(target):
            if stacks[j] is None or len(words[i].stack) > len(stacks[j]):
                stacks[j], sources[j] = words[i].stack, i
    aligned = list(stacks)
    left: list[tuple[int, ...]] = []  # the stack of the nearest aligned word on the left of each word
    for j in range(len(target)):
        left.append(aligned[j - 1] if j and aligned[j - 1] is not None else left[j - 1] if j else base)
    right = base
    for j in reversed(range(len(target))):
        if aligned[j] is None:
            stacks[j] = _common_prefix([left[j], right])
        else:
            right = aligned[j]
    return stacks, sources


def _common_prefix(stacks: list[tuple[int, ...]]) -> tuple[int, ...]:
    if not stacks:
        return ()
    prefix = stacks[0]
    for stack in stacks[1:]:
        n = 0
        while n < min(len(prefix), len(stack)) and prefix[n] == stack[n]:
            n += 1
        prefix = prefix[:n]
    return prefix


def _render_run(run: _Run, translations: list[str], alignments, target_language: str | None) -> str:
    tokens: list[_Token] = []
    separator = sentence_separator(target_language)
    word_tokens: list[list[int]] = []  # each sentence's target words' tokens
    sentence_starts: list[int] = []  # each sentence's first token
    for k, words in enumerate(run.words):
        index = run.first + k
        target = translations[index].split()
        pairs = alignments[index] if alignments is not None else None
        stacks, sources = (_aligned_stacks(words, target, pairs) if words and target
                           else ([()] * len(target), [None] * len(target)))
        last_target_of = {}  # source word -> the last target word aligned to it
        for i, j in pairs or []:
            if 0 <= i < len(words) and 0 <= j < len(target):
                last_target_of[i] = max(j, last_target_of.get(i, -1))
        anchors = [a for a in run.anchors if a.sentence == k]
        before = {j: [] for j in range(-1, len(target))}  # anchors written after target word j (-1: first)
        for a in anchors:
            if a.after is None or not target:
                before[len(target) - 1].append(a)
            elif a.after == -1:
                before[-1].append(a)
            elif a.after in last_target_of:
                before[last_target_of[a.after]].append(a)
            else:
                before[min(len(target) - 1, round((a.after + 1) * len(target) / max(1, len(words))) - 1)].append(a)
        word_tokens.append([])
        sentence_starts.append(len(tokens))
        next_separator = separator if k else ""
        for a in before[-1]:
            tokens.append(_Token(a.html, set(a.stack), next_separator if a.space_before else "", whole=True))
            next_separator = " " if a.space_after else ""
        for j, word in enumerate(target):
            source = words[sources[j]] if sources[j] is not None else None
            lead_stack, tail_stack = (source.lead_stack, source.tail_stack) if source else (None, None)
            end = run.ends[k]
            if j == len(target) - 1 and end is not None and len(end) < len(stacks[j]) and stacks[j][:len(end)] == end:
                tail_stack = end
            pieces = _split_punctuation(word, lead_stack, tail_stack)
            for p, (text, stack) in enumerate(pieces):
                if stack is None:
                    word_tokens[-1].append(len(tokens))
                tokens.append(_Token(html_escaping.escape(text, quote=False),
                                     set(stacks[j] if stack is None else stack),
                                     "" if p else next_separator))
            next_separator = " "
            for a in before[j]:
                tokens.append(_Token(a.html, set(a.stack), " " if a.space_before else "", whole=True))
                next_separator = " " if a.space_after else ""
    _keep_every_element(run, tokens, word_tokens, sentence_starts)
    return run.leading + _write_tokens(run, tokens) + run.trailing


def _fits(run: _Run, stack: set[int], chain: tuple[int, ...]) -> bool:
    """Whether a token in ``stack`` may also stand in the element ``chain`` ends with: the elements
    stay one line of nested elements, each inside its own ancestors only (two sibling links never nest)."""
    together = stack.union(chain)
    deepest = max(together, key=lambda element: len(run.chains[element]))
    return together <= set(run.chains[deepest])


def _keep_every_element(run: _Run, tokens: list[_Token], word_tokens: list[list[int]],
                        sentence_starts: list[int]) -> None:
    """Give each element that no token stands in the target word at its source words' relative position
    (or, where no target word can take it, an empty copy there); then let every element span one stretch of
    tokens where the nesting allows."""
    covered = set().union(*(token.stack for token in tokens))
    touching: dict[int, list[tuple[int, int]]] = {}  # element -> the (sentence, source word) it touches
    for k, words in enumerate(run.words):
        for i, word in enumerate(words):
            for element in word.touched - covered:
                touching.setdefault(element, []).append((k, i))
    empty_copies: list[tuple[int, tuple[int, ...]]] = []  # (token index, element chain): an empty element after it
    for element in sorted(touching):
        chain = run.chains[element]
        for k, i in touching[element]:
            own = word_tokens[k]
            if element in covered:
                continue
            if not own:  # an empty translation: an empty element where the sentence would be
                empty_copies.append((sentence_starts[k] - 1, chain))
                covered.update(chain)
                continue
            at = own[min(len(own) - 1, i * len(own) // len(run.words[k]))]
            fitting = [t for t in own if _fits(run, tokens[t].stack, chain)]
            if fitting:
                tokens[min(fitting, key=lambda t: abs(t - at))].stack.update(chain)
            else:
                empty_copies.append((at, chain))
            covered.update(chain)
    for at, chain in sorted(empty_copies, reverse=True):
        tokens.insert(at + 1, _Token("", set(chain), ""))
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for t, token in enumerate(tokens):
        for element in token.stack:
            first.setdefault(element, t)
            last[element] = t
    for element in sorted(first, key=lambda element: len(run.chains[element])):  # outer elements first
        for t in range(first[element], last[element] + 1):
            if (element not in tokens[t].stack and not tokens[t].whole
                    and _fits(run, tokens[t].stack, run.chains[element])):
                tokens[t].stack.update(run.chains[element])


def _write_tokens(run: _Run, tokens: list[_Token]) -> str:
    """The tokens as HTML, each element opened before its first token and closed after its last
    (opened again where another element's span forced it closed)."""
    parts: list[str] = []
    opened: list[int] = []
    for t, token in enumerate(tokens):
        wanted = sorted(token.stack, key=lambda element: (len(run.chains[element]), element))
        keep = 0
        while keep < min(len(opened), len(wanted)) and opened[keep] == wanted[keep]:
            keep += 1
        for element in reversed(opened[keep:]):
            parts.append(run.tags[element][1])
        del opened[keep:]
        if t:
            parts.append(token.separator)
        for element in wanted[keep:]:
            parts.append(run.tags[element][0])
            opened.append(element)
        parts.append(token.html)
    for element in reversed(opened):
        parts.append(run.tags[element][1])
    return "".join(parts)
