"""EPUB (.epub) e-books as sentences and back: each XHTML content document's text, every other part as it was.

An EPUB is a zip of XHTML documents, CSS, pictures and fonts, listed by the package document (the OPF file
that META-INF/container.xml names). The XHTML documents of its manifest are translated, in spine order (the
navigation document and any other XHTML after); every other part is written back byte for byte, in its place
and with its compression (the ``mimetype`` part first and stored, as the EPUB specification requires). The
table of contents of EPUB 2 (toc.ncx) is left as it is.

Why not ``segment_html`` on each document as a whole: html5lib parses XHTML as HTML and writes HTML back
(``<br>`` without its slash, a ``<?xml?>`` declaration turned into a comment, ``<a/>`` read as an open
element), and an e-book reader parses XHTML as XML: one such chapter is an error page. So each document is
parsed and written by lxml's XML tools, and its text goes through the same paragraph machinery as the office
formats (text/office.py): every element that is not an inline element and holds text is a paragraph, the
inline elements around its text (``<b>``, ``<i>``, ``<a href>``, ``<span class>``...) are its runs' formats,
and a paragraph of several runs goes through ``segment_html`` as ``<span data-run=i>`` markup, each format
landing on the target words aligned to its source words, rebuilt in the translation's order with copies of
those elements (attributes kept). What html.py leaves alone is left alone here: <script>, <style>, <code>,
<pre>, SVG and MathML, ``translate="no"`` and class ``notranslate``; elements without text (an anchor, a
picture) and the block elements inside a paragraph are kept whole.
"""

from __future__ import annotations

import html as html_escaping
import io
import posixpath
import zipfile
from urllib.parse import unquote

from ..errors import DocumentError
from .html import INLINE_TAGS, PROTECTED_TAGS
from .office import MixedParagraph, paragraph_document, parse_xml, rewrite_zip

KIND = "EPUB (.epub) e-book"
CONTAINER = "{urn:oasis:names:tc:opendocument:xmlns:container}"
OPF = "{http://www.idpf.org/2007/opf}"
XHTML = "{http://www.w3.org/1999/xhtml}"
XHTML_TYPES = frozenset({"application/xhtml+xml", "text/html"})


def _local(element) -> str:
    return element.tag.rsplit("}", 1)[-1].lower() if isinstance(element.tag, str) else ""


def _is_protected(element) -> bool:
    if not isinstance(element.tag, str) or (element.tag.startswith("{") and not element.tag.startswith(XHTML)):
        return True  # comments, processing instructions, SVG, MathML
    if _local(element) in PROTECTED_TAGS or element.get("translate", "").strip().lower() == "no":
        return True
    return "notranslate" in element.get("class", "").split()


def _entity_text(node) -> str | None:
    """The character an HTML entity reference stands for (an EPUB 2 document may use &nbsp; with the XHTML
    DTD, which is not loaded): written back as the character itself."""
    from lxml import etree

    if not isinstance(node, etree._Entity):
        return None
    text = html_escaping.unescape(f"&{node.name};")
    return None if text.startswith("&") else text


def _is_format(element) -> bool:
    return _local(element) in INLINE_TAGS and not _is_protected(element)


def content_documents(archive: zipfile.ZipFile, filename: str) -> list[str]:
    """The names in ``archive`` of the e-book's XHTML documents: spine order, then the rest of the manifest."""
    try:
        container = parse_xml(archive.read("META-INF/container.xml"), "META-INF/container.xml", filename, KIND)
    except KeyError:
        raise DocumentError(f"{filename!r} is not a valid {KIND}: it has no META-INF/container.xml") from None
    rootfile = container.getroot().find(f".//{CONTAINER}rootfile")
    package_name = rootfile.get("full-path") if rootfile is not None else None
    try:
        package = parse_xml(archive.read(package_name or ""), package_name, filename, KIND)
    except KeyError:
        raise DocumentError(f"{filename!r} is not a valid {KIND}: its package document "
                            f"{package_name!r} is missing") from None
    base = posixpath.dirname(package_name)
    items = {}
    for item in package.getroot().iter(f"{OPF}item"):
        if item.get("media-type") in XHTML_TYPES and item.get("href"):
            items[item.get("id")] = posixpath.normpath(posixpath.join(base, unquote(item.get("href"))))
    ordered = [items[ref.get("idref")] for ref in package.getroot().iter(f"{OPF}itemref") if ref.get("idref") in items]
    ordered += [name for name in items.values() if name not in ordered]
    names = set(archive.namelist())
    return [name for k, name in enumerate(ordered) if name in names and name not in ordered[:k]]


def _epub_paragraphs(data: bytes, filename: str):
    """The parsed XHTML documents (name -> tree) and their paragraphs that hold text, in reading order."""
    trees = {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for name in content_documents(archive, filename):
                trees[name] = parse_xml(archive.read(name), name, filename, KIND)
    except DocumentError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError, NotImplementedError) as exc:
        raise DocumentError(f"{filename!r} is not a valid {KIND} ({type(exc).__name__}: {exc})") from None
    paragraphs = []

    def visit(element):
        if _is_protected(element):
            return
        if not _is_format(element):
            paragraph = MixedParagraph(element, _is_format, _entity_text, lambda e: _local(e) == "br")
            if paragraph.text.strip():
                paragraphs.append(paragraph)
        for child in element:
            visit(child)

    for tree in trees.values():
        visit(tree.getroot())
    return trees, paragraphs


def segment_epub(data: bytes, filename: str, language: str, split: bool):
    from lxml import etree

    def write(trees) -> bytes:
        return rewrite_zip(data, {name: etree.tostring(tree, xml_declaration=True, encoding="utf-8")
                                  for name, tree in trees.items()})

    return paragraph_document(lambda: _epub_paragraphs(data, filename), write, language, split)
