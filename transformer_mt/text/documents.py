"""Documents as sentences to translate and back: .txt, .html, .srt subtitles and .docx, each keeping its structure.

``segment_document`` reads a document and returns its sentences with a ``join`` that writes the translated
document: a text file keeps its lines, paragraphs and white space (``segment_text``), an HTML file its markup
(``segment_html``), a subtitle file its numbering and timings (each subtitle's text is translated on its own:
a subtitle must stay on screen with its own words), and a Word file its paragraphs, tables, headers and
footers and the formatting of its runs (bold, italics, links: a paragraph with runs of several formats goes
through ``segment_html`` as inline tags, so each format lands on the target words aligned to the source
words it had).

Pure text and document processing: no decoding here. The caller translates the sentences (with word
alignments when ``has_inline_tags``) and gives the translations back to ``join``.
"""

from __future__ import annotations

import html as html_escaping
import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath

from ..errors import TransformerMTError
from .html import segment_html
from .segment import segment_text

# Supported file extensions and the media type of the translated file.
MEDIA_TYPES = {
    ".txt": "text/plain; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".srt": "application/x-subrip; charset=utf-8",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}


# A .docx is a zip archive: what its parts may unpack to at most. A few MB of zip can declare gigabytes of
# XML (a zip bomb); the declared sizes are checked before anything is unpacked (zipfile refuses a part that
# unpacks to more than it declared).
MAX_DOCX_UNPACKED_BYTES = 100_000_000
MAX_DOCX_PARTS = 10_000


class DocumentError(TransformerMTError):
    """A document that cannot be read: an unsupported type, bad encoding, a malformed file, or no text."""


@dataclass
class SegmentedDocument:
    """A document's sentences, in order, and how to write the document back with their translations."""

    sentences: list[str]
    has_inline_tags: bool  # join places inline formats by word alignments (None: by relative position)
    _join: Callable[[list[str], list | None, str], bytes]

    def join(self, translations: list[str], alignments: list | None, target_language: str) -> bytes:
        """The translated document: ``translations[i]`` (and ``alignments[i]``) belong to ``sentences[i]``."""
        if len(translations) != len(self.sentences):
            raise ValueError(f"{len(translations)} translations for {len(self.sentences)} sentences")
        return self._join(translations, alignments, target_language)


def document_extension(filename: str) -> str:
    """The lower-case extension of ``filename`` if it is a supported document type, else a DocumentError."""
    extension = PurePath(filename.replace("\\", "/")).suffix.lower()
    if extension not in MEDIA_TYPES:
        raise DocumentError(f"file type {extension or '(none)'!r} of {filename!r} is not supported; send one of "
                            f"{', '.join(MEDIA_TYPES)}")
    return extension


def segment_document(data: bytes, filename: str, language: str, split_sentences: bool = True) -> SegmentedDocument:
    """Read ``data`` as the document type of ``filename``'s extension, in ``language``."""
    extension = document_extension(filename)
    if extension == ".docx":
        document = _segment_docx(data, filename, language, split_sentences)
    else:
        text, bom = _decode(data, filename)
        reader = {".txt": _segment_txt, ".html": _segment_html, ".htm": _segment_html, ".srt": _segment_srt}
        document = reader[extension](text, filename, language, split_sentences, bom)
    if not document.sentences:
        raise DocumentError(f"{filename!r} holds no text to translate")
    return document


def _decode(data: bytes, filename: str) -> tuple[str, bytes]:
    """UTF-8 text (a byte order mark is kept for the output) and the BOM it had."""
    bom = b"\xef\xbb\xbf" if data.startswith(b"\xef\xbb\xbf") else b""
    try:
        text = data[len(bom):].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"{filename!r} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    if "\x00" in text:
        raise DocumentError(f"{filename!r} holds NUL characters: it is not a text file")
    return text, bom


def _segment_txt(text: str, filename: str, language: str, split: bool, bom: bytes) -> SegmentedDocument:
    segmented = segment_text(text, language, split_sentences=split)
    return SegmentedDocument(list(segmented.sentences), False,
                             lambda t, a, target: bom + segmented.join(t, target).encode("utf-8"))


def _segment_html(text: str, filename: str, language: str, split: bool, bom: bytes) -> SegmentedDocument:
    segmented = segment_html(text, language, split_sentences=split)
    return SegmentedDocument(list(segmented.sentences), segmented.has_inline_tags,
                             lambda t, a, target: bom + segmented.join(t, a, target).encode("utf-8"))


def _segment_srt(text: str, filename: str, language: str, split: bool, bom: bytes) -> SegmentedDocument:
    import srt

    try:
        subtitles = list(srt.parse(text))
    except (srt.SRTParseError, ValueError) as exc:
        raise DocumentError(f"{filename!r} is not a valid SubRip (.srt) subtitle file: {exc}") from None
    parts = [segment_text(subtitle.content, language, split_sentences=split) for subtitle in subtitles]
    sentences = [sentence for part in parts for sentence in part.sentences]

    def join(translations, alignments, target):
        start = 0
        for subtitle, part in zip(subtitles, parts):
            subtitle.content = part.join(translations[start:start + len(part.sentences)], target)
            start += len(part.sentences)
        # reindex=False: the numbers stay as they were; strict=False: a translated line that came out empty
        # must not drop its subtitle (timings are what a subtitle file is for).
        return bom + srt.compose(subtitles, reindex=False, strict=False).encode("utf-8")

    return SegmentedDocument(sentences, False, join)


def _segment_docx(data: bytes, filename: str, language: str, split: bool) -> SegmentedDocument:
    import docx
    from docx.oxml.ns import qn
    from docx.text.paragraph import Paragraph
    from docx.text.run import Run
    from lxml import etree

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            parts = archive.infolist()
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise DocumentError(f"{filename!r} is not a valid Word (.docx) document: not a zip archive ({exc})") \
            from None
    unpacked = sum(part.file_size for part in parts)
    if len(parts) > MAX_DOCX_PARTS or unpacked > MAX_DOCX_UNPACKED_BYTES:
        raise DocumentError(f"{filename!r} unpacks to {len(parts)} parts of {unpacked} bytes; a Word document "
                            f"may hold at most {MAX_DOCX_PARTS} parts of {MAX_DOCX_UNPACKED_BYTES} bytes")
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 -- zipfile, lxml and python-docx each raise their own types
        raise DocumentError(f"{filename!r} is not a valid Word (.docx) document ({type(exc).__name__}: {exc})") \
            from None
    # Every paragraph once: the body (tables and text boxes included), then headers and footers that are not
    # linked to the previous section's (a linked one is the same part, and would be translated twice).
    roots = [document.element.body]
    for section in document.sections:
        for part in (section.header, section.first_page_header, section.even_page_header,
                     section.footer, section.first_page_footer, section.even_page_footer):
            if not part.is_linked_to_previous:
                roots.append(part._element)
    pieces = []  # per paragraph: (runs grouped by format, segmented text or html)
    for root in roots:
        for p in root.iter(qn("w:p")):
            paragraph = Paragraph(p, None)
            # The runs of this paragraph (in links and revisions too), not those of a paragraph nested in it.
            runs = [Run(r, paragraph) for r in p.iter(qn("w:r"))
                    if next(r.iterancestors(qn("w:p"))) is p]
            groups: list[list] = []
            previous = None
            for run in runs:
                # Word splits runs for its own bookkeeping: neighbours with the same format are one piece of text.
                form = etree.tostring(run._r.rPr) if run._r.rPr is not None else b""
                if groups and form == previous:
                    groups[-1].append(run)
                else:
                    groups.append([run])
                previous = form
            texts = ["".join(run.text for run in group) for group in groups]
            if not "".join(texts).strip():
                continue
            if len([text for text in texts if text.strip()]) <= 1:
                pieces.append((groups, segment_text("".join(texts), language, split_sentences=split), False))
            else:
                markup = "<p>" + "".join(f'<span data-run="{i}">{html_escaping.escape(text)}</span>'
                                         for i, text in enumerate(texts)) + "</p>"
                pieces.append((groups, segment_html(markup, language, split_sentences=split), True))
    sentences = [sentence for _, segmented, _ in pieces for sentence in segmented.sentences]

    def join(translations, alignments, target):
        start = 0
        for groups, segmented, is_html in pieces:
            end = start + len(segmented.sentences)
            if is_html:
                own = alignments[start:end] if alignments is not None else None
                texts = _texts_of_spans(segmented.join(translations[start:end], own, target), len(groups))
            else:
                texts = [segmented.join(translations[start:end], target)] + [""] * (len(groups) - 1)
            for group, text in zip(groups, texts):
                group[0].text = text  # the group's first run carries its format; the others are emptied
                for run in group[1:]:
                    run.text = ""
            start = end
        out = io.BytesIO()
        document.save(out)
        return out.getvalue()

    return SegmentedDocument(sentences, any(is_html and segmented.has_inline_tags for _, segmented, is_html in pieces),
                             join)


def _texts_of_spans(markup: str, count: int) -> list[str]:
    """The text of each ``<span data-run=i>`` in translated markup; text outside any span joins the span
    before it (or the first), so no translated word is lost."""
    import lxml.html

    texts = [""] * count
    current = 0
    root = lxml.html.fromstring(markup)
    paragraph = root if root.tag == "p" else root.find(".//p")
    if paragraph is None:
        paragraph = root
    texts[0] += paragraph.text or ""
    for child in paragraph:
        run = child.get("data-run")
        if run is not None and run.isdigit() and int(run) < count:
            current = int(run)
        texts[current] += child.text_content() + (child.tail or "")
    return texts
