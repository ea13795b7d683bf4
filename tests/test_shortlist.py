"""Lexical shortlists (decoding/shortlist.py, data/lexicon.py): the lexicon, a batch's rows, search over them."""

from __future__ import annotations

import copy
import io
import itertools

import numpy as np
import pytest
import torch
from conftest import assert_clean_error, run_cli, tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from transformer_mt import Translator
from transformer_mt.data.corpus import EncodedCorpus
from transformer_mt.data.lexicon import cooccurrence_lexicon
from transformer_mt.data.tokenizer import PAD_ID
from transformer_mt.decoding.ensemble import Ensemble
from transformer_mt.decoding.search import beam_search, greedy_search
from transformer_mt.decoding.shortlist import (
    ALWAYS,
    DEFAULT_FREQUENT,
    DEFAULT_TOP_K,
    BatchVocabulary,
    Shortlist,
    ShortlistedModel,
    build_shortlist,
)
from transformer_mt.errors import TransformerMTError
from transformer_mt.kernels import quantize_linear_layers

VOCAB = 23


def mixed_batch(seed: int, sentences: int = 5) -> torch.Tensor:
    """Sources of 1-9 real tokens (ids 4..), padded: a batch of mixed lengths."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 10, size=sentences)
    batch = torch.full((sentences, int(lengths.max())), PAD_ID, dtype=torch.long)
    for row, length in enumerate(lengths):
        batch[row, :length] = torch.from_numpy(rng.integers(4, VOCAB, size=length))
    return batch


def hypotheses(results):
    return [[(h.tokens, h.score, h.log_prob) for h in sentence] for sentence in results]


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), beam=st.integers(1, 4), pre_norm=st.booleans())
def test_the_full_vocabulary_as_shortlist_decodes_exactly_as_without(seed, beam, pre_norm):
    model = tiny_model(VOCAB, pre_norm=pre_norm, seed=seed % 7)
    src = mixed_batch(seed)
    full = BatchVocabulary(Shortlist.full(VOCAB, VOCAB).rows(src, PAD_ID))
    assert full.full_ids == list(range(VOCAB))
    restricted = full.model(model)
    # Ids and scores bit for bit: the output layer is the real one's rows, in order.
    assert greedy_search(restricted, src) == greedy_search(model, src)
    plain = beam_search(model, src, beam_size=beam, nbest=beam)
    shortlisted = beam_search(restricted, src, beam_size=beam, nbest=beam)
    assert hypotheses(shortlisted) == hypotheses(plain)


class MaskedOutput(nn.Module):
    """The model's output layer with every piece outside ``rows`` at -inf: what a shortlist means, in the full
    vocabulary."""

    def __init__(self, generator: nn.Module, rows: torch.Tensor, vocab: int):
        super().__init__()
        self.generator = generator
        self.outside = torch.ones(vocab, dtype=torch.bool)
        self.outside[rows] = False

    def forward(self, hidden):
        return self.generator(hidden).masked_fill(self.outside, float("-inf"))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), beam=st.integers(1, 4),
       chosen=st.sets(st.integers(4, VOCAB - 1), min_size=1, max_size=VOCAB - 4))
def test_search_over_a_shortlist_emits_only_its_ids_and_is_search_with_the_rest_ruled_out(seed, beam, chosen):
    model = tiny_model(VOCAB, seed=seed % 5)
    src = mixed_batch(seed)
    vocabulary = BatchVocabulary(torch.tensor(sorted(set(ALWAYS) | chosen)))
    allowed = set(vocabulary.full_ids)
    restricted = vocabulary.model(model)
    greedy = [vocabulary.full(tokens) for tokens in greedy_search(restricted, src)]
    beams = beam_search(restricted, src, beam_size=beam, nbest=beam)
    emitted = set(itertools.chain(*greedy, *(vocabulary.full(h.tokens) for s in beams for h in s)))
    assert emitted <= allowed
    # The softmax over the shortlist is the full one with the other pieces at -inf (exp(-inf) = 0).
    masked = copy.deepcopy(model)
    masked.generator = MaskedOutput(masked.generator, vocabulary.rows, VOCAB)
    assert greedy == greedy_search(masked, src)
    reference = beam_search(masked, src, beam_size=beam, nbest=beam)
    for ours, theirs in zip(beams, reference):
        assert [vocabulary.full(h.tokens) for h in ours] == [h.tokens for h in theirs]
        assert [h.score for h in ours] == pytest.approx([h.score for h in theirs], abs=1e-4)


def test_an_ensemble_and_an_int8_model_decode_over_a_shortlist():
    src = mixed_batch(3)
    full = BatchVocabulary(torch.arange(VOCAB))
    ensemble = Ensemble([tiny_model(VOCAB, seed=1), tiny_model(VOCAB, seed=2)])
    assert hypotheses(beam_search(full.model(ensemble), src, beam_size=3)) == hypotheses(
        beam_search(ensemble, src, beam_size=3))
    quantized = quantize_linear_layers(tiny_model(VOCAB, seed=4))
    assert greedy_search(full.model(quantized), src) == greedy_search(quantized, src)
    small = BatchVocabulary(torch.tensor([0, 1, 2, 3, 7, 9]))
    assert isinstance(small.model(quantized), ShortlistedModel)
    assert {t for tokens in greedy_search(small.model(quantized), src) for t in small.full(tokens)} <= {7, 9, 1}


@settings(max_examples=30, deadline=None)
@given(table=st.lists(st.lists(st.integers(-1, 40), min_size=3, max_size=3), min_size=12, max_size=12),
       top_k=st.integers(0, 3), frequent=st.integers(0, 41), sources=st.lists(st.integers(0, 11), max_size=20),
       extra=st.lists(st.integers(0, 40), max_size=4))
def test_a_batch_shortlist_is_the_union_of_its_parts(table, top_k, frequent, sources, extra):
    candidates = np.array(table, dtype=np.int32)
    by_frequency = np.random.default_rng(len(sources)).permutation(41).astype(np.int32)
    shortlist = Shortlist(candidates, by_frequency, top_k, frequent)
    src = torch.tensor([sources + [PAD_ID] * 3])
    rows = shortlist.rows(src, PAD_ID, extra).tolist()
    expected = set(ALWAYS) | set(by_frequency[:frequent].tolist()) | set(extra)
    expected |= {t for s in sources if s != PAD_ID for t in table[s][:top_k] if t >= 0}
    assert rows == sorted(expected)


def naive_dice(pairs):
    """Dice of sentence co-occurrence, spelled out."""
    source_count, target_count, together = {}, {}, {}
    for src, tgt in pairs:
        for s in set(src):
            source_count[s] = source_count.get(s, 0) + 1
        for t in set(tgt):
            target_count[t] = target_count.get(t, 0) + 1
        for s, t in itertools.product(set(src), set(tgt)):
            together[s, t] = together.get((s, t), 0) + 1
    return {(s, t): 2 * c / (source_count[s] + target_count[t]) for (s, t), c in together.items()}, target_count


def encoded(pairs) -> EncodedCorpus:
    def side(rows):
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(r) for r in rows], out=offsets[1:])
        return np.array([i for r in rows for i in r], dtype=np.int32), offsets

    return EncodedCorpus(*side([p[0] for p in pairs]), *side([p[1] for p in pairs]))


sentence = st.lists(st.integers(0, 9), min_size=1, max_size=6)


@settings(max_examples=40, deadline=None)
@given(pairs=st.lists(st.tuples(sentence, sentence), min_size=1, max_size=30), top_k=st.integers(1, 12),
       split=st.integers(0, 30))
def test_the_lexicon_holds_the_best_dice_pairs_of_the_corpora(pairs, top_k, split):
    dice, target_count = naive_dice(pairs)
    parts = [encoded(pairs[:split]), encoded(pairs[split:])]  # two corpora count as one
    lexicon = cooccurrence_lexicon(parts, 10, 10, top_k)
    assert lexicon.pairs == len(pairs)
    for s in range(10):
        ours = [t for t in lexicon.candidates[s].tolist() if t >= 0]
        theirs = sorted((t for (a, t) in dice if a == s), key=lambda t: (-dice[s, t], -target_count[t], t))
        assert ours == theirs[:top_k]
        assert lexicon.scores[s][:len(ours)].tolist() == pytest.approx([dice[s, t] for t in ours])
    assert sorted(lexicon.target_by_frequency.tolist()) == list(range(10))
    counts = [target_count.get(t, 0) for t in lexicon.target_by_frequency.tolist()]
    assert counts == sorted(counts, reverse=True)


def test_max_pairs_counts_pairs_evenly():
    pairs = [([i % 10], [i % 10]) for i in range(100)]
    lexicon = cooccurrence_lexicon([encoded(pairs[:55]), encoded(pairs[55:])], 10, 10, 2, max_pairs=20)
    assert lexicon.pairs == 20  # every 5th pair, across the corpora's border
    assert lexicon.candidates[0].tolist() == [0, -1]


@pytest.fixture(scope="module")
def shortlisted_run(small_run):
    tmp, data, run = small_run
    summary = build_shortlist(run)
    assert summary["top_k"] == DEFAULT_TOP_K and summary["frequent"] == DEFAULT_FREQUENT
    return tmp, data, run


SENTENCES = ["ba de gi", "ko mu pa ba de gi ko", "", "pe", "da ke ki ko ku ma me mi"]


def test_a_translator_with_the_full_vocabulary_as_shortlist_translates_as_without(small_run):
    _, _, run = small_run
    plain = Translator.from_run(run, device="cpu")
    full = Translator.from_run(run, device="cpu")
    full.shortlist = Shortlist.full(len(full.src_tokenizer), len(full.tgt_tokenizer))
    for options in ({"beam_size": 1}, {"beam_size": 1, "return_scores": True},
                    {"beam_size": 3, "nbest": 2, "return_scores": True}, {"beam_size": 2, "batch_size": 2}):
        assert full.translate(SENTENCES, **options) == plain.translate(SENTENCES, **options)


def test_a_runs_shortlist_is_loaded_checked_and_keeps_glossary_terms_and_prefixes(shortlisted_run):
    _, _, run = shortlisted_run
    translator = Translator.from_run(run, device="cpu", shortlist=True, shortlist_top_k=0, shortlist_frequent=0)
    assert translator.shortlist.always.tolist() == ALWAYS  # nothing but the special tokens...
    assert translator.translate(["ba de"], beam_size=2) == [""]  # ... so only the end (or unk) can come out
    # A constraint's and a prefix's pieces join the batch's shortlist: the translation holds them.
    assert "ku ku" in translator.translate(["ba de"], beam_size=2, constraints=[["ku ku"]])[0]
    assert translator.translate(["ba de"], beam_size=2, prefix="mi mo")[0].startswith("mi mo")
    # Another tokenizer's shortlist (any change of the run's tokenizer) is refused.
    other = Translator.from_run(run, device="cpu")
    other.src_tokenizer = copy.copy(other.src_tokenizer)
    other.src_tokenizer.model_path = run / "config.yaml"
    with pytest.raises(TransformerMTError, match="another tokenizer"):
        Shortlist.load(run / "shortlist.npz", other.src_tokenizer, other.tgt_tokenizer)


def test_a_damaged_or_missing_shortlist_is_one_error(tmp_path, shortlisted_run):
    _, _, run = shortlisted_run
    translator = Translator.from_run(run, device="cpu")
    with pytest.raises(TransformerMTError, match="does not exist; build it with: transformer-mt shortlist"):
        Shortlist.load(tmp_path / "shortlist.npz", translator.src_tokenizer, translator.tgt_tokenizer)
    (tmp_path / "shortlist.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(TransformerMTError, match="damaged or not a shortlist"):
        Shortlist.load(tmp_path / "shortlist.npz", translator.src_tokenizer, translator.tgt_tokenizer)


LOAD_AND_MEASURE = """
import resource, sys
from transformer_mt import Translator
from transformer_mt.decoding.shortlist import Shortlist
from transformer_mt.errors import TransformerMTError
translator = Translator.from_run(sys.argv[1], device="cpu")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    Shortlist.load(sys.argv[2], translator.src_tokenizer, translator.tgt_tokenizer)
    print("loaded", end=" ")
except TransformerMTError as error:
    print("refused:", error, end=" ")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


@pytest.mark.parametrize("member, array, outcome", [
    ("scores", b"not an array at all", "loaded"),  # a member decoding never reads is never unpacked
    ("scores", np.zeros((1 << 27,), dtype=np.int64), "loaded"),  # 1 GB of zeros: ~1 MB deflated
    ("candidates", np.zeros((1 << 30,), dtype=np.int8), "refused: shortlist"),  # 1 GB of zeros
    ("target_by_frequency", np.array([object()], dtype=object), "refused: shortlist"),
    ("info", np.array("[" * 100_000 + "]" * 100_000), "refused: shortlist"),  # nested past the recursion limit
])
def test_a_crafted_shortlist_is_refused_before_its_arrays_are_unpacked(tmp_path, shortlisted_run, member, array,
                                                                       outcome):
    """A member's shape and type are read from its header and checked before its data is unpacked (a 3 MB file
    held a member of 3 GB of zeros, and loading unpacked every member); only the three members decoding needs
    are read. Measured in a fresh process: loading takes no more memory than the genuine file's."""
    import subprocess
    import sys
    import zipfile

    _, _, run = shortlisted_run
    with zipfile.ZipFile(run / "shortlist.npz") as genuine:
        members = {info.filename: genuine.read(info) for info in genuine.infolist()}
    if isinstance(array, bytes):
        members[f"{member}.npy"] = array
    else:
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, array, allow_pickle=True)
        members[f"{member}.npy"] = buffer.getvalue()
    crafted = tmp_path / "shortlist.npz"
    with zipfile.ZipFile(crafted, "w", zipfile.ZIP_DEFLATED) as out:
        for name, data in members.items():
            out.writestr(name, data)
    assert crafted.stat().st_size < 10_000_000
    answers = {}
    for name, path in (("genuine", run / "shortlist.npz"), ("crafted", crafted)):
        done = subprocess.run([sys.executable, "-c", LOAD_AND_MEASURE, str(run), str(path)], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        answers[name] = done.stdout
    assert answers["crafted"].startswith(outcome), answers
    grown = int(answers["crafted"].split()[-1]) - int(answers["genuine"].split()[-1])
    assert grown < 100_000, answers  # kB: nothing was unpacked beyond what decoding needs


def test_shortlist_top_k_is_bounded(small_run):
    assert_clean_error(run_cli("shortlist", "--model", small_run[2], "--top-k", "300000"), "--top-k 300000",
                       "at most 1000")


def test_the_command_line_builds_and_decodes_with_a_shortlist(tmp_path, small_run):
    _, _, run = small_run
    built = run_cli("shortlist", "--model", run, "--top-k", "5", "--frequent", "3")
    assert built.returncode == 0, built.stderr
    assert "decoding takes the best 5 and the 3 most frequent" in built.stderr
    plain = run_cli("translate", "--model", run, "--device", "cpu", "--beam-size", "2", *SENTENCES[:2])
    shortlisted = run_cli("translate", "--model", run, "--device", "cpu", "--beam-size", "2", "--shortlist",
                          "--shortlist-frequent", "1000", *SENTENCES[:2])
    assert shortlisted.returncode == 0, shortlisted.stderr
    assert shortlisted.stdout == plain.stdout  # every piece is among the 1000 most frequent
    assert_clean_error(run_cli("translate", "--model", run, "--shortlist-top-k", "3", "x"),
                       "--shortlist-top-k goes with --shortlist")
    assert_clean_error(run_cli("translate", "--model", run, "--engine", "ctranslate2", "--shortlist", "x"),
                       "--shortlist", "CTranslate2 engine decodes without it")
    assert_clean_error(run_cli("translate", "--model", tmp_path, "--shortlist", "x"))
    help_text = run_cli("shortlist", "--help").stdout
    assert f"default: {DEFAULT_TOP_K};" in help_text and f"(default: {DEFAULT_FREQUENT})" in help_text


def test_serve_decodes_with_the_runs_shortlist(tmp_path, shortlisted_run):
    import json
    import shutil
    import urllib.request

    from conftest import start_server, stop_server

    _, _, run = shortlisted_run
    bare = tmp_path / "bare"
    shutil.copytree(run, bare, ignore=shutil.ignore_patterns("shortlist.npz", ".lock"))
    assert_clean_error(run_cli("serve", "--model", bare, "--shortlist", "--port", "0"),
                       "shortlist.npz does not exist; build it with: transformer-mt shortlist")
    shutil.copytree(bare, tmp_path / "models" / "bare")
    assert_clean_error(run_cli("serve", "--models-dir", tmp_path / "models", "--shortlist", "--port", "0"),
                       "has no shortlist.npz; build it with: transformer-mt shortlist --model")
    expected = Translator.from_run(run, device="cpu", shortlist=True).translate(["ba de gi"])
    server, base = start_server(run, "--shortlist")
    try:
        info = json.load(urllib.request.urlopen(base + "/v1/info"))
        request = urllib.request.Request(base + "/translate", data=json.dumps({"q": "ba de gi", "source": "src",
                                                                                "target": "tgt"}).encode(),
                                         headers={"Content-Type": "application/json"})
        answer = json.load(urllib.request.urlopen(request))
    finally:
        stop_server(server)
    assert info["shortlist"] is True
    assert answer["translatedText"] == expected[0]


def test_train_builds_the_shortlist_when_asked(tmp_path, reverse_corpus):
    import yaml
    from conftest import tiny_config

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(reverse_corpus, max_steps=1, validate_every=1).to_dict()))
    result = run_cli("train", "--config", config, "--output-dir", tmp_path / "run", "--shortlist", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stderr and (tmp_path / "run" / "shortlist.npz").is_file()
