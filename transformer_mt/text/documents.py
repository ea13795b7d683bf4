"""Documents as sentences to translate and back: .txt, .html, .srt subtitles and .docx, each keeping its structure.

``segment_document`` reads a document and returns its sentences with a ``join`` that writes the translated
document: a text file keeps its lines, paragraphs and white space, and a hard-wrapped paragraph is translated
whole and wrapped again at its width (``segment_text(..., paragraphs=True)``); an HTML file keeps its markup
(``segment_html``); a subtitle file keeps its numbering and timings, a cue's lines are one text (a sentence
that runs on into the next cue, one text over both) broken back into as many balanced lines; a Word file keeps
its paragraphs, tables, headers and footers, and a paragraph's runs are rebuilt in the order of the
translation, each target word in the format of the source word it is aligned to (a paragraph with runs of
several formats goes through ``segment_html`` as inline spans, one per run, which the alignment places).

Pure text and document processing: no decoding here. The caller translates the sentences (with word
alignments when ``has_inline_tags``) and gives the translations back to ``join``.
"""

from __future__ import annotations

import codecs
import copy
import io
import itertools
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import PurePath

from ..errors import DocumentError, DocumentTooLarge
from .epub import segment_epub
from .html import segment_html
from .office import Item, Paragraph, paragraph_document, segment_odf, segment_pptx
from .segment import ends_sentence, segment_text

# Supported file extensions and the media type of the translated file.
MEDIA_TYPES = {
    ".txt": "text/plain; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".srt": "application/x-subrip; charset=utf-8",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".odt": "application/vnd.oasis.opendocument.text",
    ".odp": "application/vnd.oasis.opendocument.presentation",
    ".epub": "application/epub+zip",
}
# The archive formats other than .docx (text/office.py, text/epub.py): what each is called in messages.
ARCHIVE_KINDS = {".pptx": "PowerPoint (.pptx) presentation", ".odt": "OpenDocument text (.odt)",
                 ".odp": "OpenDocument presentation (.odp)", ".epub": "EPUB (.epub) e-book"}


# Office documents and e-books are zip archives of XML: a few hundred kB of zip can unpack to gigabytes (a zip
# bomb) or to millions of elements. Before a document is parsed, the archive's declared sizes are checked (zipfile
# refuses a part that unpacks to more than it declared) and every XML part is read as a stream, its elements and
# its text counted as they come, so an archive is refused as soon as it passes what a document of the allowed
# text could hold, whatever it unpacks to: memory and time are bounded by the limit, not by the archive.
MAX_ARCHIVE_UNPACKED_BYTES = 100_000_000  # everything (pictures included)
MAX_ARCHIVE_PARTS = 10_000
MAX_DOCUMENT_CHARS = 5_000_000  # the text of one document where the caller gives no limit (a long book)
MAX_DOCUMENT_BYTES = MAX_ARCHIVE_UNPACKED_BYTES  # a document file read from disk (translate-file)
XML_BYTES_PER_CHAR = 200  # generous: a Word paragraph with one formatted phrase is ~2 kB of XML for 60 characters
XML_ELEMENTS_PER_CHAR = 3  # that paragraph has ~30 elements; a table of empty cells ~8 a cell
BASE_ELEMENTS = 50_000  # what a document's own parts hold besides its text (Word's styles: ~18,000)
CHUNK_BYTES = 1 << 20
_XML_TAG = re.compile(r"<[^>]*>")
_SPACES = re.compile(r"\s+")


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


def segment_document(data: bytes, filename: str, language: str, split_sentences: bool = True,
                     max_chars: int | None = None) -> SegmentedDocument:
    """Read ``data`` as the document type of ``filename``'s extension, in ``language``. An archive (.docx;
    .pptx, .odt, .odp, .epub: text/office.py, text/epub.py) that holds more than ``max_chars`` characters
    of text (default MAX_DOCUMENT_CHARS) is refused while it is read, before it is parsed."""
    extension = document_extension(filename)
    if extension == ".docx":
        check_archive(data, filename, "Word (.docx) document", max_chars or MAX_DOCUMENT_CHARS)
        document = _segment_docx(data, filename, language, split_sentences)
    elif extension in ARCHIVE_KINDS:
        kind = ARCHIVE_KINDS[extension]
        check_archive(data, filename, kind, max_chars or MAX_DOCUMENT_CHARS, doctypes=extension == ".epub")
        if extension == ".pptx":
            document = SegmentedDocument(*segment_pptx(data, filename, language, split_sentences))
        elif extension == ".epub":
            document = SegmentedDocument(*segment_epub(data, filename, language, split_sentences))
        else:
            document = SegmentedDocument(*segment_odf(data, filename, language, split_sentences, kind))
    else:
        text, bom = _decode(data, filename)
        if len(text) > (max_chars or MAX_DOCUMENT_CHARS):
            raise DocumentTooLarge(f"{filename!r} holds {len(text)} characters; a document here may hold at most "
                                f"{max_chars or MAX_DOCUMENT_CHARS}: split it into smaller files")
        reader = {".txt": _segment_txt, ".html": _segment_html, ".htm": _segment_html, ".srt": _segment_srt}
        document = reader[extension](text, filename, language, split_sentences, bom)
    if not document.sentences:
        raise DocumentError(f"{filename!r} holds no text to translate")
    return document


def check_archive(data: bytes, filename: str, kind: str, max_chars: int, doctypes: bool = False) -> None:
    """Refuse a zip archive of XML parts (``kind``: what it should be, for the message) that is not one, or
    that holds more than ``max_chars`` characters of text, XML_BYTES_PER_CHAR bytes or XML_ELEMENTS_PER_CHAR
    elements per character allowed: counted while each part is unpacked, chunk by chunk, on its text as the
    XML parser decodes it. A part that declares entities is refused, and one with a document type declaration
    unless ``doctypes`` (EPUB 2's XHTML has one, which is not loaded); and so is one in an encoding other than
    UTF-8 and UTF-16, which is all that Office, OpenDocument and EPUB write."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            parts = archive.infolist()
            unpacked = sum(part.file_size for part in parts)
            if len(parts) > MAX_ARCHIVE_PARTS or unpacked > MAX_ARCHIVE_UNPACKED_BYTES:
                raise DocumentTooLarge(f"{filename!r} unpacks to {len(parts)} parts of {unpacked} bytes; a {kind} may "
                                    f"hold at most {MAX_ARCHIVE_PARTS} parts of {MAX_ARCHIVE_UNPACKED_BYTES} bytes")
            # Every part that may be XML by its first bytes, whatever its name (a parser reads parts by the types
            # the package declares, so a content part may be called anything); pictures and fonts are not.
            xml_parts = [part for part in parts if _may_be_xml(archive, part)]
            max_bytes = XML_BYTES_PER_CHAR * max_chars + 1_000_000
            max_elements = XML_ELEMENTS_PER_CHAR * max_chars + BASE_ELEMENTS
            declared = sum(part.file_size for part in xml_parts)
            if declared > max_bytes:
                raise DocumentTooLarge(f"{filename!r} unpacks to {declared} bytes of XML, more than a {kind} of at most "
                                    f"{max_chars} characters of text needs ({max_bytes}); split it into smaller files")
            elements = characters = 0
            for part in xml_parts:
                for text in _xml_text(archive, part, filename, kind):
                    # No office or e-book part needs entities of its own, nor (but EPUB's XHTML) a document type,
                    # whose external DTD could declare them: python-docx drops the text after an entity it does
                    # not expand, without a word (one refusal here, for every format).
                    if "<!ENTITY" in text:
                        raise DocumentError(f"{filename!r} is not read: its part {part.filename} declares XML "
                                            f"entities, which no {kind} needs")
                    if not doctypes and "<!DOCTYPE" in text:
                        raise DocumentError(f"{filename!r} is not read: its part {part.filename} declares a "
                                            f"document type (<!DOCTYPE ...>), which no {kind} has")
                    # Counted at the speed of C: start tags, and the text between tags that is not white space
                    # (entities count as their spelling). The format's parser reads the part afterwards,
                    # well-formedness included, once it is known to be of bounded size.
                    elements += text.count("<") - text.count("</") - text.count("<?") - text.count("<!")
                    between_tags = _XML_TAG.sub("", text)
                    characters += len(between_tags) - sum(map(len, _SPACES.findall(between_tags)))
                    if elements > max_elements or characters > max_chars:
                        _refuse_counts(filename, kind, part.filename, elements, characters, max_elements,
                                       max_chars)
            # Elements are bounded by the text they hold too: a document's markup is a few elements per word,
            # not hundreds of thousands of empty ones around one sentence.
            if elements > BASE_ELEMENTS + XML_ELEMENTS_PER_CHAR * characters:
                raise DocumentTooLarge(f"{filename!r} holds {elements} XML elements for {characters} characters of "
                                       f"text, more than a {kind} needs ({BASE_ELEMENTS} and "
                                       f"{XML_ELEMENTS_PER_CHAR} a character)")
    except DocumentError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError, NotImplementedError,
            RuntimeError) as exc:
        raise DocumentError(f"{filename!r} is not a valid {kind} ({type(exc).__name__}: {exc})") from None


# A part's encoding, told from its first bytes as an XML parser tells it (XML 1.0, appendix F; libxml2, under
# lxml, python-docx and python-pptx, does so): a byte order mark; else the encoding in which the part begins
# with "<" and a character that may follow it; else UTF-8, or the encoding its XML declaration names. The text
# is then decoded as the parser decodes it: a search of the bytes for "<!ENTITY" in UTF-8 and UTF-16 found
# nothing in a part in UTF-32, which python-docx read, dropping the text after an entity (fourth probe, F06).
_BYTE_ORDER_MARKS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),  # before UTF-16's
                     (codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
_WIDE_ENCODINGS = ("utf-32-le", "utf-32-be", "utf-16-le", "utf-16-be")
_EBCDIC_XML_DECLARATION = b"\x4c\x6f\xa7\x94"  # "<?xm" in EBCDIC
_READ_ENCODINGS = ("utf-8", "utf-16-le", "utf-16-be")  # the others are refused
# Encodings an XML declaration may name: UTF-8 and UTF-16, and the 8-bit encodings whose markup is ASCII, so that
# the part's markup reads the same decoded as UTF-8. Any other (UTF-7, where "<" is "+ADw-"; ISO-2022-JP, HZ...,
# which libxml2 reads) is refused.
_DECLARED_ENCODINGS = frozenset({"utf-8", "utf8", "utf-16", "utf16", "utf-16le", "utf-16be", "us-ascii", "ascii",
                                 "iso-8859-1", "iso-latin-1", "latin1", "windows-1252", "cp1252"})
_XML_DECLARATION = re.compile(r"<\?xml\s[^>]*>")
_DECLARED_ENCODING = re.compile(r"\sencoding\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")
_XML_SPACE = b" \t\r\n"
_WRITTEN_IN_UTF = ("Office, OpenDocument and EPUB files are written in UTF-8 or UTF-16: save it again from the program "
                   "that made it")


def _xml_encoding(start: bytes) -> str | None:
    """The encoding an XML parser reads a part that begins with ``start`` in (after white space, which may come
    before the first tag), or None for a part that does not begin as XML does (a picture, a font)."""
    for mark, encoding in _BYTE_ORDER_MARKS:
        if start.startswith(mark):
            return encoding
    for encoding in _WIDE_ENCODINGS:
        width = 4 if "32" in encoding else 2
        try:
            first = start[:2 * width].decode(encoding)
        except UnicodeDecodeError:  # (a UTF-32 "character" past U+10FFFF: a video's first bytes)
            continue
        if first[:1] == "<" and (first[1:2] in ("?", "!", "_", ":") or first[1:2].isalpha()):
            return encoding
    if start.startswith(_EBCDIC_XML_DECLARATION):
        return "ebcdic"
    return "utf-8" if start[:1] == b"<" else None


def _may_be_xml(archive: zipfile.ZipFile, part: zipfile.ZipInfo) -> bool:
    """Whether a part's first bytes are those of XML in some encoding, or white space (which any amount of
    may come before the first tag)."""
    if part.is_dir() or part.file_size == 0:
        return False
    with archive.open(part, mode="r") as stream:
        start = stream.read(64).lstrip(_XML_SPACE)
    return not start or _xml_encoding(start) is not None


def _xml_text(archive: zipfile.ZipFile, part: zipfile.ZipInfo, filename: str, kind: str) -> Iterator[str]:
    """The text of ``part`` as the XML parser decodes it, chunk by chunk, each chunk up to its last whole tag;
    nothing for a part that is not XML. A part in an encoding other than UTF-8 and UTF-16 is refused."""
    refused = f"{filename!r} is not read: its part {part.filename}"
    with archive.open(part, mode="r") as stream:
        start = b""
        while not start and (chunk := stream.read(CHUNK_BYTES)):
            start = chunk.lstrip(_XML_SPACE)
        encoding = _xml_encoding(start)
        if encoding is None:
            return
        if encoding not in _READ_ENCODINGS:
            raise DocumentError(f"{refused} is written in {encoding.upper().removesuffix('-LE').removesuffix('-BE')}; "
                                f"{_WRITTEN_IN_UTF}")
        decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        text = decoder.decode(start).removeprefix("\ufeff")
        if text.startswith("<?xml") and text[5:6].isspace():
            declaration = _XML_DECLARATION.match(text)
            if declaration is None:
                raise DocumentError(f"{refused} does not close its XML declaration (<?xml ...?>)")
            for double_quoted, single_quoted in _DECLARED_ENCODING.findall(declaration.group()):
                declared = double_quoted or single_quoted
                if declared.strip().lower().replace("_", "-") not in _DECLARED_ENCODINGS:
                    raise DocumentError(f"{refused} declares the encoding {_shortened(declared)!r}; "
                                        f"{_WRITTEN_IN_UTF}")
        carry = ""  # a tag cut by the end of the previous chunk
        while True:
            whole, carry = _whole_tags(carry + text)
            yield whole
            chunk = stream.read(CHUNK_BYTES)
            if not chunk:
                break
            text = decoder.decode(chunk)
        yield carry + decoder.decode(b"", final=True)


def _refuse_counts(filename: str, kind: str, part: str, elements: int, characters: int, max_elements: int,
                   max_chars: int):
    what = f"{elements} XML elements" if elements > max_elements else f"{characters} characters"
    raise DocumentTooLarge(f"{filename!r} holds more than {what} (read as far as {part}); a {kind} here may hold at "
                           f"most {max_chars} characters of text: split it into smaller files")


def _whole_tags(text: str) -> tuple[str, str]:
    """``text`` up to its last complete tag, and the unfinished tag after it (read with the next chunk)."""
    opening = text.rfind("<")
    if opening > text.rfind(">"):
        return text[:opening], text[opening:]
    return text, ""


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
    # A document, not a corpus: a hard-wrapped paragraph is translated whole and wrapped again.
    segmented = segment_text(text, language, split_sentences=split, paragraphs=True)
    return SegmentedDocument(list(segmented.sentences), False,
                             lambda t, a, target: bom + segmented.join(t, target).encode("utf-8"))


def _segment_html(text: str, filename: str, language: str, split: bool, bom: bytes) -> SegmentedDocument:
    segmented = segment_html(text, language, split_sentences=split)
    return SegmentedDocument(list(segmented.sentences), segmented.has_inline_tags,
                             lambda t, a, target: bom + segmented.join(t, a, target).encode("utf-8"))


# SubRip, read line by line, in time linear in the file: the srt library's parser is one regular expression
# whose nested quantifiers take time cubic in a run of digits and quadratic in a run of blank lines (a line of
# 2,000 digits: a minute; 20,000 empty lines: 15 s). It reads what srt reads: a cue is its number (optional),
# its timing line ("00:01:02,345 --> 00:01:04,000", with the separators editors write, and what follows the
# times kept as it was) and its text; cues are parted by blank lines, or by none where a number and a timing
# line follow the text; a blank line that more text follows (no cue) belongs to the text.
# Each quantifier below is followed by what it cannot match (a digit run by a separator or the end, spaces by a
# dash), so that a line that fails is refused after one pass over it, however long its runs of digits.
_TIME_SEPARATOR = "[,.:\uff0c\uff0e\u3002\uff1a]"  # , . : and their full-width forms
_TIME = f"[0-9]+{_TIME_SEPARATOR}[0-9]+{_TIME_SEPARATOR}[0-9]+(?:{_TIME_SEPARATOR}[0-9]*)?"
_TIME_FIELDS = re.compile(f"([0-9]+){_TIME_SEPARATOR}([0-9]+){_TIME_SEPARATOR}([0-9]+)(?:{_TIME_SEPARATOR}([0-9]*))?")
_TIMING_LINE = re.compile(f"\\s*(?P<start>{_TIME}) *-[ -] *> *(?P<end>{_TIME}) ?(?P<proprietary>.*)")
_CUE_NUMBER = re.compile(r"\s*(-?[0-9]+(?:\.[0-9]*)?)\s*")


def _parse_subtitles(text: str, filename: str) -> list:
    """The cues of a SubRip file as srt.Subtitle objects, or a DocumentError naming the line that cannot be
    read (a cue's time past what a time can be, a line where a cue should begin)."""
    import srt

    lines = [line.removesuffix("\r") for line in text.split("\n")]
    invalid = f"{filename!r} is not a valid SubRip (.srt) subtitle file"

    def after_blank(k: int) -> int:
        while k < len(lines) and not lines[k].strip():
            k += 1
        return k

    def cue_start(k: int) -> tuple[str | None, int] | None:
        """(the cue's number, the line of its timing) if a cue begins at line ``k``."""
        if k >= len(lines):
            return None
        if _TIMING_LINE.fullmatch(lines[k]):
            return None, k
        number = _CUE_NUMBER.fullmatch(lines[k])
        timing = after_blank(k + 1) if number else len(lines)
        if timing < len(lines) and _TIMING_LINE.fullmatch(lines[timing]):
            return number.group(1), timing
        return None

    def number_of(number: str | None, line: int) -> int | None:
        try:  # "12.5" is cue 12 (as srt reads it)
            return None if number is None else int(number.split(".")[0])
        except ValueError:  # past the 4,300 digits Python turns into an int
            raise DocumentError(f"{invalid}: line {line + 1}: the cue number {_shortened(number)} is out of range; "
                                f"correct it") from None

    def time_of(time: str, line: int):
        hours, minutes, seconds, milliseconds = _TIME_FIELDS.fullmatch(time).groups()
        try:
            return timedelta(hours=int(hours), minutes=int(minutes), seconds=int(seconds),
                             milliseconds=int(milliseconds or 0))
        except (ValueError, OverflowError):  # thousands of digits; past a C int or timedelta's 999,999,999 days
            raise DocumentError(f"{invalid}: line {line + 1}: the time {_shortened(time)} is out of range (a time "
                                f"is hours:minutes:seconds,milliseconds, each of a few digits); correct it") from None

    subtitles = []
    k = after_blank(0)
    while k < len(lines):
        start = cue_start(k)
        if start is None:
            raise DocumentError(f"{invalid}: line {k + 1} ({_shortened(lines[k].strip())!r}) does not begin a cue "
                                f"(a cue is its number, its timing line such as 00:00:01,000 --> 00:00:02,000, and "
                                f"its text)")
        number, timing = start
        times = _TIMING_LINE.fullmatch(lines[timing])
        first = end = timing + 1  # the cue's text: lines first..end-1
        while end < len(lines):
            if not lines[end].strip():
                following = after_blank(end)
                if following == len(lines) or cue_start(following) is not None:
                    break  # a blank line before the next cue
                end = following  # a blank line inside the text
            elif end > first and _CUE_NUMBER.fullmatch(lines[end]) and cue_start(end) is not None:
                break  # the next cue, with no blank line before it (a cue's first line is its text, even "42")
            else:
                end += 1
        subtitles.append(srt.Subtitle(index=number_of(number, k), start=time_of(times.group("start"), timing),
                                      end=time_of(times.group("end"), timing), content="\n".join(lines[first:end]),
                                      proprietary=times.group("proprietary")))
        k = after_blank(end)
    return subtitles


def _shortened(text: str, keep: int = 20) -> str:
    """``text`` for a message: its ends, where it is long (a number of thousands of digits)."""
    return text if len(text) <= 2 * keep + 3 else f"{text[:keep]}...{text[-keep:]}"


def _segment_srt(text: str, filename: str, language: str, split: bool, bom: bytes) -> SegmentedDocument:
    import srt

    subtitles = _parse_subtitles(text, filename)
    # A cue's markup is not the model's to translate: its position code ({\an8}) stays first, tags around the
    # whole cue (<i>...</i>, the usual italics of a voice off screen) go around each translated line, and
    # tags inside the text are left out (SubRip has no alignment to place them by).
    marked = [_cue_markup([line.strip() for line in subtitle.content.splitlines() if line.strip()])
              for subtitle in subtitles]
    cues = [lines for lines, _ in marked]
    # A unit is what is translated together: a cue's lines as one text, a sentence that runs on over several
    # cues as one text, or each line of a dialogue cue (one speaker a line) on its own.
    units: list[tuple[range, list]] = []
    k = 0
    while k < len(cues):
        if not cues[k] or is_dialogue(cues[k]):  # each speaker's line translated without its dash
            units.append((range(k, k + 1), [segment_text(DIALOGUE_LINE.sub("", line), language, split_sentences=split)
                                            for line in cues[k]]))
            k += 1
            continue
        stop = k + 1
        while (stop < len(cues) and stop - k < MAX_CUES_PER_SENTENCE and cues[stop] and not is_dialogue(cues[stop])
               and runs_into_next_cue(" ".join(cues[stop - 1]), " ".join(cues[stop]))):
            stop += 1
        text = " ".join(" ".join(cues[cue]) for cue in range(k, stop))
        units.append((range(k, stop), [segment_text(text, language, split_sentences=split)]))
        k = stop
    sentences = [sentence for _, parts in units for part in parts for sentence in part.sentences]

    def join(translations, alignments, target):
        start = 0
        for own_cues, parts in units:
            texts = []
            for part in parts:
                texts.append(part.join(translations[start:start + len(part.sentences)], target))
                start += len(part.sentences)
            first = own_cues.start
            if not cues[first]:
                continue
            if is_dialogue(cues[first]):  # a line a speaker, each with its dash as the source wrote it
                subtitles[first].content = marked[first][1]([DIALOGUE_LINE.match(line).group() + text
                                                             for line, text in zip(cues[first], texts)])
                continue
            own = translations[start - len(parts[0].sentences):start]
            if len(own_cues) == 1 and len(own) == len(cues[first]) > 1 and all(map(ends_sentence, cues[first])):
                # A sentence a line in the source: a sentence a line in the translation.
                subtitles[first].content = marked[first][1]([t.strip() or "..." for t in own])
                continue
            shares = split_by_length(texts[0], [len(" ".join(cues[cue])) for cue in own_cues])
            for cue, share in zip(own_cues, shares):
                subtitles[cue].content = marked[cue][1](balanced_lines(share, len(cues[cue])))
        # reindex=False: the numbers stay as they were; strict=False: a translated line that came out empty
        # must not drop its subtitle (timings are what a subtitle file is for).
        return bom + srt.compose(subtitles, reindex=False, strict=False).encode("utf-8")

    return SegmentedDocument(sentences, False, join)


CUE_POSITION = re.compile(r"^(?:\{\\[^}]*\})+")  # SSA-style codes at a cue's start: {\an8}
CUE_TAG = re.compile(r"</?(?:i|b|u|font)(?:\s[^>]*)?>", re.IGNORECASE)


def _cue_markup(lines: list[str]) -> tuple[list[str], Callable[[list[str]], str]]:
    """A cue's lines without their markup, and how to write translated lines back with it."""
    position = CUE_POSITION.match(lines[0]).group() if lines and CUE_POSITION.match(lines[0]) else ""
    if position:
        lines = [lines[0][len(position):].strip(), *lines[1:]]
    opening = closing = ""
    tags = [match for line in lines for match in CUE_TAG.finditer(line)]
    if len(tags) >= 2 and lines[0].startswith(tags[0].group()) and lines[-1].endswith(tags[-1].group()) \
            and tags[-1].group().lower() == "</" + tags[0].group()[1:].split()[0].rstrip(">").lower() + ">" \
            and len(tags) == 2:
        opening, closing = tags[0].group(), tags[-1].group()
    lines = [line for line in (CUE_TAG.sub("", line).strip() for line in lines) if line]

    def write(translated: list[str]) -> str:
        translated = [opening + line + closing for line in translated if line.strip()]
        return position + "\n".join(translated) if translated else position

    return lines, write


# A sentence is translated whole over at most this many cues (a file without punctuation is not one sentence).
MAX_CUES_PER_SENTENCE = 4
DIALOGUE_LINE = re.compile(r"^[-\u2010-\u2015]\s*")  # a speaker's dash and the space after it


def is_dialogue(lines: list[str]) -> bool:
    """Whether a cue's lines are a dialogue: two or more lines, each a speaker's, each starting with a dash."""
    return len(lines) > 1 and all(DIALOGUE_LINE.match(line) for line in lines)


def runs_into_next_cue(text: str, following: str) -> bool:
    """Whether a cue's sentence runs on into the next cue: the cue ends no sentence (subtitles end their
    sentences with punctuation; one without is cut by the cue's end), and the next cue is not a sound or a
    speaker's note ("[music]", "(laughs)"). The next cue's first letter is no sign: German capitalizes nouns."""
    return bool(text) and not ends_sentence(text) and following.lstrip()[:1] not in ("[", "(", "\u266a", "#")


def split_by_length(text: str, shares: list[int]) -> list[str]:
    """``text`` cut at spaces into len(shares) consecutive pieces whose lengths are as near as the words allow
    to ``shares`` (the source cues' lengths) scaled to the text's length; every piece gets a word while words
    last. A sentence translated over several cues goes back into them this way: by length rather than by
    word alignment, since a cue's time on screen follows how long its text is, and a cut by alignment can
    put most of the sentence in one cue where the target language moves the verb."""
    words = text.split()
    ends = list(itertools.accumulate(len(word) + 1 for word in words))  # text length up to each word's end
    total_share = sum(shares) or 1
    cuts = [0]
    for k in range(1, len(shares)):
        goal = ends[-1] * sum(shares[:k]) / total_share if words else 0
        # Leave a word for each later piece, and take one for this piece where words are left.
        low, high = min(cuts[-1] + 1, len(words)), max(cuts[-1] + 1, len(words) - (len(shares) - k))
        cut = min(range(low, min(high, len(words)) + 1), key=lambda c: abs((ends[c - 1] if c else 0) - goal))
        cuts.append(cut)
    cuts.append(len(words))
    return [" ".join(words[a:b]) for a, b in zip(cuts, cuts[1:])]


def balanced_lines(text: str, count: int) -> list[str]:
    """``text`` broken at spaces into at most ``count`` lines (fewer when it has fewer words; never an empty
    line, which would end a subtitle), the longest line as short as the words allow (so within the source
    cue's longest line wherever the translation can be), lines filled in order up to that length."""
    words = text.split()
    if not words:
        return []
    count = max(1, min(count, len(words)))

    def lines_for(limit: int) -> list[list[str]]:
        lines: list[list[str]] = [[]]
        for word in words:
            if lines[-1] and len(" ".join(lines[-1])) + 1 + len(word) > limit:
                lines.append([])
            lines[-1].append(word)
        return lines

    low, high = max(len(word) for word in words), len(" ".join(words))
    while low < high:  # the shortest longest line that fits the words into ``count`` lines
        middle = (low + high) // 2
        if len(lines_for(middle)) <= count:
            high = middle
        else:
            low = middle + 1
    return [" ".join(line) for line in lines_for(low)]


def _segment_docx(data: bytes, filename: str, language: str, split: bool) -> SegmentedDocument:
    def write(document) -> bytes:
        out = io.BytesIO()
        document.save(out)
        return out.getvalue()

    return SegmentedDocument(*paragraph_document(lambda: _word_paragraphs(data, filename), write, language, split))


def _word_paragraphs(data: bytes, filename: str) -> tuple:
    """A Word document and its paragraphs that hold text, each once, in order: the body (tables and text
    boxes included), then headers and footers that are not linked to the previous section's (a linked one
    is the same part, and would be translated twice)."""
    import docx
    from docx.oxml.ns import qn

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 -- zipfile, lxml and python-docx each raise their own types
        raise DocumentError(f"{filename!r} is not a valid Word (.docx) document ({type(exc).__name__}: {exc})") \
            from None
    roots = [document.element.body]
    for section in document.sections:
        for part in (section.header, section.first_page_header, section.even_page_header,
                     section.footer, section.first_page_footer, section.even_page_footer):
            if not part.is_linked_to_previous:
                roots.append(part._element)
    paragraphs = [_WordParagraph(p) for root in roots for p in root.iter(qn("w:p"))]
    return document, [paragraph for paragraph in paragraphs if "".join(g.text for g in paragraph.groups).strip()]


# Elements of a Word run that are text (python-docx's Run.text reads them: text, tab, line break, hyphens).
_WORD_TEXT_TAGS = frozenset({"t", "tab", "br", "cr", "noBreakHyphen", "softHyphen", "ptab", "rPr", "lastRenderedPageBreak"})


@dataclass
class _RunGroup:
    """Neighbouring text runs of one paragraph with one format (the same ``w:rPr``, inside the same link or
    revision): Word splits runs for its own bookkeeping, and one format is one piece of text."""

    runs: list
    text: str
    form: tuple  # the run properties as XML and the containers: groups of one form look alike


class _WordParagraph(Paragraph):
    """A ``w:p`` element's text runs grouped by format, and :meth:`rebuild` that writes a translation back as
    runs in the translation's order.

    A text run is a ``w:r`` of this paragraph (not of a paragraph nested in it, such as a text box's) holding
    only text, outside any field; other runs (pictures, fields with their codes and results, footnote marks,
    deleted text) stay where they are, untranslated."""

    def __init__(self, p):
        from docx.oxml.ns import qn

        self.p = p
        self.groups: list[_RunGroup] = []
        previous = None
        fields = 0  # how deep the run stands in complex fields (between a fldChar begin and its end)
        for r in p.iter(qn("w:r")):
            if next(r.iterancestors(qn("w:p"))) is not p:
                continue
            for mark in r.iter(qn("w:fldChar")):
                kind = mark.get(qn("w:fldCharType"))
                fields += 1 if kind == "begin" else -1 if kind == "end" and fields else 0
            # A field's result (a page number, a date, a cross-reference) is Word's to compute: kept in place.
            in_field = fields > 0 or any(ancestor.tag == qn("w:fldSimple") for ancestor in self._containers(r))
            if in_field or not _is_text_run(r):
                previous = None
                continue
            # The format: the run's properties and the elements between it and the paragraph (a link keeps
            # its target, a tracked insertion its author).
            chain = tuple(self._containers(r))
            form = (_xml(r.find(qn("w:rPr"))), chain)
            text = _run_text(r)
            if self.groups and not text.strip():  # white space goes with the text before, whatever its format
                self.groups[-1].runs.append(r)
                self.groups[-1].text += text
                continue
            if self.groups and form == previous:
                self.groups[-1].runs.append(r)
                self.groups[-1].text += text
            else:
                self.groups.append(_RunGroup([r], text, form))
            previous = form

    def is_plain(self, group: int) -> bool:
        return self.groups[group].form == (b"", ())  # no run properties, outside any link or revision

    @property
    def texts(self) -> list[str]:
        return [group.text for group in self.groups]

    @property
    def items(self) -> list[Item]:
        return [Item(group) for group in range(len(self.groups))]

    def _containers(self, r) -> list:
        """The elements between run ``r`` and the paragraph, outermost first."""
        chain = []
        parent = r.getparent()
        while parent is not None and parent is not self.p:
            chain.append(parent)
            parent = parent.getparent()
        return chain[::-1]

    def rebuild(self, pieces: list[tuple[int, str]]) -> None:
        """Replace the paragraph's text runs by ``pieces``, (group, text) in the translation's order: each
        piece is a run with the group's format (a copy of its first run's properties, inside copies of its
        link or revision), neighbouring pieces of one format are one run, and neighbouring runs in the same
        link share one copy of it. The new runs stand where the first text run stood."""
        from docx.oxml.ns import qn
        from docx.text.run import Run

        merged: list[list] = []
        for group, text in pieces:
            if not text:
                continue
            if merged and self.groups[merged[-1][0]].form == self.groups[group].form:
                merged[-1][1] += text
            else:
                merged.append([group, text])
        chains = [self._containers(group.runs[0]) for group in self.groups]  # before the runs are taken out
        first = self.groups[0].runs[0]
        anchor = chains[0][0] if chains[0] else first
        marker = anchor.makeelement(qn("w:proofErr"), {})  # a placeholder, removed below
        anchor.addprevious(marker)
        for group in self.groups:
            for r in group.runs:
                parent = r.getparent()
                parent.remove(r)
                # A link or revision left with nothing but its properties goes too (copies carry the new runs).
                while parent is not self.p and all(_is_properties(child) for child in parent):
                    grand = parent.getparent()
                    grand.remove(parent)
                    parent = grand
        inner = None  # the innermost copy of the last piece's containers, while the next piece may share it
        previous_chain: list = []
        for group, text in merged:
            run = copy.deepcopy(self.groups[group].runs[0])
            for child in list(run):
                if child.tag != qn("w:rPr"):
                    run.remove(child)
            Run(run, None).text = text
            chain = chains[group]
            if chain and inner is not None and chain == previous_chain:
                inner.append(run)
                continue
            outer = inner = None
            for original in chain:
                made = _empty_copy(original)
                if outer is None:
                    outer = made
                else:
                    inner.append(made)
                inner = made
            if inner is not None:
                inner.append(run)
            marker.addprevious(outer if outer is not None else run)
            previous_chain = chain
        marker.getparent().remove(marker)


def _empty_copy(element):
    """A copy of ``element`` with its attributes and its properties (children named ``...Pr``) but no content."""
    made = element.makeelement(element.tag, dict(element.attrib))
    for child in element:
        if child.tag.endswith("Pr"):
            made.append(copy.deepcopy(child))
    return made


def _is_properties(element) -> bool:
    return isinstance(element.tag, str) and element.tag.endswith("Pr")


def _is_text_run(r) -> bool:
    return all(child.tag.rsplit("}", 1)[-1] in _WORD_TEXT_TAGS for child in r)


def _run_text(r) -> str:
    from docx.text.run import Run

    return Run(r, None).text


def _xml(element) -> bytes:
    from lxml import etree

    return etree.tostring(element) if element is not None else b""
