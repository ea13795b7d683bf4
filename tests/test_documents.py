"""text/documents.py: .txt, .html, .srt and .docx as sentences and back, each keeping its structure.

"Translations" here are functions of the sentence (itself, upper case) with the word alignment they imply
(word i to word i), so what must come back is known exactly."""

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer_mt.errors import TransformerMTError
from transformer_mt.text.documents import DocumentError, segment_document


def translate(document, change=lambda s: s):
    """Join ``change`` of each sentence, each word aligned to the word at the same place."""
    translations = [change(sentence) for sentence in document.sentences]
    alignments = [[(i, i) for i in range(len(sentence.split()))] for sentence in document.sentences]
    return document.join(translations, alignments if document.has_inline_tags else None, "en")


words = st.sampled_from(["Der", "Hund", "läuft.", "Ein", "Mann", "liest!", "Was?", "Haus", "«gut»", "3,5"])
lines = st.lists(words, min_size=0, max_size=8).map(" ".join)
texts = st.lists(lines, min_size=1, max_size=6).map("\n".join)


@settings(max_examples=60, deadline=None)
@given(text=texts, bom=st.booleans(), crlf=st.booleans())
def test_a_text_file_comes_back_byte_for_byte_under_the_identity(text, bom, crlf):
    if not text.strip():
        return
    data = (b"\xef\xbb\xbf" if bom else b"") + (text.replace("\n", "\r\n") if crlf else text).encode("utf-8")
    assert translate(segment_document(data, "a.txt", "de")) == data


def test_a_text_file_keeps_its_lines_and_paragraphs():
    data = "Der Hund läuft. Ein Mann liest.\nZweite Zeile.\n\nNeuer Absatz.\n".encode()
    document = segment_document(data, "notes.TXT", "de")
    assert "Der Hund läuft. Ein Mann liest." not in document.sentences  # split into sentences
    assert translate(document, str.upper).decode() == data.decode().upper()


def test_subtitles_keep_numbers_and_timings():
    srt = ("7\n00:00:01,000 --> 00:00:02,500\nDer Hund läuft.\nEin Mann liest.\n\n"
           "8\n00:01:03,250 --> 00:01:05,000\n<i>Hallo.</i>\n\n")
    got = translate(segment_document(srt.encode(), "film.srt", "de"), str.upper).decode()
    assert got == srt.replace("Der Hund läuft.\nEin Mann liest.", "DER HUND LÄUFT.\nEIN MANN LIEST.").replace(
        "<i>Hallo.</i>", "<I>HALLO.</I>")


def test_html_files_keep_their_markup():
    page = '<html><head><title>Titel</title></head><body><p class="x">Der Hund läuft.</p></body></html>'
    got = translate(segment_document(page.encode(), "page.htm", "de"), str.upper).decode()
    assert '<p class="x">DER HUND LÄUFT.</p>' in got


def make_docx():
    docx = pytest.importorskip("docx")
    document = docx.Document()
    document.add_heading("Der Bericht.", level=1)
    paragraph = document.add_paragraph("Der Hund ")
    paragraph.add_run("läuft").bold = True
    paragraph.add_run(" über die Wiese.")
    document.add_paragraph("Ein Mann liest.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).merge(table.cell(0, 1)).text = "Verbundene Zelle."
    table.cell(1, 0).text, table.cell(1, 1).text = "Links.", "Rechts."
    document.sections[0].header.paragraphs[0].text = "Kopfzeile."
    out = io.BytesIO()
    document.save(out)
    return docx, out.getvalue()


def test_a_word_document_keeps_paragraphs_tables_headers_and_run_formats():
    docx, data = make_docx()
    document = segment_document(data, "report.docx", "de")
    # Every text once: the merged cell is one cell, the header is read once.
    assert sorted(document.sentences) == sorted(["Der Bericht.", "Der Hund läuft über die Wiese.", "Ein Mann liest.",
                                                 "Verbundene Zelle.", "Links.", "Rechts.", "Kopfzeile."])
    assert document.has_inline_tags  # the paragraph with a bold word
    same = docx.Document(io.BytesIO(translate(document)))
    assert [p.text for p in same.paragraphs] == ["Der Bericht.", "Der Hund läuft über die Wiese.", "Ein Mann liest."]
    runs = same.paragraphs[1].runs
    assert "".join(run.text for run in runs) == "Der Hund läuft über die Wiese."
    assert [run.text.strip() for run in runs if run.bold] == ["läuft"]  # the bold word is still bold
    assert same.paragraphs[0].style.name == "Heading 1"
    assert same.tables[0].cell(1, 1).text == "Rechts." and same.sections[0].header.paragraphs[0].text == "Kopfzeile."
    upper = docx.Document(io.BytesIO(translate(document, str.upper)))
    assert [p.text for p in upper.paragraphs] == ["DER BERICHT.", "DER HUND LÄUFT ÜBER DIE WIESE.", "EIN MANN LIEST."]


@pytest.mark.parametrize("name, data, fragment", [
    ("a.pdf", b"%PDF-1.4", "not supported"), ("a", b"text", "not supported"), ("a.txt", b"", "no text"),
    ("a.txt", b"\xff\xfeH\x00i\x00", "not UTF-8"), ("a.txt", b"a\x00b", "NUL"), ("a.srt", b"not a subtitle", "SubRip"),
    ("a.srt", b"", "no text"), ("a.docx", b"", "not a valid Word"), ("a.docx", b"PK\x03\x04junk", "not a valid Word"),
    ("a.html", b"<p> </p>", "no text"),
])
def test_bad_documents_raise_a_clear_error(name, data, fragment):
    with pytest.raises(DocumentError, match=fragment) as raised:
        segment_document(data, name, "de")
    assert isinstance(raised.value, TransformerMTError)


def test_a_zip_bomb_is_refused_before_it_is_unpacked():
    import zipfile

    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("word/document.xml", "w", force_zip64=True) as part:
            for _ in range(101):
                part.write(bytes(1_000_000))
    assert len(bomb.getvalue()) < 1_000_000  # well within the default upload limit (2 MB)
    with pytest.raises(DocumentError, match="unpacks to 1 parts of 101000000 bytes"):
        segment_document(bomb.getvalue(), "bomb.docx", "de")
