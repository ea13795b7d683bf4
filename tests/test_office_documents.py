"""text/office.py and text/epub.py: .pptx, .odt, .odp and .epub as sentences and back, each keeping its structure,
its run formats on the aligned target words, and the archive limits of .docx (bombs, entities, sizes).

The translation reverses each sentence's words and upper-cases them, with the matching alignment (word i to
word n-1-i), so every word moves and what must come back is known exactly."""

import codecs
import io
import re
import time
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_documents import SENTENCE, join_reversed, reverse_upper

from transformer_mt.text.documents import CHUNK_BYTES, MEDIA_TYPES, DocumentError, segment_document

FORMS = st.sampled_from([None, "bold", "italic", "link"])
PARAGRAPHS = st.lists(st.lists(SENTENCE, min_size=1, max_size=3), min_size=1, max_size=4)
LINK = "https://example.org/a?b=1&c=2"


def layout_of(paragraphs, data) -> list[list[tuple[str, str | None]]]:
    """Each paragraph's text cut at any places (mid-word included) into runs of any format."""
    layout = []
    for paragraph in paragraphs:
        text = " ".join(paragraph)
        cuts = sorted(set(data.draw(st.lists(st.integers(1, len(text) - 1), max_size=6))))
        layout.append([(text[a:b], data.draw(FORMS)) for a, b in zip([0, *cuts], [*cuts, len(text)])])
    return layout


def check_translated(got: list[list[tuple[str, str | None]]], layout, paragraphs) -> None:
    """Per paragraph: its text is its sentences' translations joined; a source word wholly in one run (and
    once in its paragraph) has its run's format on its target word."""
    assert len(got) == len(paragraphs)
    for runs_got, runs, sentences in zip(got, layout, paragraphs):
        assert "".join(text for text, _ in runs_got) == " ".join(map(reverse_upper, sentences))
        formats, position = {}, 0
        for text, form in runs:
            for match in re.finditer(r"\S+", text):
                formats[(position + match.start(), position + match.end())] = form
            position += len(text)
        target_formats: dict[str, set] = {}
        for text, form in runs_got:
            for word in text.split():
                target_formats.setdefault(word, set()).add(form)
        source_text = " ".join(sentences)
        for match in re.finditer(r"\S+", source_text):
            if (match.start(), match.end()) in formats and source_text.split().count(match.group()) == 1:
                assert formats[match.start(), match.end()] in target_formats[match.group().upper()], (match.group(), runs)


def zip_of(parts: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in parts:
            archive.writestr(name, content, compress_type=zipfile.ZIP_STORED if name == "mimetype" else zipfile.ZIP_DEFLATED)
    return out.getvalue()


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ------------------------------------------------------------------------------------------------------------ .pptx

def pptx_file(layout, extras=None) -> bytes:
    pptx = pytest.importorskip("pptx")
    from pptx.util import Inches

    presentation = pptx.Presentation()
    for k in range(0, len(layout), 2):  # two paragraphs a slide
        slide = presentation.slides.add_slide(presentation.slide_layouts[6])
        frame = slide.shapes.add_textbox(Inches(1), Inches(1), Inches(6), Inches(3)).text_frame
        for j, runs in enumerate(layout[k:k + 2]):
            paragraph = frame.paragraphs[0] if j == 0 else frame.add_paragraph()
            for text, form in runs:
                run = paragraph.add_run()
                run.text = text
                if form == "link":
                    run.hyperlink.address = LINK
                elif form:
                    setattr(run.font, form, True)
        if extras:
            extras(slide)
    out = io.BytesIO()
    presentation.save(out)
    return out.getvalue()


def pptx_runs(data: bytes) -> list[list[tuple[str, str | None]]]:
    import pptx
    from pptx.oxml.ns import qn

    got = []
    for slide in pptx.Presentation(io.BytesIO(data)).slides:
        for shape in slide.shapes:
            if shape.has_text_frame:
                for paragraph in shape.text_frame.paragraphs:
                    runs = []
                    for r in paragraph._p.iter(qn("a:r")):
                        rpr = r.find(qn("a:rPr"))
                        form = None
                        if rpr is not None:
                            form = ("bold" if rpr.get("b") == "1" else "italic" if rpr.get("i") == "1"
                                    else "link" if rpr.find(qn("a:hlinkClick")) is not None else None)
                        runs.append(("".join(t.text or "" for t in r.iter(qn("a:t"))), form))
                    got.append(runs)
    return got


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(paragraphs=PARAGRAPHS, data=st.data())
def test_a_slide_paragraph_is_its_translation_with_each_format_on_its_aligned_words(paragraphs, data):
    layout = layout_of(paragraphs, data)
    document = segment_document(pptx_file(layout), "talk.pptx", "en")
    assert document.sentences == [sentence for paragraph in paragraphs for sentence in paragraph]
    got = join_reversed(document)
    check_translated(pptx_runs(got), layout, paragraphs)
    # join may be called again: it starts from the original bytes (python-pptx stamps each save's time on the
    # zip entries, so the bytes may differ: the text and formats may not)
    assert pptx_runs(join_reversed(document)) == pptx_runs(got)


def test_slides_keep_tables_groups_notes_line_breaks_fields_and_links():
    pptx = pytest.importorskip("pptx")
    from pptx.oxml.ns import qn
    from pptx.util import Inches

    def extras(slide):
        table = slide.shapes.add_table(1, 2, Inches(1), Inches(4), Inches(4), Inches(1)).table
        table.cell(0, 0).text, table.cell(0, 1).text = "Vanta kesu.", "Miro tabel."
        group = slide.shapes.add_group_shape()
        group.shapes.add_textbox(Inches(1), Inches(5), Inches(2), Inches(1)).text_frame.text = "Dunor sil."
        slide.notes_slide.notes_text_frame.text = "Paket orvano bek."
        frame = slide.shapes.add_textbox(Inches(5), Inches(5), Inches(2), Inches(1)).text_frame
        p = frame.paragraphs[0]
        p.add_run().text = "Quira zelt"
        p.add_line_break()
        p.add_run().text = "ampos rinu."
        p._p.append(p._p.makeelement(qn("a:fld"), {"id": "{B6F15528-21DE-4FAA-801E-634DDDAF4B2B}",
                                                    "type": "slidenum"}))
        p._p[-1].append(p._p.makeelement(qn("a:t"), {}))
        p._p[-1][0].text = "1"

    document = segment_document(pptx_file([[("Lorem vanta.", "link")]], extras), "talk.pptx", "en")
    assert document.sentences == ["Lorem vanta.", "Vanta kesu.", "Miro tabel.", "Dunor sil.", "Quira zelt ampos rinu.",
                                  "Paket orvano bek."]
    got = pptx.Presentation(io.BytesIO(join_reversed(document)))
    slide = got.slides[0]
    texts = [shape.text_frame.text for shape in slide.shapes if shape.has_text_frame]
    assert texts[0] == "VANTA. LOREM" and texts[-1].startswith("RINU. AMPOS\vZELT QUIRA") or texts
    table = next(shape for shape in slide.shapes if shape.has_table).table
    assert [table.cell(0, 0).text, table.cell(0, 1).text] == ["KESU. VANTA", "TABEL. MIRO"]
    group = next(shape for shape in slide.shapes if shape.shape_type == 6)
    assert group.shapes[0].text_frame.text == "SIL. DUNOR"
    assert slide.notes_slide.notes_text_frame.text == "BEK. ORVANO PAKET"
    first = next(shape for shape in slide.shapes if shape.has_text_frame).text_frame.paragraphs[0]
    assert all(run.hyperlink.address == LINK for run in first.runs)
    last = [shape for shape in slide.shapes if shape.has_text_frame][-1].text_frame.paragraphs[0]._p
    assert len(last.findall(qn("a:br"))) == 1 and len(last.findall(qn("a:fld"))) == 1  # kept, once each


# ------------------------------------------------------------------------------------------------------ .odt, .odp

ODF_NS = ('xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
          'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
          'xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0" '
          'xmlns:fo="urn:oasis:names:tc:opendocument:xmlns:xsl-fo-compatible:1.0" '
          'xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" '
          'xmlns:presentation="urn:oasis:names:tc:opendocument:xmlns:presentation:1.0" '
          'xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0" '
          'xmlns:xlink="http://www.w3.org/1999/xlink"')
ODF_STYLES = ('<office:automatic-styles>'
              '<style:style style:name="T1" style:family="text"><style:text-properties fo:font-weight="bold"/>'
              '</style:style><style:style style:name="T2" style:family="text">'
              '<style:text-properties fo:font-style="italic"/></style:style></office:automatic-styles>')


def odf_runs_markup(runs) -> str:
    out = []
    for text, form in runs:
        text = escape(text).replace("  ", ' <text:s/>')
        if form == "bold":
            out.append(f'<text:span text:style-name="T1">{text}</text:span>')
        elif form == "italic":
            out.append(f'<text:span text:style-name="T2">{text}</text:span>')
        elif form == "link":
            out.append(f'<text:a xlink:type="simple" xlink:href="{escape(LINK)}">{text}</text:a>')
        else:
            out.append(text)
    return "".join(out)


def odf_file(layout, presentation=False, body_extra="", prolog="", footer="") -> bytes:
    if presentation:
        frames = "".join(f'<draw:frame svg:x="1cm" svg:y="{k}cm"><draw:text-box><text:p>{odf_runs_markup(runs)}'
                         f'</text:p></draw:text-box></draw:frame>' for k, runs in enumerate(layout))
        body = f'<office:presentation><draw:page draw:name="p1">{frames}{body_extra}</draw:page></office:presentation>'
        mimetype = b"application/vnd.oasis.opendocument.presentation"
    else:
        paragraphs = "".join((f'<text:h text:outline-level="1">{odf_runs_markup(runs)}</text:h>' if k % 2 else
                              f'<text:p text:style-name="Standard">{odf_runs_markup(runs)}</text:p>')
                             for k, runs in enumerate(layout))
        body = f"<office:text>{paragraphs}{body_extra}</office:text>"
        mimetype = b"application/vnd.oasis.opendocument.text"
    content = (f'<?xml version="1.0" encoding="UTF-8"?>{prolog}<office:document-content {ODF_NS} office:version="1.3">'
               f'{ODF_STYLES}<office:body>{body}</office:body></office:document-content>')
    styles = (f'<?xml version="1.0" encoding="UTF-8"?><office:document-styles {ODF_NS} office:version="1.3">'
              f'<office:master-styles><style:master-page style:name="Standard"><style:footer>'
              f'{footer}</style:footer></style:master-page></office:master-styles></office:document-styles>')
    manifest = (b'<?xml version="1.0" encoding="UTF-8"?><manifest:manifest '
                b'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.3">'
                b'<manifest:file-entry manifest:full-path="/" manifest:media-type="' + mimetype + b'"/>'
                b'</manifest:manifest>')
    return zip_of([("mimetype", mimetype), ("content.xml", content.encode()), ("styles.xml", styles.encode()),
                   ("Pictures/a.png", b"\x89PNG\r\n\x1a\n not a real picture"), ("META-INF/manifest.xml", manifest)])


TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"


def odf_runs(data: bytes, part: str = "content.xml") -> list[list[tuple[str, str | None]]]:
    from lxml import etree

    root = etree.fromstring(zipfile.ZipFile(io.BytesIO(data)).read(part))
    got = []
    for p in root.iter(f"{TEXT}p", f"{TEXT}h"):
        runs = []

        def walk(element, form, runs=runs):
            runs.append((element.text or "", form))
            for child in element:
                inner = form
                if child.tag == f"{TEXT}span":
                    inner = {"T1": "bold", "T2": "italic"}.get(child.get(f"{TEXT}style-name"))
                elif child.tag == f"{TEXT}a":
                    inner = "link"
                    assert child.get("{http://www.w3.org/1999/xlink}href") == LINK
                elif child.tag == f"{TEXT}s":
                    runs.append((" " * int(child.get(f"{TEXT}c", "1")), form))
                if child.tag in (f"{TEXT}span", f"{TEXT}a"):
                    walk(child, inner)
                runs.append((child.tail or "", form))

        walk(p, None)
        got.append([run for run in runs if run[0]])
    return got


@pytest.mark.parametrize("presentation", [False, True], ids=["odt", "odp"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(paragraphs=PARAGRAPHS, data=st.data())
def test_an_odf_paragraph_is_its_translation_with_each_format_on_its_aligned_words(presentation, paragraphs, data):
    from lxml import etree

    layout = layout_of(paragraphs, data)
    source = odf_file(layout, presentation)
    name = "talk.odp" if presentation else "letter.odt"
    document = segment_document(source, name, "en")
    assert document.sentences == [sentence for paragraph in paragraphs for sentence in paragraph]
    got = join_reversed(document)
    check_translated(odf_runs(got), layout, paragraphs)
    # The structure (paragraphs and headings, frames) and every other part come back.
    shape = [element.tag for element in etree.fromstring(zipfile.ZipFile(io.BytesIO(source)).read("content.xml")).iter()
             if element.tag.startswith(("{urn:oasis:names:tc:opendocument:xmlns:office", TEXT + "p", TEXT + "h",
                                        "{urn:oasis:names:tc:opendocument:xmlns:drawing"))]
    got_shape = [element.tag for element in etree.fromstring(zipfile.ZipFile(io.BytesIO(got)).read("content.xml")).iter()
                 if element.tag in shape]
    assert got_shape == shape
    check_other_parts_kept(source, got, {"content.xml", "styles.xml"})
    assert join_reversed(document) == got  # join again: from the original bytes, the same file


def check_other_parts_kept(source: bytes, got: bytes, changed: set[str]) -> None:
    before, after = zipfile.ZipFile(io.BytesIO(source)), zipfile.ZipFile(io.BytesIO(got))
    assert after.namelist() == before.namelist()
    first = after.infolist()[0]
    assert first.filename == "mimetype" and first.compress_type == zipfile.ZIP_STORED
    assert after.read("mimetype") == before.read("mimetype")
    for name in before.namelist():
        if name not in changed:
            assert after.read(name) == before.read(name), name


def test_odf_keeps_line_breaks_tabs_notes_bookmarks_and_translates_footers():
    extra = ('<text:p>Lorem vanta<text:line-break/>kesu miro.<text:tab/>Tabel<text:note text:id="n1" '
             'text:note-class="footnote"><text:note-citation>1</text:note-citation><text:note-body><text:p>Dunor sil.'
             '</text:p></text:note-body></text:note> paket<text:bookmark text:name="b"/>.</text:p>')
    source = odf_file([[("Quira zelt.", None)]], body_extra=extra, footer="<text:p>Ampos rinu.</text:p>")
    document = segment_document(source, "letter.odt", "en")
    assert document.sentences == ["Quira zelt.", "Lorem vanta kesu miro.", "Tabel paket.", "Dunor sil.", "Ampos rinu."]
    got = join_reversed(document)
    content = zipfile.ZipFile(io.BytesIO(got)).read("content.xml").decode()
    for kept in ("<text:line-break/>", "<text:tab/>", '<text:bookmark text:name="b"/>', "<text:p>SIL. DUNOR</text:p>"):
        assert content.count(kept) == 1, (kept, content)
    assert "MIRO. KESU" in content and "VANTA LOREM" in content.replace("<text:line-break/>", " ")
    assert "RINU. AMPOS" in zipfile.ZipFile(io.BytesIO(got)).read("styles.xml").decode()


# ------------------------------------------------------------------------------------------------------------ .epub

XHTML_NS = "http://www.w3.org/1999/xhtml"


def epub_runs_markup(runs) -> str:
    tags = {"bold": ("<b>", "</b>"), "italic": ('<i class="x">', "</i>"),
            "link": (f'<a href="{escape(LINK)}">', "</a>"), None: ("", "")}
    return "".join(tags[form][0] + escape(text) + tags[form][1] for text, form in runs)


def epub_file(layout, body_extra="", prolog="") -> bytes:
    paragraphs = "".join(f"<p>{epub_runs_markup(runs)}</p>" for runs in layout)
    chapter = (f'<?xml version="1.0" encoding="utf-8"?>{prolog or "<!DOCTYPE html>"}\n<html xmlns="{XHTML_NS}" '
               f'xmlns:epub="http://www.idpf.org/2007/ops" xml:lang="en"><head><title>Lorem.</title>'
               f'<link rel="stylesheet" href="style.css"/></head><body><section epub:type="chapter">{paragraphs}'
               f'{body_extra}</section></body></html>')
    opf = ('<?xml version="1.0" encoding="utf-8"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0" '
           'unique-identifier="id"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:identifier id="id">x'
           '</dc:identifier><dc:title>Lorem</dc:title><dc:language>en</dc:language></metadata><manifest>'
           '<item id="c1" href="text/chapter%201.xhtml" media-type="application/xhtml+xml"/>'
           '<item id="css" href="text/style.css" media-type="text/css"/>'
           '<item id="img" href="images/cover.png" media-type="image/png"/></manifest>'
           '<spine><itemref idref="c1"/></spine></package>')
    container = ('<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
                 '<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
                 '</rootfiles></container>')
    return zip_of([("mimetype", b"application/epub+zip"), ("META-INF/container.xml", container.encode()),
                   ("OEBPS/content.opf", opf.encode()), ("OEBPS/text/chapter 1.xhtml", chapter.encode()),
                   ("OEBPS/text/style.css", b"p { margin: 0 }"), ("OEBPS/images/cover.png", b"\x89PNG not real")])


def epub_runs(data: bytes) -> list[list[tuple[str, str | None]]]:
    from lxml import etree

    root = etree.fromstring(zipfile.ZipFile(io.BytesIO(data)).read("OEBPS/text/chapter 1.xhtml"))  # XML, or raises
    got = []
    forms = {"b": "bold", "i": "italic", "a": "link"}
    for p in root.iter(f"{{{XHTML_NS}}}p"):
        runs = []

        def walk(element, form, runs=runs):
            runs.append((element.text or "", form))
            for child in element:
                walk(child, forms[etree.QName(child).localname])
                runs.append((child.tail or "", form))

        walk(p, None)
        got.append([run for run in runs if run[0]])
    return got


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(paragraphs=PARAGRAPHS, data=st.data())
def test_an_epub_paragraph_is_its_translation_with_each_format_on_its_aligned_words(paragraphs, data):
    layout = layout_of(paragraphs, data)
    source = epub_file(layout)
    document = segment_document(source, "book.epub", "en")
    assert document.sentences == ["Lorem."] + [sentence for paragraph in paragraphs for sentence in paragraph]
    got = join_reversed(document)
    check_translated(epub_runs(got), layout, paragraphs)
    check_other_parts_kept(source, got, {"OEBPS/text/chapter 1.xhtml"})
    assert join_reversed(document) == got  # join again: from the original bytes, the same file
    chapter = zipfile.ZipFile(io.BytesIO(got)).read("OEBPS/text/chapter 1.xhtml").decode()
    assert chapter.startswith("<?xml") and "<!DOCTYPE html>" in chapter and "<title>LOREM.</title>" in chapter
    assert '<section epub:type="chapter">' in chapter and '<link rel="stylesheet" href="style.css"/>' in chapter


def test_epub_leaves_code_anchors_pictures_and_untranslatable_text_alone():
    extra = ('<p>Lorem <code>x = 1</code> vanta<br/>kesu <a id="anchor"/>miro.</p><pre>Tabel dunor.</pre>'
             '<p translate="no">Sil paket.</p><div>Orvano <img src="../images/cover.png" alt="bek"/> quira.</div>')
    document = segment_document(epub_file([], body_extra=extra), "book.epub", "en")
    assert document.sentences == ["Lorem.", "Lorem vanta kesu miro.", "Orvano quira."]
    chapter = zipfile.ZipFile(io.BytesIO(join_reversed(document))).read("OEBPS/text/chapter 1.xhtml").decode()
    for kept in ("<code>x = 1</code>", "<br/>", '<a id="anchor"/>', "<pre>Tabel dunor.</pre>",
                 '<p translate="no">Sil paket.</p>', '<img src="../images/cover.png" alt="bek"/>'):
        assert chapter.count(kept) == 1, (kept, chapter)
    assert "MIRO." in chapter and "QUIRA" in chapter


# --------------------------------------------------------------------------------------------------------- refusals

def make(extension: str, layout=((("Lorem vanta.", None),),)) -> bytes:
    layout = [list(runs) for runs in layout]
    return {"pptx": lambda: pptx_file(layout), "odt": lambda: odf_file(layout),
            "odp": lambda: odf_file(layout, presentation=True), "epub": lambda: epub_file(layout)}[extension]()


XML_PART = {"pptx": "ppt/slides/slide1.xml", "odt": "content.xml", "odp": "content.xml",
            "epub": "OEBPS/text/chapter 1.xhtml"}
EXTENSIONS = ["pptx", "odt", "odp", "epub"]


def with_part(data: bytes, name: str, content: bytes | None = None, writer=None) -> bytes:
    """``data`` with the part ``name`` replaced by ``content`` (or written by ``writer``)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for info in source.infolist():
            if info.filename != name:
                archive.writestr(info, source.read(info))
        if writer is not None:
            with archive.open(name, "w", force_zip64=True) as part:
                writer(part)
        else:
            archive.writestr(name, content)
    return out.getvalue()


@pytest.mark.parametrize("extension", EXTENSIONS)
def test_a_zip_bomb_is_refused_before_it_is_unpacked(extension):
    def writer(part):
        for _ in range(101):
            part.write(bytes(1_000_000))

    bomb = with_part(make(extension), XML_PART[extension], writer=writer)
    assert len(bomb) < 1_000_000  # within the server's upload limits
    started = time.perf_counter()
    with pytest.raises(DocumentError, match=rf"'bomb\.{extension}' unpacks to \d+ parts of \d+ bytes"):
        segment_document(bomb, f"bomb.{extension}", "en")
    assert time.perf_counter() - started < 1


@pytest.mark.parametrize("extension", EXTENSIONS)
def test_an_archive_of_many_elements_is_refused_while_it_is_read(extension):
    def writer(part):
        part.write(b'<?xml version="1.0"?><x>')
        for _ in range(15):
            part.write(b"<a/>" * 10_000)
        part.write(b"</x>")

    bomb = with_part(make(extension), XML_PART[extension], writer=writer)
    started = time.perf_counter()
    with pytest.raises(DocumentError, match=rf"'many\.{extension}' holds more than \d+ XML elements"):
        segment_document(bomb, f"many.{extension}", "en", max_chars=2_000)
    assert time.perf_counter() - started < 1  # counted on the bytes, refused as soon as the limit is passed


@pytest.mark.parametrize("extension", EXTENSIONS)
@pytest.mark.parametrize("data", [b"", b"PK\x03\x04junk", b"not a zip at all"], ids=["empty", "cut", "text"])
def test_a_malformed_file_gets_a_clear_error(extension, data):
    with pytest.raises(DocumentError, match=rf"'bad\.{extension}' is not a valid"):
        segment_document(data, f"bad.{extension}", "en")


@pytest.mark.parametrize("extension", EXTENSIONS)
def test_a_broken_xml_part_or_a_missing_part_gets_a_clear_error(extension):
    broken = with_part(make(extension), XML_PART[extension], b"<x><y></x>")
    with pytest.raises(DocumentError, match=rf"'bad\.{extension}' is not a valid"):
        segment_document(broken, f"bad.{extension}", "en")
    empty = zip_of([("mimetype", b"application/zip")])
    with pytest.raises(DocumentError, match=rf"'empty\.{extension}' is not a valid"):
        segment_document(empty, f"empty.{extension}", "en")


@pytest.mark.parametrize("extension", EXTENSIONS)
def test_an_xml_external_entity_is_not_resolved(extension, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("Sekretwort.")
    source = make(extension)
    name = XML_PART[extension]
    original = zipfile.ZipFile(io.BytesIO(source)).read(name).decode()
    declaration = f'<!DOCTYPE x [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>'
    body = re.sub(r"<\?xml[^>]*\?>\s*(<!DOCTYPE html>)?", "", original, count=1)
    hostile = with_part(source, name, ('<?xml version="1.0" encoding="UTF-8"?>' + declaration +
                                       body.replace("Lorem vanta.", "Lorem &xxe; vanta.")).encode())
    with pytest.raises(DocumentError, match="declares XML entities"):  # refused outright, never read
        segment_document(hostile, f"hostile.{extension}", "en")


def docx_file(text: str) -> bytes:
    docx = pytest.importorskip("docx")
    document = docx.Document()
    document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


@pytest.mark.parametrize("extension", [*EXTENSIONS, "docx"])
@pytest.mark.parametrize("declaration", ['<!ENTITY e "dog">', '<!ENTITY e SYSTEM "file:///etc/hostname">'])
def test_a_part_that_declares_entities_is_refused_in_every_format(extension, declaration):
    """An entity of its own in any format's part is refused when the archive is checked: python-docx dropped
    the text after an unexpanded one ("The &e; liked the queen." read as "The "), with exit 0."""
    source = make(extension) if extension != "docx" else docx_file("Lorem vanta.")
    name = XML_PART.get(extension, "word/document.xml")
    original = zipfile.ZipFile(io.BytesIO(source)).read(name).decode()
    body = re.sub(r"<\?xml[^>]*\?>\s*(<!DOCTYPE html>)?", "", original, count=1)
    hostile = with_part(source, name, (f'<?xml version="1.0" encoding="UTF-8"?><!DOCTYPE x [{declaration}]>' +
                                       body.replace("Lorem vanta.", "Lorem &e; vanta.")).encode())
    with pytest.raises(DocumentError, match=f"its part {re.escape(name)} declares XML entities"):
        segment_document(hostile, f"hostile.{extension}", "en")


# ------------------------------------------------------------------------------------- a part's encoding and DTD
# Fourth probe, F06: word/document.xml in UTF-32, declaring an entity, passed a search of the bytes for "<!ENTITY"
# in UTF-8 and UTF-16, and python-docx dropped the text after the entity (exit 0). So did a part that begins with
# white space (past the first 64 bytes, which were all that were looked at) and one that names an external DTD.

FORMATS = [*EXTENSIONS, "docx"]
# How a part may be written: its byte order mark, its codec, and the encoding its XML declaration names.
WRITTEN = {"UTF-8": (b"", "utf-8", "UTF-8"), "UTF-8 with BOM": (codecs.BOM_UTF8, "utf-8", "utf-8"),
           "UTF-16LE": (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16"), "UTF-16BE": (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16"),
           "UTF-16LE without BOM": (b"", "utf-16-le", "UTF-16"), "UTF-16BE without BOM": (b"", "utf-16-be", "UTF-16"),
           "UTF-32LE": (codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32"), "UTF-32BE": (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32"),
           "UTF-32LE without BOM": (b"", "utf-32-le", "UTF-32"), "UTF-32BE without BOM": (b"", "utf-32-be", "UTF-32")}
# A document type, with entities of its own or an external DTD (which could declare them: an entity it declares
# is not expanded either). EPUB 2's XHTML has a document type, so for .epub only the entities.
HOSTILE = {"entity": '<!DOCTYPE x [{pad}<!ENTITY e "dog">]>', "external entity": '<!DOCTYPE x [{pad}<!ENTITY e SYSTEM '
           '"file:///etc/hostname">]>', "parameter entity": '<!DOCTYPE x [{pad}<!ENTITY % p "x">]>',
           "external DTD": '<!DOCTYPE x SYSTEM "x.dtd"{pad}>'}


def format_part(extension: str) -> tuple[bytes, str, str]:
    """A document of the format, the name of its main XML part, and that part's XML without its declaration."""
    source = make(extension) if extension != "docx" else docx_file("Lorem vanta.")
    name = XML_PART.get(extension, "word/document.xml")
    original = zipfile.ZipFile(io.BytesIO(source)).read(name).decode()
    return source, name, re.sub(r"<\?xml[^>]*\?>\s*(<!DOCTYPE html>)?", "", original, count=1)


def written(text: str, how: str, declared: bool) -> bytes:
    mark, codec, name = WRITTEN[how]
    return mark + ((f'<?xml version="1.0" encoding="{name}"?>' if declared else "") + text).encode(codec)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(extension=st.sampled_from(FORMATS), how=st.sampled_from(list(WRITTEN)), declared=st.booleans(),
       hostile=st.sampled_from(list(HOSTILE)), where=st.sampled_from(["first", "after white space", "at a chunk end"]),
       shift=st.integers(-12, 12))
def test_a_part_that_declares_entities_or_a_dtd_is_refused_whatever_its_encoding(extension, how, declared, hostile,
                                                                                  where, shift):
    """Whatever the encoding (as a byte order mark, the first bytes or the XML declaration tell it) and wherever
    the declaration is (first; after white space, past the first 64 bytes; across the end of the chunk the
    archive is read in), the part is refused: for declaring entities or a document type, or for an encoding no
    office or e-book file is written in. Never read, never with a word of it lost."""
    if extension == "epub" and hostile == "external DTD":
        hostile = "entity"
    source, name, body = format_part(extension)
    declaration = HOSTILE[hostile]
    if where == "after white space" and not declared:  # (white space may come first only without a declaration)
        prolog = " " * 100 + declaration.format(pad="")
    elif where == "at a chunk end":  # a comment long enough that what follows it begins around CHUNK_BYTES
        mark, codec, _ = WRITTEN[how]
        start = written(declaration.split("{pad}")[0] + "<!-- ", how, declared)
        pad = max(0, (CHUNK_BYTES + shift - len(start)) // len(" ".encode(codec)) - len(" -->"))
        prolog = declaration.format(pad="<!-- " + "x" * pad + " -->")
    else:
        prolog = declaration.format(pad="")
    hostile_part = written(prolog + body.replace("Lorem vanta.", "Lorem &e; vanta."), how, declared)
    with pytest.raises(DocumentError) as refused:
        segment_document(with_part(source, name, hostile_part), f"hostile.{extension}", "en")
    message = str(refused.value)
    # (UTF-16 without a byte order mark or a declaration, after white space, is no XML that libxml2 reads)
    unreadable = how.endswith("without BOM") and not declared and "not a valid" in message
    assert unreadable or re.match(rf"'hostile\.{extension}' is not read: its part {re.escape(name)} (declares XML "
                                  r"entities|declares a document type|is written in UTF-32)", message), message


@pytest.mark.parametrize("extension", FORMATS)
@pytest.mark.parametrize("how, declared", [(how, declared) for how in WRITTEN if "UTF-32" not in how
                                           for declared in (True, False)
                                           if declared or not how.endswith("without BOM")])  # (libxml2 needs it)
def test_a_part_in_utf8_or_utf16_reads_as_in_utf8(extension, how, declared):
    """What the checks allow: a part in UTF-8 or UTF-16, with or without an XML declaration naming it, reads as
    the same part in UTF-8."""
    source, name, body = format_part(extension)
    recoded = with_part(source, name, written(body, how, declared))
    assert segment_document(recoded, f"a.{extension}", "en").sentences == \
        segment_document(source, f"a.{extension}", "en").sentences


@pytest.mark.parametrize("extension", FORMATS)
@pytest.mark.parametrize("encoding, codec", [("UTF-7", "utf-7"), ("ISO-2022-JP", "iso2022_jp"), ("HZ", "hz"),
                                             ("IBM037", "cp037"), ("SHIFT_JIS", "shift_jis"), ("UTF-32", "utf-8")])
def test_a_part_that_declares_another_encoding_is_refused(extension, encoding, codec):
    """libxml2 reads a part in the encoding its declaration names: in UTF-7, "<!ENTITY" is "+ADw-!ENTITY", which
    no search of the bytes finds. Office, OpenDocument and EPUB files are UTF-8 or UTF-16 only."""
    source, name, body = format_part(extension)
    text = '<!DOCTYPE x [<!ENTITY e "dog">]>' + body.replace("Lorem vanta.", "Lorem &e; vanta.")
    hostile = with_part(source, name, f'<?xml version="1.0" encoding="{encoding}"?>'.encode() + text.encode(codec))
    with pytest.raises(DocumentError, match=f"its part {re.escape(name)} declares the encoding '{encoding}'"):
        segment_document(hostile, f"hostile.{extension}", "en")


def test_pictures_and_videos_are_not_taken_for_xml_in_another_encoding():
    """An MP4 video begins with its first box's size: 00 00 00 3C is "<" in UTF-32BE, but what follows it
    ("ftyp") is no character, so the part is not XML and the presentation is read."""
    source = make("pptx")
    video = b"\x00\x00\x00\x3cftypisom" + bytes(range(256)) * 40
    picture = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
    with_media = with_part(with_part(source, "ppt/media/media1.mp4", video), "ppt/media/image1.png", picture)
    assert segment_document(with_media, "talk.pptx", "en").sentences == segment_document(source, "talk.pptx",
                                                                                          "en").sentences


@pytest.mark.parametrize("extension", EXTENSIONS)
def test_the_text_limit_is_applied_while_reading(extension):
    source = make(extension, [[("Lorem vanta kesu miro. " * 20, None)]] * 10)
    with pytest.raises(DocumentError, match="characters"):
        segment_document(source, f"long.{extension}", "en", max_chars=1000)


# ----------------------------------------------------------------------------------------------- /translate_file

@pytest.fixture(scope="module")
def server(small_run):
    pytest.importorskip("fastapi")
    from conftest import live_app

    from transformer_mt import Translator
    from transformer_mt.serving.server import ServeLimits, create_app

    translator = Translator.from_run(small_run[2], device="cpu")
    with live_app(create_app(translator, limits=ServeLimits(max_file_bytes=200_000, max_file_chars=5_000),
                             max_wait_ms=1)) as http:
        yield http, translator


@pytest.mark.parametrize("extension", EXTENSIONS)
def test_translate_file_takes_each_new_format(server, extension):
    """Uploaded, translated sentence by sentence (a paragraph of one format is exactly its text's translation),
    downloaded as the same kind of file; a malformed one gets a 400 naming it."""
    from conftest import WORDS

    client, translator = server
    sentences = [" ".join(WORDS[(i * 5 + j) % len(WORDS)] for j in range(3 + i)) for i in range(3)]
    layout = [[(sentences[0], None)], [(sentences[1], None)], [(sentences[2], "bold")]]
    answer = client.post("/translate_file", files={"file": (f"talk.{extension}", make(extension, layout),
                                                            "application/octet-stream")},
                         data={"source": "src", "target": "tgt"})
    assert answer.status_code == 200, answer.text
    url = answer.json()["translatedFileUrl"]
    assert url.endswith(f".talk.{extension}")
    got = client.get(url)
    assert got.status_code == 200 and got.headers["content-type"].startswith(MEDIA_TYPES[f".{extension}"])
    runs = {"pptx": pptx_runs, "odt": odf_runs, "odp": odf_runs, "epub": epub_runs}[extension](got.content)
    expected = [translator.translate([sentence])[0] for sentence in sentences]
    assert ["".join(text for text, _ in paragraph) for paragraph in runs] == expected
    assert all(form == "bold" for _, form in runs[2])
    bad = client.post("/translate_file", files={"file": (f"bad.{extension}", b"PK\x03\x04junk", "application/zip")},
                      data={"source": "src", "target": "tgt"})
    assert bad.status_code == 400 and "'bad." in bad.json()["error"] and "not a valid" in bad.json()["error"]


def test_an_epub2_chapter_with_the_xhtml_dtd_and_html_entities_is_read_without_loading_the_dtd():
    chapter = ('<?xml version="1.0" encoding="utf-8"?><!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.1//EN" '
               '"http://www.w3.org/TR/xhtml11/DTD/xhtml11.dtd"><html xmlns="http://www.w3.org/1999/xhtml"><head>'
               '<title>Lorem.</title></head><body><p>Vanta&nbsp;kesu <em>miro</em>&hellip;</p></body></html>')
    source = with_part(epub_file([]), "OEBPS/text/chapter 1.xhtml", chapter.encode())
    document = segment_document(source, "book.epub", "en")
    assert document.sentences == ["Lorem.", "Vanta kesu miro…"]  # the entities read as their characters
    got = zipfile.ZipFile(io.BytesIO(join_reversed(document))).read("OEBPS/text/chapter 1.xhtml").decode()
    # (a word cut between two runs, "<em>miro</em>&hellip;", takes one run's format, as in a Word document)
    assert "xhtml11.dtd" in got and "<em>MIRO…" in got and "KESU VANTA" in got.replace("\xa0", " ")
