"""text/documents.py: .txt, .html, .srt and .docx as sentences and back, each keeping its structure.

"Translations" here are functions of the sentence (itself, upper case) with the word alignment they imply
(word i to word i), so what must come back is known exactly."""

import io
import re
import time

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from transformer_mt.errors import TransformerMTError
from transformer_mt.text.documents import DocumentError, segment_document
from transformer_mt.text.segment import MIN_WRAP_WIDTH


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
        "<i>Hallo.</i>", "<i>HALLO.</i>")  # the markup is not translated


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


# --------------------------------------------------------------------------------- documents as people write them
# Invented words (no abbreviation of any language), sentences ending as sentences do.
WORD = st.sampled_from(["lorem", "vanta", "kesu", "miro", "tabel", "dunor", "sil", "paket", "orvano", "bek",
                        "quira", "zelt", "ampos", "rinu", "fodral"])
SENTENCE = st.builds(lambda words, end: " ".join(words).capitalize() + end,
                     st.lists(WORD, min_size=2, max_size=12), st.sampled_from([".", "!", "?"]))
PARAGRAPHS = st.lists(st.lists(SENTENCE, min_size=1, max_size=6), min_size=1, max_size=4)


def reverse_upper(sentence: str) -> str:
    """A translation that moves every word: the words in reverse order, in upper case."""
    return " ".join(reversed(sentence.split())).upper()


def reversed_pairs(sentence: str) -> list[tuple[int, int]]:
    n = len(sentence.split())
    return [(i, n - 1 - i) for i in range(n)]


def join_reversed(document) -> bytes:
    return document.join([reverse_upper(s) for s in document.sentences],
                         [reversed_pairs(s) for s in document.sentences] if document.has_inline_tags else None, "en")


@settings(max_examples=150, deadline=None)
@given(paragraphs=PARAGRAPHS, width=st.integers(20, 120), indent=st.sampled_from(["", "  "]),
       crlf=st.booleans())
def test_a_wrapped_paragraph_translates_whole_and_comes_back_wrapped(paragraphs, width, indent, crlf):
    import textwrap

    longest = max(len(word) for paragraph in paragraphs for sentence in paragraph for word in sentence.split())
    width = max(width, longest + len(indent) + 1)
    blocks = [textwrap.fill(" ".join(paragraph), width, initial_indent=indent, subsequent_indent=indent,
                            break_long_words=False, break_on_hyphens=False) for paragraph in paragraphs]
    # Narrower text is never taken for wrapped text (a sign-off, an address): the rule's documented limit.
    assume(all(max(map(len, block.split("\n"))) >= MIN_WRAP_WIDTH for block in blocks if "\n" in block))
    text = "\n\n".join(blocks) + "\n"
    document = segment_document((text.replace("\n", "\r\n") if crlf else text).encode(), "mail.txt", "en")
    assert document.sentences == [sentence for paragraph in paragraphs for sentence in paragraph]
    got = join_reversed(document).decode()
    assert ("\r\n" in got) == crlf and ("\n" not in got.replace("\r\n", "") if crlf else "\r" not in got)
    got_blocks = got.replace("\r\n", "\n").rstrip("\n").split("\n\n")
    assert len(got_blocks) == len(paragraphs)
    for block, source_block, paragraph in zip(got_blocks, blocks, paragraphs):
        # The paragraph's text is its sentences' translations, joined.
        assert " ".join(block.split()) == " ".join(reverse_upper(sentence) for sentence in paragraph)
        lines = block.split("\n")
        source_lines = source_block.split("\n")
        if len(source_lines) > 1 and len(lines) > 1:  # wrapped again, within the source's width, indent kept
            limit = max(len(line) for line in source_lines)
            assert all(len(line) <= limit or " " not in line.strip() for line in lines)
            assert all(line.startswith(indent) for line in lines)


@settings(max_examples=60, deadline=None)
@given(paragraphs=PARAGRAPHS, width=st.integers(20, 120))
def test_the_identity_gives_a_wrapped_text_back_byte_for_byte(paragraphs, width):
    import textwrap

    width = max(width, 1 + max(len(word) for paragraph in paragraphs for sentence in paragraph
                               for word in sentence.split()))
    blocks = [textwrap.fill(" ".join(paragraph), width, break_on_hyphens=False) for paragraph in paragraphs]
    assume(all(max(map(len, block.split("\n"))) >= MIN_WRAP_WIDTH for block in blocks if "\n" in block))
    text = "\n\n".join(blocks)
    document = segment_document(text.encode(), "a.txt", "en")
    assert document.join(list(document.sentences), None, "en").decode() == text


@settings(max_examples=60, deadline=None)
@given(sentences=st.lists(SENTENCE, min_size=1, max_size=12))
def test_a_file_of_one_sentence_per_line_stays_one_per_line(sentences):
    text = "\n".join(sentences) + "\n"
    document = segment_document(text.encode(), "lines.txt", "en")
    assert document.sentences == sentences
    assert join_reversed(document).decode() == "\n".join(map(reverse_upper, sentences)) + "\n"


def test_headings_lists_and_sign_offs_are_not_joined_to_their_neighbours():
    text = ("Minutes of the meeting\n"
            "The committee met on Tuesday and agreed that the budget for next year should be\n"
            "discussed again before it is sent to the board for a final decision on it.\n"
            "\n"
            "- the budget\n- the new members\n- any other business\n\nBest,\nTom\n")
    document = segment_document(text.encode(), "notes.txt", "en")
    assert document.sentences[:2] == ["Minutes of the meeting",
                                      "The committee met on Tuesday and agreed that the budget for next year should be "
                                      "discussed again before it is sent to the board for a final decision on it."]
    assert document.sentences[2:] == ["the budget", "the new members", "any other business", "Best,", "Tom"]
    assert join_reversed(document).decode().split("\n")[4:7] == ["- BUDGET THE", "- MEMBERS NEW THE",
                                                                 "- BUSINESS OTHER ANY"]  # the marks stay


@settings(max_examples=40, deadline=None)
@given(sentences=st.lists(SENTENCE, min_size=2, max_size=6), width=st.integers(30, 90),
       marks=st.sampled_from(["> ", ">> ", "> > "]))
def test_a_quoted_wrapped_paragraph_is_one_text_and_keeps_its_quote_marks(sentences, width, marks):
    import textwrap

    block = textwrap.fill(" ".join(sentences), width, initial_indent=marks, subsequent_indent=marks,
                          break_on_hyphens=False)
    assume("\n" in block)
    document = segment_document(("Anna wrote:\n" + block + "\n").encode(), "reply.txt", "en")
    assert document.sentences == ["Anna wrote:", *sentences]
    lines = join_reversed(document).decode().rstrip("\n").split("\n")[1:]
    assert all(line.startswith(marks) for line in lines)
    assert " ".join(line[len(marks):] for line in lines) == " ".join(map(reverse_upper, sentences))


def test_word_fields_keep_their_results_in_place():
    """A page number (w:fldSimple) and a date (a complex field: begin, code, separate, result, end) are Word's
    to compute: their results stay as they were, outside the translated text."""
    docx = pytest.importorskip("docx")
    from docx.oxml import parse_xml
    from docx.oxml.ns import nsdecls, qn

    document = docx.Document()
    paragraph = document.add_paragraph("Lorem vanta kesu ")
    paragraph._p.append(parse_xml(f'<w:fldSimple {nsdecls("w")} w:instr="PAGE"><w:r><w:t>7</w:t></w:r></w:fldSimple>'))
    paragraph.add_run(" miro tabel. Dunor sil ")
    for xml in ('<w:r {}><w:fldChar w:fldCharType="begin"/></w:r>', '<w:r {}><w:instrText> DATE </w:instrText></w:r>',
                '<w:r {}><w:fldChar w:fldCharType="separate"/></w:r>', '<w:r {}><w:t>1/2/2026</w:t></w:r>',
                '<w:r {}><w:fldChar w:fldCharType="end"/></w:r>'):
        paragraph._p.append(parse_xml(xml.format(nsdecls("w"))))
    paragraph.add_run(" paket orvano.")
    out = io.BytesIO()
    document.save(out)
    segmented = segment_document(out.getvalue(), "fields.docx", "en")
    assert segmented.sentences == ["Lorem vanta kesu miro tabel.", "Dunor sil paket orvano."]
    got = docx.Document(io.BytesIO(join_reversed(segmented))).paragraphs[0]._p
    texts = [t.text for t in got.iter(qn("w:t"))]
    assert "7" in texts and "1/2/2026" in texts
    assert got.find(qn("w:fldSimple")).find(".//" + qn("w:t")).text == "7"
    words = " ".join(t for t in texts if t not in ("7", "1/2/2026")).split()
    assert words == " ".join(map(reverse_upper, segmented.sentences)).split()


def srt_file(cues: list[list[str]]) -> str:
    return "".join(f"{k + 1}\n00:00:{k:02d},000 --> 00:00:{k:02d},900\n" + "\n".join(lines) + "\n\n"
                   for k, lines in enumerate(cues))


@settings(max_examples=120, deadline=None)
@given(sentences=st.lists(SENTENCE, min_size=1, max_size=6), data=st.data())
def test_a_subtitle_sentence_translates_whole_over_its_lines_and_cues(sentences, data):
    """Any sentence broken at any word boundaries into 1-3 lines, and every other sentence run on into a
    second cue at any word: each sentence is translated whole, each cue keeps its timing and gets at most its
    number of lines, none empty, and a sentence's cues hold its translation."""
    import srt

    cues, owners = [], []
    for k, sentence in enumerate(sentences):
        words = sentence.split()
        pieces = [words]
        if k % 2 and len(words) >= 2:
            cut = data.draw(st.integers(1, len(words) - 1))
            pieces = [words[:cut], words[cut:]]
        first = len(cues)
        for piece in pieces:
            count = data.draw(st.integers(1, min(3, len(piece))))
            cuts = sorted(data.draw(st.lists(st.integers(1, len(piece) - 1), min_size=count - 1, max_size=count - 1,
                                             unique=True))) if count > 1 else []
            cues.append([" ".join(piece[a:b]) for a, b in zip([0, *cuts], [*cuts, len(piece)])])
        owners.append(range(first, len(cues)))
    document = segment_document(srt_file(cues).encode(), "film.srt", "en")
    assert document.sentences == sentences
    got = list(srt.parse(join_reversed(document).decode()))
    source = list(srt.parse(srt_file(cues)))
    assert [(s.index, s.start, s.end) for s in got] == [(s.index, s.start, s.end) for s in source]
    for sentence, owner in zip(sentences, owners):
        lines = [got[k].content.split("\n") for k in owner]
        assert all(line.strip() for cue in lines for line in cue)  # an empty line would end the cue
        assert all(len(cue) <= len(cues[k]) for cue, k in zip(lines, owner))
        assert " ".join(" ".join(cue) for cue in lines) == reverse_upper(sentence)


# A number of a cue as a file may hold it: a few digits, a dozen (past a C int and timedelta's 999,999,999 days),
# or thousands (past the 4,300 digits Python converts to an int).
CUE_NUMBER = st.one_of(st.text("0123456789", min_size=1, max_size=3), st.text("0123456789", min_size=1, max_size=14),
                       st.integers(4290, 4400).map("9".__mul__))
# The separators between the fields of a time: SubRip's own "," and ":", and the ones editors write.
TIME_SEPARATOR = st.sampled_from(list(",.:，．。："))


@st.composite
def cue_time(draw, number=CUE_NUMBER) -> str:
    hours, minutes, seconds = draw(number), draw(number), draw(number)
    milliseconds = draw(st.one_of(st.just(""), st.tuples(TIME_SEPARATOR, number | st.just("")).map("".join)))
    return f"{hours}{draw(TIME_SEPARATOR)}{minutes}{draw(TIME_SEPARATOR)}{seconds}{milliseconds}"


@settings(max_examples=200, deadline=None)
@given(index=st.one_of(st.just(""), CUE_NUMBER), start=cue_time(), end=cue_time())
def test_any_digits_in_a_cue_are_read_or_refused_naming_its_line(index, start, end):
    """Any digits in any field of a cue's number and timing (F04: "999999999999:00:00,000" was an OverflowError
    traceback in translate-file and a 500 on the server): the file is read and written back with the same
    timings, or refused with one line naming the line of the number or time that is out of range."""
    import srt

    text = ("1\n00:00:01,000 --> 00:00:02,000\nLorem vanta.\n\n" + (f"{index}\n" if index else "") +
            f"{start} --> {end}\nKesu miro.\n\n3\n00:00:05,000 --> 00:00:06,000\nTabel dunor.\n")
    timing_line = 6 if index else 5
    try:
        document = segment_document(text.encode(), "film.srt", "en")
    except DocumentError as error:
        message = str(error)
        assert message.startswith("'film.srt' is not a valid SubRip (.srt) subtitle file: line "), message
        assert re.search(r": line (\d+): the (cue number|time) ", message).group(1) == str(
            5 if "cue number" in message else timing_line)
        assert "\n" not in message and len(message) < 300  # one line: numbers of thousands of digits are cut
        return
    got = list(srt.parse(join_reversed(document).decode()))
    assert [(cue.start, cue.end) for cue in got] == [
        (srt.srt_timestamp_to_timedelta(a), srt.srt_timestamp_to_timedelta(b))
        for a, b in [("00:00:01,000", "00:00:02,000"), (start, end), ("00:00:05,000", "00:00:06,000")]]
    assert got[1].index == (int(index) if index else 0)  # (srt writes a cue without a number as 0)


# Files as editors write them, with what srt tolerates: numbers or none ("12.5" is cue 12), separators other
# than SubRip's, arrows of other shapes, positions after the timing, CRLF, several blank lines between cues or
# none before a numbered one, a blank line inside a cue's text, a text line that is a number.
SUBTITLE_LINE = st.one_of(
    st.sampled_from(["Lorem vanta.", "kesu miro", "- Zelt?", "<i>Rinu</i>", "42", "  indented", "{\\an8}Top"]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=8))


@st.composite
def subtitle_file(draw) -> str:
    cues = []
    for _ in range(draw(st.integers(0, 4))):
        number = draw(st.sampled_from(["", "7", "12.5", "-3", "8 ", "100000"]))
        timing = (draw(cue_time(st.text("0123456789", min_size=1, max_size=3))) +
                  draw(st.sampled_from([" --> ", "-->", " - > ", "  -->  "])) +
                  draw(cue_time(st.text("0123456789", min_size=1, max_size=3))) +
                  draw(st.sampled_from(["", " X1:100 X2:200", " "])))
        text = draw(st.lists(SUBTITLE_LINE, min_size=0 if number else 1, max_size=3))
        if text and draw(st.booleans()):
            text.insert(draw(st.integers(1, len(text))), draw(st.sampled_from(["", "  "])))
        if cues and not number and not cues[-1][2]:
            number = "9"  # (srt reads a cue without text and an unnumbered one after it as one cue)
        cues.append((number, timing, text))
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    out = draw(st.sampled_from(["", "\n"]))
    for k, (number, timing, text) in enumerate(cues):
        if k:  # a numbered cue may follow the text before it with no blank line
            out += draw(st.sampled_from(["", "\n", "\n\n", "  \n"] if number else ["\n", "\n\n"])).replace("\n", eol)
        out += eol.join(([number] if number else []) + [timing] + text) + eol
    return out


@settings(max_examples=300, deadline=None)
@given(subtitle_file())
def test_a_subtitle_file_is_read_as_the_srt_library_reads_it(text):
    """The reader of documents.py (linear in the file, unlike srt.parse) finds the cues srt finds: their
    numbers, timings, positions and text lines (blank and surrounding white space aside)."""
    import srt

    from transformer_mt.text.documents import _parse_subtitles

    def cues(subtitles):
        return [(cue.index, cue.start, cue.end, cue.proprietary, [line.strip() for line in cue.content.splitlines()
                                                                  if line.strip()]) for cue in subtitles]

    assert cues(_parse_subtitles(text, "film.srt")) == cues(srt.parse(text))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["9", "\n", "\r\n", " ", "1\n", "12.5\n", "00:00:0", ",", " --> ", "x"]),
                          st.one_of(st.integers(1, 100), st.integers(50_000, 300_000))), min_size=1, max_size=4))
@example([("9", 300_000), ("\n", 1)])  # srt.parse: a line of 2,000 digits took a minute (cubic)
@example([("\r\n", 300_000)])  # srt.parse: 20,000 CRLF line ends took 55 s (quadratic)
@example([("\n\n1\n00:00:01,000 --> 00:00:02,000\nLorem.\n", 10_000), ("00:00:0", 1), ("9", 300_000)])
def test_a_subtitle_file_is_read_in_time_linear_in_its_size(runs):
    """Long runs of digits, blank lines, spaces, numbers, separators (srt.parse, which documents.py used, took a
    minute for one line of 2,000 digits): each file of up to a few megabytes is read or refused in seconds."""
    text = "".join(unit * count for unit, count in runs)
    started = time.perf_counter()
    try:
        segment_document(text.encode(), "film.srt", "en")
    except DocumentError:
        pass
    assert time.perf_counter() - started < 5, [(unit, count) for unit, count in runs]


def test_subtitle_lines_are_balanced_and_dialogue_keeps_a_line_per_speaker():
    cues = [["Lorem vanta kesu miro tabel dunor sil", "paket orvano bek quira."],
            ["- Zelt ampos?", "- Rinu fodral."]]
    document = segment_document(srt_file(cues).encode(), "film.srt", "en")
    assert document.sentences == ["Lorem vanta kesu miro tabel dunor sil paket orvano bek quira.", "Zelt ampos?",
                                  "Rinu fodral."]  # a speaker's dash is not the model's to translate
    import srt

    got = list(srt.parse(join_reversed(document).decode()))
    first = got[0].content.split("\n")
    assert len(first) == 2 and abs(len(first[0]) - len(first[1])) <= max(len(w) for w in first[1].split()) + 1
    assert got[1].content.split("\n") == ["- " + reverse_upper("Zelt ampos?"), "- " + reverse_upper("Rinu fodral.")]


FORMATS = st.sampled_from([None, "bold", "italic"])


def word_file(paragraphs: list[list[tuple[str, str | None]]]) -> bytes:
    docx = pytest.importorskip("docx")
    document = docx.Document()
    for runs in paragraphs:
        paragraph = document.add_paragraph()
        for text, form in runs:
            run = paragraph.add_run(text)
            if form:
                setattr(run, form, True)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


@settings(max_examples=80, deadline=None)
@given(paragraphs=st.lists(st.lists(SENTENCE, min_size=1, max_size=3), min_size=1, max_size=3), data=st.data())
def test_a_word_paragraph_is_its_translation_with_each_format_on_its_aligned_words(paragraphs, data):
    """Any run boundaries (mid-word included) and formats: the paragraph's text is exactly its sentences'
    translations joined, in the translation's order; a word that was wholly in one format is that format
    where its aligned target word stands."""
    docx = pytest.importorskip("docx")
    from docx.oxml.ns import qn

    layout = []
    for paragraph in paragraphs:
        text = " ".join(paragraph)
        cuts = sorted(set(data.draw(st.lists(st.integers(1, len(text) - 1), max_size=6))))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
        layout.append([(piece, data.draw(FORMATS)) for piece in pieces])
    document = segment_document(word_file(layout), "report.docx", "en")
    assert document.sentences == [sentence for paragraph in paragraphs for sentence in paragraph]
    got = docx.Document(io.BytesIO(join_reversed(document)))
    assert len(got.paragraphs) == len(paragraphs)
    for paragraph, runs, sentences in zip(got.paragraphs, layout, paragraphs):
        assert "".join(t.text for t in paragraph._p.iter(qn("w:t"))) == " ".join(map(reverse_upper, sentences))
        # Per source word wholly inside one run: its format; then the same word, reversed, in the target.
        formats, position = {}, 0
        for text, form in runs:
            for match in re.finditer(r"\S+", text):
                formats[(position + match.start(), position + match.end())] = form
            position += len(text)
        source_text = " ".join(sentences)
        target_formats = {}
        for run in paragraph.runs:
            form = "bold" if run.bold else "italic" if run.italic else None
            for word in run.text.split():
                target_formats.setdefault(word, set()).add(form)
        for match in re.finditer(r"\S+", source_text):
            if (match.start(), match.end()) in formats and source_text.count(match.group()) == 1:
                assert formats[match.start(), match.end()] in target_formats[match.group().upper()], (match.group(), runs)


def test_subtitle_markup_stays_out_of_the_translation():
    """A position code stays first, italics around the whole cue go around each translated line, tags inside
    the text are not given to the model, a cue of tags only is left as it is, and a cue of a sentence a line
    keeps a sentence a line."""
    import srt

    cues = [["{\\an8}<i>Lorem vanta kesu.</i>"], ["<i></i>"], ["<i>Miro tabel</i> dunor sil."],
            ["Paket orvano bek.", "Quira zelt ampos rinu fodral."], ["<i>Lorem vanta kesu miro", "tabel dunor.</i>"]]
    document = segment_document(srt_file(cues).encode(), "film.srt", "en")
    assert document.sentences == ["Lorem vanta kesu.", "Miro tabel dunor sil.", "Paket orvano bek.",
                                  "Quira zelt ampos rinu fodral.", "Lorem vanta kesu miro tabel dunor."]
    got = [cue.content for cue in srt.parse(join_reversed(document).decode())]
    assert got[0] == "{\\an8}<i>" + reverse_upper("Lorem vanta kesu.") + "</i>"
    assert got[1] == "<i></i>" or got[1] == ""
    assert got[2] == reverse_upper("Miro tabel dunor sil.")
    assert got[3].split("\n") == [reverse_upper("Paket orvano bek."), reverse_upper("Quira zelt ampos rinu fodral.")]
    lines = got[4].split("\n")
    assert len(lines) == 2 and all(line.startswith("<i>") and line.endswith("</i>") for line in lines)
    assert " ".join(line[3:-4] for line in lines) == reverse_upper("Lorem vanta kesu miro tabel dunor.")
