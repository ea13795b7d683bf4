"""Documents through a model: Translator.translate_document and `transformer-mt translate-file` (and translate
--paragraphs) give each document's sentences the translations they get one per line."""

import io
import textwrap
import time

import pytest
from conftest import WORDS, assert_clean_error, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer_mt import Translator
from transformer_mt.text.documents import DocumentError, segment_document

SENTENCES = [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(3 + i % 6)).capitalize() + "."
             for i in range(14)]


@pytest.fixture(scope="module")
def translator(small_run):
    return Translator.from_run(small_run[2], device="cpu")


@pytest.fixture(scope="module")
def one_per_line(translator):
    return dict(zip(SENTENCES, translator.translate(SENTENCES, beam_size=2)))


def joined(sentences, one_per_line) -> str:
    return " ".join(one_per_line[s] for s in sentences if one_per_line[s].strip())


@settings(max_examples=12, deadline=None)
@given(paragraphs=st.lists(st.lists(st.sampled_from(SENTENCES), min_size=1, max_size=5), min_size=1, max_size=3),
       width=st.integers(24, 80))
def test_a_wrapped_text_file_translates_like_its_sentences(translator, paragraphs, width):
    blocks = [textwrap.fill(" ".join(p), width, break_long_words=False) for p in paragraphs]
    data = "\n\n".join(blocks).encode()
    # The segmenter decides where the invented sentences end; each paragraph is then read whole, as one line.
    sentences = [segment_document(" ".join(p).encode(), "a.txt", "src").sentences for p in paragraphs]
    assert segment_document(data, "mail.txt", "src").sentences == [s for own in sentences for s in own]
    unique = list(dict.fromkeys(s for own in sentences for s in own))
    one_per_line = dict(zip(unique, translator.translate(unique, beam_size=2)))
    got = translator.translate_document(data, "mail.txt", beam_size=2).decode()
    assert [" ".join(block.split()) for block in got.split("\n\n")] == [joined(own, one_per_line) for own in sentences]


def test_subtitles_and_word_files_translate_like_their_sentences(translator, one_per_line):
    import srt

    cues = "".join(f"{k + 1}\n00:00:0{k},000 --> 00:00:0{k},800\n" + "\n".join(textwrap.wrap(s, 12)) + "\n\n"
                   for k, s in enumerate(SENTENCES[:6]))
    got = list(srt.parse(translator.translate_document(cues.encode(), "film.srt", beam_size=2).decode()))
    assert [" ".join(cue.content.split()) for cue in got] == [joined([s], one_per_line) for s in SENTENCES[:6]]
    docx = pytest.importorskip("docx")
    from docx.oxml.ns import qn

    document = docx.Document()
    paragraph = document.add_paragraph(SENTENCES[3].split(" ", 1)[0] + " ")
    paragraph.add_run(SENTENCES[3].split(" ", 2)[1]).bold = True
    paragraph.add_run(" " + SENTENCES[3].split(" ", 2)[2] + " " + SENTENCES[5])
    data = io.BytesIO()
    document.save(data)
    got = docx.Document(io.BytesIO(translator.translate_document(data.getvalue(), "a.docx", beam_size=2)))
    text = "".join(t.text for t in got.paragraphs[0]._p.iter(qn("w:t")))
    assert text == joined([SENTENCES[3], SENTENCES[5]], one_per_line)


def test_translate_file_writes_the_translated_document(small_run, tmp_path, translator):
    _, _, run = small_run
    source = tmp_path / "mail.txt"
    source.write_text(textwrap.fill(" ".join(SENTENCES[:6]), 30) + "\n")
    out = tmp_path / "mail.de.txt"
    result = run_cli("translate-file", source, "--model", run, "--output", out, "--beam-size", "2", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    want = translator.translate_document(source.read_bytes(), "mail.txt", beam_size=2)
    assert out.read_bytes() == want
    # translate --paragraphs: the same text from standard input
    piped = run_cli("translate", "--model", run, "--paragraphs", "--beam-size", "2", "--device", "cpu",
                    input_bytes=source.read_bytes())
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.encode() == want


@pytest.mark.parametrize("args, fragments", [
    (["missing.txt", "--output", "out.txt"], ["missing.txt"]),
    (["in.txt", "--output", "out.docx"], ["--output", ".txt"]),
    (["in.pdf", "--output", "out.pdf"], ["not supported"]),
])
def test_translate_file_refuses_bad_arguments_with_one_line(small_run, tmp_path, args, fragments):
    (tmp_path / "in.txt").write_text("Ba be.\n")
    (tmp_path / "in.pdf").write_bytes(b"%PDF-1.4")
    result = run_cli("translate-file", *[str(tmp_path / a) if a.endswith((".txt", ".docx", ".pdf")) else a
                                         for a in args], "--model", small_run[2])
    assert_clean_error(result, *fragments)


@pytest.mark.parametrize("name, content, fragments", [
    # F04: an OverflowError traceback, exit 1
    ("late.srt", "1\n00:00:01,000 --> 999999999999:00:00,000\nBa be.\n\n",
     ["late.srt' is not a valid SubRip", "line 2", "out of range"]),
    # F05: 40,000 attributes on one tag took 50 s (quadratic in html5lib)
    ("crowded.html", "<p " + " ".join(f"a{i}" for i in range(40_000)) + ">Ba be.</p>", ["more than 256 attributes"]),
])
def test_translate_file_refuses_a_bad_document_with_one_line(small_run, tmp_path, name, content, fragments):
    (tmp_path / name).write_text(content, encoding="utf-8")
    result = run_cli("translate-file", tmp_path / name, "--output", tmp_path / f"out-{name}", "--model", small_run[2])
    assert_clean_error(result, *fragments)
    assert not (tmp_path / f"out-{name}").exists()


def test_a_document_bomb_is_refused_in_well_under_a_second():
    """A 300 kB .docx whose document.xml unpacks to 90 MB of text, and one of 6 million empty elements:
    refused while being read, from the first megabytes, not after parsing them."""
    import zipfile

    for name, unit in (("text", b"<w:t>" + b"a" * 10_000 + b"</w:t>"), ("elements", b"<w:p/>" * 2000)):
        bomb = io.BytesIO()
        with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            with archive.open("word/document.xml", "w", force_zip64=True) as part:
                part.write(b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main">')
                written = 0
                while written < 90_000_000:
                    part.write(unit * 100)
                    written += len(unit) * 100
                part.write(b"</w:document>")
        assert len(bomb.getvalue()) < 400_000, name
        started = time.perf_counter()
        with pytest.raises(DocumentError, match="bomb.docx.*(characters|elements|bytes)"):
            segment_document(bomb.getvalue(), "bomb.docx", "en", max_chars=50_000)
        assert time.perf_counter() - started < 1.0, name
