"""Streamed, memory-mapped corpora: the same ids, batches and padded tensors as the in-memory code they
replaced (kept here as the reference), checked and rebuilt caches, and processes sharing one cache."""

import mmap
import multiprocessing
import random

import numpy as np
import pytest
import torch
from conftest import WORDS
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer_mt.config import TokenizerConfig
from transformer_mt.data import corpus as corpus_module
from transformer_mt.data.batches import collate, make_batches
from transformer_mt.data.corpus import (
    EncodedCorpus,
    add_unpunctuated_copies,
    count_lines,
    encode_parallel,
    iter_line_chunks,
    read_lines,
    read_parallel,
    split_lines,
)
from transformer_mt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer, build_tokenizers
from transformer_mt.errors import TransformerMTError

# The in-memory implementations that streaming and memory mapping replaced: the reference.

def reference_encode(src_path, tgt_path, src_tok, tgt_tok, max_len, drop_bad_pairs=True, unpunctuated_copies=0.0,
                     seed=0, log_counts=None):
    src_lines, tgt_lines = read_parallel(src_path, tgt_path)
    if unpunctuated_copies:
        src_lines, tgt_lines, _ = add_unpunctuated_copies(src_lines, tgt_lines, unpunctuated_copies, seed)
    src_seqs, tgt_seqs = src_tok.encode(src_lines), tgt_tok.encode(tgt_lines)
    if log_counts is not None:  # what the warning about dropped pairs says
        empty = sum(not s or not t for s, t in zip(src_seqs, tgt_seqs))
        too_long = sum(bool(s and t) and (len(s) > max_len or len(t) + 1 > max_len) for s, t in zip(src_seqs, tgt_seqs))
        log_counts.extend([empty, too_long, len(src_seqs)])
    if drop_bad_pairs:
        kept = [(s, t) for s, t in zip(src_seqs, tgt_seqs) if s and t and len(s) <= max_len and len(t) + 1 <= max_len]
        src_seqs, tgt_seqs = [s for s, _ in kept], [t for _, t in kept]

    def flatten(sequences):
        offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
        np.cumsum([len(s) for s in sequences], out=offsets[1:])
        return np.array([t for s in sequences for t in s], dtype=np.int32), offsets

    return EncodedCorpus(*flatten(src_seqs), *flatten(tgt_seqs))


def reference_make_batches(corpus, batch_tokens, seed, epoch, shuffle=True):
    rng = np.random.default_rng([seed, epoch])
    n = len(corpus)
    order = rng.permutation(n) if shuffle else np.arange(n)
    src_len = corpus.src_lengths[order]
    tgt_len = corpus.tgt_lengths[order] + 1
    order = order[np.lexsort((src_len, tgt_len))]
    src_len, tgt_len = corpus.src_lengths[order], corpus.tgt_lengths[order] + 1
    batches = []
    start = 0
    max_len = 0
    for i in range(n):
        longest = max(max_len, int(tgt_len[i]), int(src_len[i]))
        if i > start and longest * (i - start + 1) > batch_tokens:
            batches.append(order[start:i])
            start, longest = i, max(int(tgt_len[i]), int(src_len[i]))
        max_len = longest
    if start < n:
        batches.append(order[start:])
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def reference_pad(sequences, prefix=None, suffix=None):
    extra = (prefix is not None) + (suffix is not None)
    out = np.full((len(sequences), max(len(s) for s in sequences) + extra), PAD_ID, dtype=np.int64)
    for row, seq in enumerate(sequences):
        start = 0
        if prefix is not None:
            out[row, 0] = prefix
            start = 1
        out[row, start:start + len(seq)] = seq
        if suffix is not None:
            out[row, start + len(seq)] = suffix
    return torch.from_numpy(out)


def reference_collate(corpus, indices):
    src = [corpus.src(i) for i in indices]
    tgt = [corpus.tgt(i) for i in indices]
    return (reference_pad(src), reference_pad(tgt, prefix=BOS_ID), reference_pad(tgt, suffix=EOS_ID),
            int(sum(len(t) for t in tgt) + len(tgt)))


def assert_same_corpus(a, b):
    for name in ("src_ids", "src_offsets", "tgt_ids", "tgt_offsets"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        assert getattr(a, name).dtype == getattr(b, name).dtype, name


# A corpus with everything that chunking could get wrong

def awkward_corpus(folder, n=230, seed=0):
    """Pairs with empty sides, over-long sides, final punctuation, CRLF ends, inner \u2028 and a BOM; the last
    line has no newline."""
    rng = random.Random(seed)
    src, tgt = [], []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 9))]
        s, t = " ".join(words), " ".join(reversed(words))
        if i % 17 == 3:
            s = ""  # empty source: the pair goes
        if i % 23 == 5:
            t = " ".join([t] * 12)  # too long: the pair goes
        if i % 3 == 0:
            s += rng.choice([" .", ".", " ?!", "。"])  # candidates for unpunctuated copies
        if i % 11 == 7:
            s += "\r"  # CRLF line
        if i % 13 == 2:
            t = t.replace(" ", " \u2028 ", 1)  # not a line break
        src.append(s)
        tgt.append(t)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.src").write_bytes(("\ufeff" + "\n".join(src)).encode())
    (folder / "train.tgt").write_bytes(("\n".join(tgt) + "\n").encode())
    return folder / "train.src", folder / "train.tgt"


@pytest.fixture(scope="module")
def awkward(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("awkward")
    src_path, tgt_path = awkward_corpus(tmp / "data")
    (tmp / "run").mkdir()
    tok, _ = build_tokenizers(tmp / "run", TokenizerConfig(model_type="word", vocab_size=40), src_path, tgt_path)
    return src_path, tgt_path, tok


@pytest.mark.parametrize("options", [
    dict(),
    dict(unpunctuated_copies=0.5, seed=3),
    dict(unpunctuated_copies=1.0, seed=0),
    dict(drop_bad_pairs=False),
])
@pytest.mark.parametrize("chunk_lines", [1, 7, 100000])
def test_streamed_encoding_equals_the_in_memory_encoding(awkward, tmp_path, options, chunk_lines, caplog):
    src_path, tgt_path, tok = awkward
    counts = []
    expected = reference_encode(src_path, tgt_path, tok, tok, max_len=20, log_counts=counts, **options)
    empty, too_long, total = counts
    assert empty and too_long and total > 230 if options.get("unpunctuated_copies") else total == 230
    with caplog.at_level("INFO"):
        plain = encode_parallel(src_path, tgt_path, tok, tok, max_len=20, chunk_lines=chunk_lines, num_workers=2,
                                **options)
    assert_same_corpus(plain, expected)
    if options.get("drop_bad_pairs", True):
        assert (f"skipped {empty} pairs with an empty side and {too_long} pairs longer than data.max_len=20 tokens "
                f"(of {total} pairs)") in caplog.text
        assert len(expected) == total - empty - too_long
    else:
        assert "skipped" not in caplog.text
    cached = encode_parallel(src_path, tgt_path, tok, tok, max_len=20, cache_dir=tmp_path, chunk_lines=chunk_lines,
                             num_workers=1, **options)
    assert_same_corpus(cached, expected)
    assert_same_corpus(encode_parallel(src_path, tgt_path, tok, tok, max_len=20, cache_dir=tmp_path, **options),
                       expected)  # read back from the cache


def is_mapped(array) -> bool:
    """Whether ``array`` views a memory-mapped file (through views and memoryviews)."""
    base = array
    while isinstance(base, (np.ndarray, memoryview)):
        base = base.base if isinstance(base, np.ndarray) else base.obj
    return isinstance(base, mmap.mmap)


def test_cached_corpus_is_mapped_read_only(awkward, tmp_path):
    src_path, tgt_path, tok = awkward
    corpus = encode_parallel(src_path, tgt_path, tok, tok, max_len=20, cache_dir=tmp_path)
    for name in ("src_ids", "src_offsets", "tgt_ids", "tgt_offsets"):
        array = getattr(corpus, name)
        assert is_mapped(array), name  # pages are read from the file when used
        assert not array.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 1
    plain = encode_parallel(src_path, tgt_path, tok, tok, max_len=20)
    assert plain.src_ids.flags.writeable and not is_mapped(plain.src_ids)  # in memory


def test_cache_is_keyed_by_content_not_by_name(awkward, tmp_path):
    src_path, tgt_path, tok = awkward
    first = encode_parallel(src_path, tgt_path, tok, tok, max_len=20, cache_dir=tmp_path / "cache")
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.src").write_text("ba ke\n")
    (folder / "train.tgt").write_text("ke ba\n")
    other = encode_parallel(folder / "train.src", folder / "train.tgt", tok, tok, max_len=20,
                            cache_dir=tmp_path / "cache")
    assert len(other) == 1 and len(first) > 1
    assert len([path for path in (tmp_path / "cache").iterdir() if path.is_dir()]) == 2


def test_interrupted_build_leaves_no_entry_and_abandoned_builds_are_removed(awkward, tmp_path, monkeypatch):
    src_path, tgt_path, tok = awkward
    cache = tmp_path / "cache"
    real_encode = corpus_module._encode_into

    def crash(folder, *args):
        real_encode(folder, *args)  # everything written, but not yet renamed into place
        raise KeyboardInterrupt

    monkeypatch.setattr(corpus_module, "_encode_into", crash)
    with pytest.raises(KeyboardInterrupt):
        encode_parallel(src_path, tgt_path, tok, tok, max_len=20, cache_dir=cache)
    assert [path.name for path in cache.iterdir() if path.is_dir()] == []
    monkeypatch.setattr(corpus_module, "_encode_into", real_encode)
    # What a build killed with SIGKILL leaves: its temporary directory, its lock free again.
    abandoned = cache / ".train.src-train.tgt-0123456789abcdef.tmp-x1y2"
    abandoned.mkdir()
    (abandoned / "src_ids.npy").write_bytes(b"partial")
    corpus = encode_parallel(src_path, tgt_path, tok, tok, max_len=20, cache_dir=cache)
    assert len(corpus) > 0
    assert not abandoned.exists()
    assert not [path for path in cache.iterdir() if ".tmp-" in path.name]


def encode_in_another_process(src_path, tgt_path, model_path, cache, barrier, results):
    """Runs in a child process: encode once the other child is ready too; report whether this one built the
    entry and whether it waited for the other's lock."""
    import logging
    import time

    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logging.getLogger("transformer_mt").addHandler(handler)
    logging.getLogger("transformer_mt").setLevel(logging.INFO)
    real_encode = corpus_module._encode_into
    built = []

    def slow_encode(folder, *args):
        built.append(True)
        real_encode(folder, *args)
        time.sleep(2)  # the other process asks for the lock meanwhile

    corpus_module._encode_into = slow_encode
    tok = Tokenizer(model_path)
    barrier.wait(timeout=120)
    corpus = encode_parallel(src_path, tgt_path, tok, tok, max_len=20, cache_dir=cache)
    waited = any(message.startswith("waiting for another process") for message in messages)
    results.put((bool(built), waited, [np.array(getattr(corpus, name)).tolist()
                                       for name in ("src_ids", "src_offsets", "tgt_ids", "tgt_offsets")]))


def test_two_processes_preparing_one_cache_build_it_once(awkward, tmp_path):
    src_path, tgt_path, tok = awkward
    cache = tmp_path / "cache"
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    children = [context.Process(target=encode_in_another_process,
                                args=(src_path, tgt_path, tok.model_path, cache, barrier, results))
                for _ in range(2)]
    for child in children:
        child.start()
    outcomes = sorted(results.get(timeout=180) for _ in children)
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    # One built the entry; the other waited for its lock, then mapped what it had built.
    assert [(built, waited) for built, waited, _ in outcomes] == [(False, True), (True, False)]
    expected = reference_encode(src_path, tgt_path, tok, tok, max_len=20)
    for _, _, arrays in outcomes:
        assert arrays == [np.array(getattr(expected, name)).tolist()
                          for name in ("src_ids", "src_offsets", "tgt_ids", "tgt_offsets")]
    assert len([path for path in cache.iterdir() if path.is_dir()]) == 1
    assert not [path for path in cache.iterdir() if ".tmp-" in path.name]
    assert_same_corpus(encode_parallel(src_path, tgt_path, tok, tok, max_len=20, cache_dir=cache), expected)


# Errors name the file and line, also past the first chunk

def test_line_count_mismatch_names_both_files_and_counts(awkward, tmp_path):
    src_path, _, tok = awkward
    short = tmp_path / "short.tgt"
    short.write_text("ba\nke\n")
    with pytest.raises(TransformerMTError, match=r"different line counts: .*train.src has 230 lines, .*short.tgt "
                                                 r"has 2; line i of one must translate line i of the other"):
        encode_parallel(src_path, short, tok, tok, max_len=20, cache_dir=tmp_path / "cache", chunk_lines=7)
    assert not (tmp_path / "cache").exists()  # nothing was encoded


def test_invalid_utf8_is_reported_with_its_line_in_a_later_chunk(awkward, tmp_path):
    _, _, tok = awkward
    lines = [f"ba ke {i}".encode() for i in range(50)]
    lines[36] = b"ba \xff ke"
    (tmp_path / "a.src").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "a.tgt").write_text("ke ba\n" * 50)
    with pytest.raises(TransformerMTError, match=r"file .*a.src is not valid UTF-8: line 37 has an invalid byte "
                                                 r"sequence; convert the file"):
        encode_parallel(tmp_path / "a.src", tmp_path / "a.tgt", tok, tok, max_len=20, cache_dir=tmp_path / "cache",
                        chunk_lines=5)
    assert not [path for path in (tmp_path / "cache").iterdir() if path.is_dir()]  # no entry, no temporary


def test_missing_file_directory_and_symlink_loop_are_named(awkward, tmp_path):
    src_path, _, tok = awkward
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "folder").mkdir()
    for path, problem in ((tmp_path / "nowhere", "does not exist"), (tmp_path / "folder", "is a directory"),
                          (tmp_path / "loop", "is a symbolic link loop")):
        with pytest.raises(TransformerMTError, match=f"{path}.* {problem}"):
            encode_parallel(src_path, path, tok, tok, max_len=20, cache_dir=tmp_path / "cache")


def test_no_usable_pairs(awkward, tmp_path):
    _, _, tok = awkward
    (tmp_path / "a.src").write_text("ba\n\nke\n")
    (tmp_path / "a.tgt").write_text("\nba\n" + "ke " * 30 + "\n")
    with pytest.raises(TransformerMTError, match=r"no usable sentence pairs in .*a.src / .*a.tgt: all 3 are empty "
                                                 r"or longer than data.max_len=20"):
        encode_parallel(tmp_path / "a.src", tmp_path / "a.tgt", tok, tok, max_len=20, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.tmp-*")) and not [
        path for path in (tmp_path / "cache").iterdir() if path.is_dir()]


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(["a", "b", " ", "\n", "\r", "\ufeff", "\u2028", "é", "\x85"]),
                    max_size=40),
       chunk_lines=st.integers(1, 4))
def test_line_chunks_and_counts_agree_with_read_lines(tmp_path_factory, text, chunk_lines):
    path = tmp_path_factory.mktemp("lines") / "f.txt"
    path.write_bytes(text.encode())
    lines = read_lines(path)
    assert lines == split_lines(text)
    assert [line for chunk in iter_line_chunks(path, chunk_lines) for line in chunk] == lines
    assert count_lines(path) == len(lines)


# Batches: the vectorised make_batches cuts exactly where the sentence-by-sentence loop did

def corpus_of_lengths(src_lengths, tgt_lengths):
    def flat(lengths):
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return np.arange(offsets[-1], dtype=np.int32) % 50, offsets

    return EncodedCorpus(*flat(src_lengths), *flat(tgt_lengths))


@settings(max_examples=300, deadline=None)
@given(lengths=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)), max_size=300),
       batch_tokens=st.integers(1, 200), seed=st.integers(0, 2**32 - 1), epoch=st.integers(0, 5),
       shuffle=st.booleans())
def test_make_batches_equals_the_sentence_by_sentence_reference(lengths, batch_tokens, seed, epoch, shuffle):
    corpus = corpus_of_lengths([s for s, _ in lengths], [t for _, t in lengths])
    got = make_batches(corpus, batch_tokens, seed, epoch, shuffle=shuffle)
    expected = reference_make_batches(corpus, batch_tokens, seed, epoch, shuffle=shuffle)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype and a.tolist() == b.tolist()


@pytest.mark.parametrize("batch_tokens", [1, 30, 257, 4096])
def test_make_batches_equals_the_reference_on_a_large_skewed_corpus(batch_tokens):
    rng = np.random.default_rng(7)
    n = 20000
    tgt = np.minimum(rng.geometric(0.05, n), 300)
    src = np.clip(tgt + rng.integers(-10, 40, n), 0, 400)  # often wider than the target: not sorted
    corpus = corpus_of_lengths(src, tgt)
    for shuffle in (True, False):
        got = make_batches(corpus, batch_tokens, 1, 2, shuffle=shuffle)
        expected = reference_make_batches(corpus, batch_tokens, 1, 2, shuffle=shuffle)
        assert [b.tolist() for b in got] == [b.tolist() for b in expected]


def test_make_batches_of_very_long_sentences_keeps_int64_lengths():
    corpus = corpus_of_lengths([70000, 3, 5, 70000], [2, 70001, 4, 1])  # beyond uint16
    for shuffle in (True, False):
        assert ([b.tolist() for b in make_batches(corpus, 1000, 0, 0, shuffle=shuffle)]
                == [b.tolist() for b in reference_make_batches(corpus, 1000, 0, 0, shuffle=shuffle)])


def test_collate_equals_the_reference_on_mapped_and_in_memory_corpora(awkward, tmp_path):
    src_path, tgt_path, tok = awkward
    mapped = encode_parallel(src_path, tgt_path, tok, tok, max_len=20, cache_dir=tmp_path, drop_bad_pairs=False)
    in_memory = encode_parallel(src_path, tgt_path, tok, tok, max_len=20, drop_bad_pairs=False)
    assert (mapped.src_lengths == 0).any()  # empty sentences too
    for corpus in (mapped, in_memory):
        for indices in make_batches(corpus, 40, seed=0, epoch=0) + [np.array([5]), np.array([9, 3, 9])]:
            batch = collate(corpus, indices)
            src, tgt_in, tgt_out, num_tokens = reference_collate(corpus, indices)
            for got, expected in ((batch.src_tokens, src), (batch.tgt_input, tgt_in), (batch.tgt_output, tgt_out)):
                assert got.dtype == expected.dtype == torch.int64
                assert torch.equal(got, expected)
            assert batch.num_tokens == num_tokens


def test_full_disk_gives_a_clean_error_and_leaves_nothing_behind(awkward, tmp_path, monkeypatch):
    import errno
    import os

    src_path, tgt_path, tok = awkward
    cache = tmp_path / "cache"

    def full_disk(folder, *args):
        (folder / "src_ids.npy").write_bytes(b"part")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(corpus_module, "_encode_into", full_disk)
    with pytest.raises(TransformerMTError, match=f"the encoded corpus cannot be written to {cache}: No space left "
                                                 f"on device; free some space there or point 'data.cache_dir'"):
        encode_parallel(src_path, tgt_path, tok, tok, max_len=20, cache_dir=cache)
    assert [path.name for path in cache.iterdir() if not path.name.endswith(".lock")] == []
