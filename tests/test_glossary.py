"""Glossaries (text/glossary.py): terms found as whole words in any case, files read with their errors named by
line; through the translator, the command line and documents every applicable target term is in the output,
and sentences without one translate as they do without a glossary."""

import random
import re

import pytest
from conftest import WORDS, assert_clean_error, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer_mt.errors import TransformerMTError
from transformer_mt.text.glossary import Glossary, read_glossary, term_use

letters = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzäöüß"), min_size=2, max_size=8)


@settings(max_examples=80, deadline=None)
@given(st.lists(letters, min_size=1, max_size=4), st.lists(letters, max_size=8), st.integers(0, 8),
       st.sampled_from([str.lower, str.upper, str.title]), st.sampled_from(["", ",", ".", "(", "\"", "'"]))
def test_a_term_is_found_as_whole_words_in_any_case_and_not_inside_a_word(term_words, words, at, case, mark):
    term = " ".join(term_words)
    glossary = Glossary.from_entries([[term, "X"]])
    at = min(at, len(words))
    sentence = " ".join(words[:at] + [mark + case(term) + mark] + words[at:])
    assert glossary.matches(sentence) == [(term, "X")]
    glued = " ".join(words[:at] + ["q" + term + "q"] + words[at:])  # letters before and after: another word
    if term not in " ".join(words) and term.casefold() not in glued.casefold().replace("q" + term.casefold() + "q", ""):
        assert glossary.matches(glued) == []


def regex_finder(terms):
    """What the finder must do, for terms of letters and spaces: a regex of one alternative per term (longest
    first), each a whole word or phrase with any run of spaces inside, over the case-folded text."""
    ordered = sorted(terms, key=len, reverse=True)
    pattern = re.compile("|".join(r"(?<!\w)" + r"\s+".join(map(re.escape, t.casefold().split())) + r"(?!\w)"
                                  for t in ordered))
    by_key = {" ".join(t.casefold().split()): t for t in terms}
    return lambda text: list(dict.fromkeys(by_key[" ".join(m.group(0).split())] for m in pattern.finditer(text.casefold())))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["ab", "ba", "abba", "b", "straße", "sse"]), min_size=1, max_size=3)
                .map(" ".join), min_size=1, max_size=6, unique_by=lambda t: t.casefold()),
       st.lists(st.sampled_from(["ab", "ba", "abba", "b", "STRASSE", "ss", "e", ",", ".", "  ", "-"]), max_size=14))
def test_the_finder_finds_what_a_regex_of_every_term_finds(terms, pieces):
    """Any glossary of look-alike phrases (shared words, one inside another, "ß" against "SS") over any text made
    of their words and marks: the same terms, in the same order, as one regex alternative per term finds."""
    text = ""
    for piece in pieces:
        text += piece if piece in ",.-" else " " + piece
    glossary = Glossary.from_entries([[term, "X"] for term in terms])
    assert [source for source, _ in glossary.matches(text)] == regex_finder(terms)(text)


def test_look_alike_terms_cost_the_text_once_not_once_per_term():
    """10,000 terms of 32 words that all start alike (the most a glossary takes) against 20,000 characters of
    that start: found in well under a second where a regex of 10,000 alternatives took 100 s (a server's event
    loop held all that time); a longer term is refused."""
    import time

    glossary = Glossary.from_entries([[" ".join(["a"] * 31) + f" b{i}", f"t{i}"] for i in range(10_000)])
    started = time.perf_counter()
    assert glossary.matches(" ".join(["a"] * 10_000)) == []
    assert glossary.matches(" ".join(["a"] * 40) + " b77") == [(" ".join(["a"] * 31) + " b77", "t77")]
    assert time.perf_counter() - started < 5
    with pytest.raises(TransformerMTError, match="entry 1 has a source term of more than 32 words and marks"):
        Glossary.from_entries([[" ".join(["a"] * 33), "x"]])


@pytest.mark.parametrize("entry", [["\ud800", "x"], ["dog", "Hund\udfff"]])
def test_a_lone_surrogate_is_no_term(entry):
    with pytest.raises(TransformerMTError, match="entry 1 is not valid Unicode text"):
        Glossary.from_entries([entry])


def test_the_longest_term_wins_and_each_term_counts_once():
    glossary = Glossary.from_entries([["machine", "Maschine"], ["machine translation", "maschinelle Übersetzung"]])
    assert glossary.matches("Machine  translation beats a machine; machine translation!") == [
        ("machine translation", "maschinelle Übersetzung"), ("machine", "Maschine")]


def test_scripts_without_spaces_have_no_word_edges():
    glossary = Glossary.from_entries([["机器", "machine"]])
    assert glossary.matches("这是机器翻译") == [("机器", "machine")]


@pytest.mark.parametrize("text, expected", [
    ("dog\tHund\n# a comment\n\ncat\tKatze\n", [("dog", "Hund"), ("cat", "Katze")]),
    ("\ufeffdog,Hund\n\"New York, NY\",\"New York, NY\"\n", [("dog", "Hund"), ("New York, NY", "New York, NY")]),
    ("  old  farmer \t alter Bauer \r\n", [("old farmer", "alter Bauer")]),
])
def test_glossary_files(text, expected):
    assert read_glossary(text.encode("utf-8"), "g.tsv").entries == tuple(expected)


@pytest.mark.parametrize("text, message", [
    ("dog\tHund\ncat\n", "g.tsv, line 2: expected a source term and a target term separated by a tab"),
    ("dog\tHund\n\nDOG\tKöter\n", "g.tsv: the source term 'DOG' is given twice (line 1 and line 3)"),
    ("dog\t\n", "g.tsv: line 1 has an empty term"),
    ("a,b,c\n", "line 1: expected a source term and a target term separated by a comma"),
    ("dog\t" + "x" * 300 + "\n", "line 1 has a term over 200 characters"),
])
def test_glossary_file_errors_name_the_line(text, message):
    with pytest.raises(TransformerMTError, match=re.escape(message)):
        read_glossary(text.encode("utf-8"), "g.tsv")


@pytest.mark.parametrize("entries", [{"dog": "Hund"}, [["dog"]], [["dog", 3]], "dog", [["dog", "Hund"]] * 2])
def test_entries_from_an_api_are_checked(entries):
    with pytest.raises(TransformerMTError, match="glossary"):
        Glossary.from_entries(entries)


def test_term_use_counts_applicable_entries():
    glossary = Glossary.from_entries([["dog", "Hund"], ["cat", "Katze"]])
    result = term_use(glossary, ["the dog", "a cat and a dog", "a bird"], ["der Hund", "eine Katzenart", "ein Vogel"])
    assert (result["applicable"], result["used"]) == (3, 1) and result["term_use"] == pytest.approx(100 / 3)


# --- through the translator ----------------------------------------------------------------------------------

def sentences_and_glossary(seed: int, count: int = 12):
    rng = random.Random(seed)
    sources = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7))) for _ in range(count)]
    chosen = rng.sample(WORDS, 4)
    entries = [[source, rng.choice(WORDS)] for source in chosen]
    return sources, Glossary.from_entries(entries)


@pytest.mark.parametrize("seed, beam", [(0, 4), (1, 1), (2, 5)])
def test_every_applicable_term_is_in_the_translation_and_other_sentences_are_unchanged(small_run, seed, beam):
    from transformer_mt import Translator

    translator = Translator.from_run(small_run[2], device="cpu")
    sources, glossary = sentences_and_glossary(seed)
    plain = translator.translate(sources, beam_size=beam, batch_size=1)
    with_terms = translator.translate(sources, beam_size=beam, batch_size=1, glossary=glossary)
    assert term_use(glossary, sources, with_terms)["term_use"] == 100.0
    for source, before, after in zip(sources, plain, with_terms):
        if not glossary.matches(source):
            assert after == before
    # Batched with the constrained ones, the others keep their translations too (a different batch can only
    # round a near-tie apart; this model's outputs have none at these seeds).
    batched = translator.translate(sources, beam_size=beam, batch_size=16, glossary=glossary)
    assert term_use(glossary, sources, batched)["term_use"] == 100.0


@pytest.mark.parametrize("beam", [1, 4])
@pytest.mark.parametrize("ngram", [1, 2])
def test_a_term_that_repeats_a_word_survives_no_repeat_ngram_size(small_run, beam, ngram):
    """A term's own repeated words are exempt from the repetition ban: the translation holds the term (before,
    no hypothesis could meet it and the translation came back empty with exit 0), and an n-gram that repeats
    is made of the term's words (a term under way may repeat them; no other word is let through)."""
    from transformer_mt import Translator

    translator = Translator.from_run(small_run[2], device="cpu")
    term = f"{WORDS[3]} {WORDS[3]} {WORDS[5]} {WORDS[3]}"
    sources = [" ".join(WORDS[i:i + 4]) for i in range(0, 24, 4)]
    outputs = translator.translate(sources, beam_size=beam, no_repeat_ngram_size=ngram,
                                   constraints=[[term]] * len(sources))
    for output in outputs:
        assert term in output, output
        words = output.split()
        grams = [tuple(words[i:i + ngram]) for i in range(len(words) - ngram + 1)]
        repeated = {gram for gram in grams if grams.count(gram) > 1}
        assert all(set(gram) <= set(term.split()) for gram in repeated), (output, repeated)


def test_glossary_and_sampling_do_not_mix(small_run):
    from transformer_mt import Translator

    translator = Translator.from_run(small_run[2], device="cpu")
    with pytest.raises(TransformerMTError, match="beam search; leave out sampling"):
        translator.translate(["ba de"], temperature=1.0, glossary=[["ba", "de"]])


def test_documents_and_texts_keep_the_terms(small_run):
    from transformer_mt import Translator

    translator = Translator.from_run(small_run[2], device="cpu")
    sources, glossary = sentences_and_glossary(3, 6)
    text = ". ".join(sources) + ".\n\n" + sources[0] + ".\n"
    [translated] = translator.translate_text([text], beam_size=3, glossary=glossary)
    document = translator.translate_document(text.encode(), "notes.txt", beam_size=3, glossary=glossary).decode()
    for output in (translated, document):
        for source in sources:
            for _, target in glossary.matches(source):
                assert re.search(rf"\b{target}\b", output, re.IGNORECASE), (target, output)


def test_cli_translate_and_evaluate_with_a_glossary(small_run, tmp_path):
    tmp, data, run = small_run
    sources, glossary = sentences_and_glossary(4, 8)
    terms = tmp_path / "terms.tsv"
    terms.write_text("".join(f"{s}\t{t}\n" for s, t in glossary.entries), encoding="utf-8")
    src, ref = tmp_path / "src.txt", tmp_path / "ref.txt"
    src.write_text("".join(s + "\n" for s in sources))
    ref.write_text("".join(" ".join(reversed(s.split())) + "\n" for s in sources))
    result = run_cli("translate", "--model", run, "--glossary", terms, "--input", src)
    assert result.returncode == 0, result.stderr
    assert term_use(glossary, sources, result.stdout.splitlines())["term_use"] == 100.0
    result = run_cli("evaluate", "--model", run, "--src", src, "--ref", ref, "--glossary", terms)
    assert result.returncode == 0, result.stderr
    applicable = term_use(glossary, sources, sources)["applicable"]
    assert f"glossary term use = 100.0%  ({applicable} of the {applicable} glossary terms" in result.stdout
    bad = tmp_path / "bad.tsv"
    bad.write_text("ba\tde\nba\tdu\n")
    assert_clean_error(run_cli("translate", "--model", run, "--glossary", bad, "ba"), "bad.tsv",
                       "given twice (line 1 and line 2)")
    assert_clean_error(run_cli("evaluate", "--hyp", ref, "--ref", ref, "--glossary", terms), "--glossary counts")
    assert_clean_error(run_cli("translate", "--model", run, "--glossary", tmp_path / "missing.tsv", "ba"),
                       "--glossary", "missing.tsv")


@settings(max_examples=15, deadline=None)
@given(known=st.lists(st.sampled_from(WORDS), min_size=0, max_size=3),
       unknown=st.text(alphabet="XYZÆ狗🦄", min_size=1, max_size=4), at=st.integers(0, 3))
def test_a_target_term_the_model_cannot_write_is_refused_not_turned_into_marks(small_run, known, unknown, at):
    """A term whose characters the target vocabulary has no piece for would come out as "⁇" (fourth probe):
    the translation is refused naming the term; a term of the model's own words is kept as before."""
    from transformer_mt import Translator

    translator = Translator.from_run(small_run[2], device="cpu")
    words = list(known)
    words.insert(min(at, len(words)), unknown)
    term = " ".join(words)
    with pytest.raises(TransformerMTError, match=f"the target term {re.escape(repr(term))} .* cannot be written"):
        translator.translate([f"{WORDS[0]} {WORDS[1]}"], beam_size=2, glossary=[[WORDS[0], term]])
    if known:
        spelled = " ".join(known)
        [output] = translator.translate([f"{WORDS[0]} {WORDS[1]}"], beam_size=2, glossary=[[WORDS[0], spelled]])
        assert spelled in output and "⁇" not in output
