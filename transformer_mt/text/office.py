"""PowerPoint (.pptx), OpenDocument text and presentations (.odt, .odp) as sentences and back.

Each keeps its structure as a Word document does (documents.py): a paragraph's text is cut into runs of one
format each; a paragraph of one format is translated as text, a paragraph of several (or with a line break, a
tab, a field, a footnote, a picture inside) goes through ``segment_html`` as ``<p><span data-run=i>..</span>
<br data-keep=k>..</p>``, so each format lands on the target words aligned to the source words it had, and the
paragraph is rebuilt in the translation's order: each piece of text in a copy of its source run's format, each
element that is not text (line breaks, fields, notes, frames) the same element, where the translation put it.
The paragraph's text is then exactly its translation.

- .pptx is read and written by python-pptx (slides' shapes: text boxes, placeholders, groups, tables; and
  the slides' notes). A run is an ``a:r``; its format is its ``a:rPr`` (a link is an ``a:hlinkClick`` in
  it), copied with the run. ``a:br`` and ``a:fld`` (slide number, date) stay as they are.
- .odt/.odp are read with lxml from content.xml (and styles.xml: page headers and footers), every other
  part of the archive kept byte for byte (the ``mimetype`` part first and stored, as ODF requires). A run is
  text with the ``text:span``/``text:a`` elements around it inside the ``text:p``/``text:h``; copies of
  those elements (their attributes: style, link) carry the translation.

Archives are checked by ``documents.check_archive`` before they are parsed (sizes, zip bombs, element and
text counts, on each part's text decoded as the XML parser decodes it); a part that declares entities or (but
EPUB's XHTML) a document type is refused, and so is one in an encoding other than UTF-8 and UTF-16. XML is
parsed without loading DTDs, without the network and without resolving entities.
"""

from __future__ import annotations

import copy
import html as html_escaping
import io
import zipfile
from dataclasses import dataclass, field

from ..errors import DocumentError
from .html import segment_html
from .segment import segment_text

# ------------------------------------------------------------------------------------- paragraphs of runs, any format


@dataclass
class Item:
    """A piece of a paragraph in source order: a run group's text (``group`` >= 0) or a kept element."""

    group: int  # -1 for a kept element
    keep: int = -1  # index in the paragraph's kept elements
    breaks: bool = False  # a kept element that parts words as a space does (line break, tab)


@dataclass
class Paragraph:
    """What every format's paragraph offers: its run groups' texts, its items in source order, and
    ``rebuild(pieces)`` with pieces ``(group, text)`` or ``(-1, keep)`` in the translation's order."""

    texts: list[str] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def rebuild(self, pieces: list[tuple[int, object]]) -> None:  # pragma: no cover - each format's own
        raise NotImplementedError

    def is_plain(self, group: int) -> bool:
        """Whether run group ``group`` has no format of its own (plain text of the paragraph)."""
        return False


def segment_paragraphs(paragraphs: list[Paragraph], language: str, split: bool):
    """The sentences of ``paragraphs`` (those holding text) and, per paragraph, its segmentation and whether
    it went through the HTML path."""
    pieces = []
    for paragraph in paragraphs:
        keeps_inside = any(item.group < 0 for item in paragraph.items)
        if not keeps_inside and len([text for text in paragraph.texts if text.strip()]) <= 1:
            pieces.append((segment_text(paragraph.text, language, split_sentences=split), False))
            continue
        markup = []
        for item in paragraph.items:
            if item.group >= 0:
                markup.append(f'<span data-run="{item.group}">{html_escaping.escape(paragraph.texts[item.group])}</span>')
            else:
                markup.append(f'<{"br" if item.breaks else "img"} data-keep="{item.keep}">')
        pieces.append((segment_html("<p>" + "".join(markup) + "</p>", language, split_sentences=split), True))
    return [sentence for segmented, _ in pieces for sentence in segmented.sentences], pieces


def join_paragraphs(paragraphs: list[Paragraph], pieces, translations, alignments, target) -> None:
    """Rebuild each paragraph with its sentences' translations (paragraphs and pieces as segment_paragraphs
    made them, from the same bytes)."""
    start = 0
    for paragraph, (segmented, is_html) in zip(paragraphs, pieces):
        end = start + len(segmented.sentences)
        if is_html:
            own = alignments[start:end] if alignments is not None else None
            kept = sum(item.group < 0 for item in paragraph.items)
            parts = pieces_of_markup(segmented.join(translations[start:end], own, target), len(paragraph.texts), kept)
        else:
            text = segmented.join(translations[start:end], target)
            parts = [(next(i for i, t in enumerate(paragraph.texts) if t.strip()), text)]
        paragraph.rebuild(settle_spaces(parts, paragraph))
        start = end


def settle_spaces(pieces: list[tuple[int, object]], paragraph: Paragraph) -> list[tuple[int, object]]:
    """Pieces with the white space between two of them on the side it stood on in the source (after the
    left piece when the left group's text ended with white space, before the right one when the right
    group's started with it), else on the plain side (before the right piece when neither is plain). The
    HTML join puts a space after the word before it, so without this a bold or linked word would take the
    space that followed it (an underlined space in Word, a link over it)."""
    out: list[list] = []
    for group, value in pieces:  # neighbouring pieces of one group first become one; empty ones go
        if group >= 0 and out and out[-1][0] == group:
            out[-1][1] += value
        elif group < 0 or value:
            out.append([group, value])
    for k in range(len(out) - 1):
        (left_group, left), (right_group, right) = out[k], out[k + 1]
        if left_group < 0 or right_group < 0 or left_group == right_group:
            continue
        space = left[len(left.rstrip()):] + right[:len(right) - len(right.lstrip())]
        if not space or not left.strip() or not right.strip():
            continue
        texts = paragraph.texts
        if texts[left_group][-1:].isspace() or not texts[right_group][:1].isspace() \
                and paragraph.is_plain(left_group) and not paragraph.is_plain(right_group):
            out[k][1], out[k + 1][1] = left.rstrip() + space, right.lstrip()
        else:
            out[k][1], out[k + 1][1] = left.rstrip(), space + right.lstrip()
    return [(group, value) for group, value in out if group < 0 or value]


def paragraph_document(read, write, language: str, split: bool):
    """A document of paragraphs as (sentences, has_inline_tags, join) for documents.SegmentedDocument:
    ``read()`` parses the document anew and gives (its tree, its paragraphs holding text, in order), and
    ``write(tree)`` its bytes. Each join reads the document again, since writing runs back changes it."""
    _, paragraphs = read()
    sentences, pieces = segment_paragraphs(paragraphs, language, split)

    def join(translations, alignments, target) -> bytes:
        tree, paragraphs = read()
        join_paragraphs(paragraphs, pieces, translations, alignments, target)
        return write(tree)

    return sentences, has_inline_tags(pieces), join


def has_inline_tags(pieces) -> bool:
    return any(is_html and segmented.has_inline_tags for segmented, is_html in pieces)


def pieces_of_markup(markup: str, groups: int, kept: int) -> list[tuple[int, object]]:
    """The translated markup of a paragraph as pieces in the translation's order: ``(group, text)`` for
    the text in ``<span data-run=group>`` (text outside any span goes with the span before it, or the
    first one: no translated word is lost) and ``(-1, k)`` for ``<br|img data-keep=k>``; a kept element
    the markup lost comes at the end, one it repeats comes once."""
    import lxml.html

    root = lxml.html.fromstring(f"<div>{markup}</div>")
    paragraph = root.find(".//p")
    if paragraph is None:
        paragraph = root
    pieces: list[tuple[int, object]] = []
    seen: set[int] = set()
    current: list = [None]  # the group of the last span entered
    pending: list[str] = []  # text before the first span

    def add(text):
        if not text:
            return
        if current[0] is None:
            pending.append(text)
        else:
            pieces.append((current[0], text))

    def walk(element):
        add(element.text)
        for child in element:
            run, keep = child.get("data-run"), child.get("data-keep")
            if keep is not None and keep.isdigit() and int(keep) < kept:
                if int(keep) not in seen:
                    seen.add(int(keep))
                    pieces.append((-1, int(keep)))
            else:
                if run is not None and run.isdigit() and int(run) < groups:
                    if current[0] is None and pending:
                        pieces.append((int(run), "".join(pending)))
                    current[0] = int(run)
                walk(child)
            add(child.tail)  # text after a span goes with it

    walk(paragraph)
    if current[0] is None and pending:
        pieces.append((0, "".join(pending)))
    pieces.extend((-1, k) for k in range(kept) if k not in seen)
    return pieces


# ------------------------------------------------------------------------------------------------------- XML safety


def xml_parser():
    from lxml import etree

    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def parse_xml(data: bytes, name: str, filename: str, kind: str):
    """``data`` (the part ``name`` of ``filename``) as an lxml tree: a part that declares entities is refused
    (never expanded, never fetched)."""
    from lxml import etree

    try:
        tree = etree.parse(io.BytesIO(data), xml_parser())
    except etree.XMLSyntaxError as exc:
        raise DocumentError(f"{filename!r} is not a valid {kind}: {name} is not XML ({exc})") from None
    dtd = tree.docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):
        raise DocumentError(f"{filename!r} is not read: its part {name} declares XML entities, which no {kind} needs")
    return tree


def rewrite_zip(data: bytes, replaced: dict[str, bytes]) -> bytes:
    """The archive ``data`` with the parts in ``replaced`` replaced, every other part as it was (its bytes,
    its place and its compression: an uncompressed ``mimetype`` first stays so)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as written:
        for info in source.infolist():
            content = replaced.get(info.filename)
            if content is None:
                content = source.read(info)
            made = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            made.compress_type = info.compress_type
            made.external_attr = info.external_attr
            written.writestr(made, content)
    return out.getvalue()


# ------------------------------------------------------------------------------- mixed content (ODF and XHTML)


class MixedParagraph(Paragraph):
    """An XML element whose text is mixed content: text and tails, inside format elements (``is_format``:
    ODF's text:span and text:a, XHTML's inline elements) that are walked, nodes that stand for text
    (``spaces``: ODF's text:s, which stands for text:c spaces; XHTML's entity references such as &nbsp;)
    that become that text, and every other child kept whole (a line break, a tab, a note, a frame, a
    picture; ``breaks``: those that part words)."""

    def is_plain(self, group: int) -> bool:
        return not self.chains[group]

    def __init__(self, element, is_format, spaces, breaks):
        super().__init__()
        self.element = element
        self.kept: list = []
        self.kept_chains: list[tuple] = []
        self.chains: list[tuple] = []
        self._spaces = spaces
        previous = [None]

        def add_text(text, chain):
            if not text:
                return
            if self.texts and (not text.strip() or chain == previous[0]) and self.items[-1].group >= 0:
                self.texts[-1] += text  # white space goes with the run before, whatever its format
                return
            self.items.append(Item(len(self.texts)))
            self.texts.append(text)
            self.chains.append(chain)
            previous[0] = chain

        def walk(node, chain):
            add_text(node.text, chain)
            for child in node:
                # A format element without text (an anchor, an empty link) is kept whole: a copy would be lost.
                # One of white space only is white space (it goes with the run before).
                if isinstance(child.tag, str) and is_format(child) and "".join(child.itertext()):
                    walk(child, (*chain, child))
                elif (text := spaces(child)) is not None:
                    add_text(text, chain)
                else:
                    blank = isinstance(child.tag, str) and "".join(child.itertext()) and \
                        not "".join(child.itertext()).strip()
                    self.items.append(Item(-1, len(self.kept), bool(breaks(child) or blank)))
                    self.kept.append(child)
                    self.kept_chains.append(chain)
                    previous[0] = None
                add_text(child.tail, chain)

        walk(element, ())

    def rebuild(self, pieces):
        for element in self.kept:
            element.getparent().remove(element)  # (its tail is text of the paragraph: rebuilt below)
            element.tail = None
        for child in list(self.element):
            self.element.remove(child)
        self.element.text = None
        merged = pieces  # one piece a group's stretch, none empty (settle_spaces)
        stack: list[tuple] = []  # (original, copy) of the format elements open, outermost first

        def open_chain(chain):
            common = 0
            while common < len(stack) and common < len(chain) and stack[common][0] is chain[common]:
                common += 1
            del stack[common:]
            for original in chain[common:]:
                made = original.makeelement(original.tag, dict(original.attrib))
                (stack[-1][1] if stack else self.element).append(made)
                stack.append((original, made))
            return stack[-1][1] if stack else self.element

        for group, value in merged:
            if group < 0:
                open_chain(self.kept_chains[value]).append(self.kept[value])
                continue
            container = open_chain(self.chains[group])
            if len(container):
                container[-1].tail = (container[-1].tail or "") + value
            else:
                container.text = (container.text or "") + value


# ---------------------------------------------------------------------------------------------------------- .pptx


class SlideParagraph(Paragraph):
    """An ``a:p``: its ``a:r`` runs grouped by ``a:rPr`` (neighbouring runs of one format are one group;
    white space goes with the run before), ``a:br`` and ``a:fld`` kept whole."""

    def __init__(self, p):
        from pptx.oxml.ns import qn

        super().__init__()
        self.p = p
        self.runs: list[list] = []
        self.kept: list = []
        previous = None
        for child in p:
            tag = child.tag
            if tag in (qn("a:pPr"), qn("a:endParaRPr")) or not isinstance(tag, str):
                continue
            if tag == qn("a:r"):
                properties = child.find(qn("a:rPr"))
                form = _xml(properties)
                text = "".join(t.text or "" for t in child.iter(qn("a:t")))
                if self.runs and self.items[-1].group >= 0 and (not text.strip() or form == previous):
                    self.runs[-1].append(child)
                    self.texts[-1] += text
                    continue
                self.items.append(Item(len(self.texts)))
                self.runs.append([child])
                self.texts.append(text)
                previous = form
            else:
                self.items.append(Item(-1, len(self.kept), tag == qn("a:br")))
                self.kept.append(child)
                previous = None

    def rebuild(self, pieces):
        from pptx.oxml.ns import qn

        anchor = self.p.find(qn("a:endParaRPr"))
        for runs in self.runs:
            for r in runs:
                self.p.remove(r)
        for element in self.kept:
            self.p.remove(element)
        merged = pieces  # one piece a group's stretch, none empty (settle_spaces)
        for group, value in merged:
            if group < 0:
                element = self.kept[value]
            else:
                element = copy.deepcopy(self.runs[group][0])
                for child in list(element):
                    if child.tag != qn("a:rPr"):
                        element.remove(child)
                t = element.makeelement(qn("a:t"), {})
                t.text = value
                element.append(t)
            if anchor is not None:
                anchor.addprevious(element)
            else:
                self.p.append(element)


def _xml(element) -> bytes:
    from lxml import etree

    return etree.tostring(element) if element is not None else b""


def _slide_paragraphs(data: bytes, filename: str):
    """The presentation and its paragraphs that hold text, in order: each slide's shapes (groups and tables
    included), then its notes."""
    import pptx
    from pptx.oxml.ns import qn

    try:
        presentation = pptx.Presentation(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 -- zipfile, lxml and python-pptx each raise their own types
        raise DocumentError(f"{filename!r} is not a valid PowerPoint (.pptx) presentation "
                            f"({type(exc).__name__}: {exc})") from None
    roots = []
    for slide in presentation.slides:
        roots.append(slide.shapes._spTree)
        if slide.has_notes_slide:
            roots.append(slide.notes_slide.shapes._spTree)
    paragraphs = [SlideParagraph(p) for root in roots for p in root.iter(qn("a:p"))]
    return presentation, [paragraph for paragraph in paragraphs if paragraph.text.strip()]


def segment_pptx(data: bytes, filename: str, language: str, split: bool):
    def write(presentation) -> bytes:
        out = io.BytesIO()
        presentation.save(out)
        return out.getvalue()

    return paragraph_document(lambda: _slide_paragraphs(data, filename), write, language, split)


# ------------------------------------------------------------------------------------------------------ .odt, .odp

ODF_TEXT = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
ODF_STYLE = "urn:oasis:names:tc:opendocument:xmlns:style:1.0"
ODF_OFFICE = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
_ODF_FORMATS = frozenset({f"{{{ODF_TEXT}}}span", f"{{{ODF_TEXT}}}a"})
_ODF_BREAKS = frozenset({f"{{{ODF_TEXT}}}line-break", f"{{{ODF_TEXT}}}tab"})
_ODF_PARAGRAPHS = (f"{{{ODF_TEXT}}}p", f"{{{ODF_TEXT}}}h")
# Where styles.xml holds text: page headers and footers.
_ODF_STYLE_TEXT = tuple(f"{{{ODF_STYLE}}}{name}" for name in ("header", "footer", "header-left", "footer-left",
                                                                "header-first", "footer-first"))
ODF_PARTS = ("content.xml", "styles.xml")


def _odf_spaces(element) -> str | None:
    if element.tag != f"{{{ODF_TEXT}}}s":
        return None
    count = element.get(f"{{{ODF_TEXT}}}c", "1")
    return " " * (int(count) if count.isdigit() and 0 < int(count) < 1000 else 1)


def _odf_paragraphs(data: bytes, filename: str, kind: str):
    """The trees of content.xml and styles.xml and their paragraphs that hold text, in order: the body's
    (tables, lists, frames, notes and a presentation's notes included), then page headers and footers."""
    trees = {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
            if "content.xml" not in names:
                raise DocumentError(f"{filename!r} is not a valid {kind}: it has no content.xml")
            for name in ODF_PARTS:
                if name in names:
                    trees[name] = parse_xml(archive.read(name), name, filename, kind)
    except DocumentError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError, NotImplementedError) as exc:
        raise DocumentError(f"{filename!r} is not a valid {kind} ({type(exc).__name__}: {exc})") from None
    roots = list(trees["content.xml"].getroot().iter(f"{{{ODF_OFFICE}}}body"))
    if "styles.xml" in trees:
        roots += [element for element in trees["styles.xml"].getroot().iter(*_ODF_STYLE_TEXT)]
    paragraphs = [MixedParagraph(p, lambda e: e.tag in _ODF_FORMATS, _odf_spaces, lambda e: e.tag in _ODF_BREAKS)
                  for root in roots for p in root.iter(*_ODF_PARAGRAPHS)]
    return trees, [paragraph for paragraph in paragraphs if paragraph.text.strip()]


def segment_odf(data: bytes, filename: str, language: str, split: bool, kind: str):
    from lxml import etree

    def write(trees) -> bytes:
        return rewrite_zip(data, {name: etree.tostring(tree, xml_declaration=True, encoding="UTF-8")
                                  for name, tree in trees.items()})

    return paragraph_document(lambda: _odf_paragraphs(data, filename, kind), write, language, split)
