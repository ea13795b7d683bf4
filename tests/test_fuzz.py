"""Property-based: random bytes as a config or as corpus lines never produce an unexpected exception."""

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transformer_mt.config import load_config
from transformer_mt.data.batches import read_parallel
from transformer_mt.errors import TransformerMTError

yaml_like = st.one_of(
    st.binary(max_size=300),
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20)),
        lambda children: st.one_of(st.lists(children, max_size=4),
                                   st.dictionaries(st.sampled_from(["data", "model", "training", "decoding",
                                                                    "tokenizer", "d_model", "lr", "root", "x"]),
                                                   children, max_size=4)),
        max_leaves=12,
    ).map(lambda value: __import__("yaml").safe_dump(value).encode("utf-8")),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(yaml_like)
def test_random_config_bytes_give_a_config_or_a_clear_error(content):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_bytes(content)
        try:
            load_config(path)
        except TransformerMTError as exc:
            assert str(exc)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8), st.lists(st.binary(max_size=40), max_size=8))
def test_random_corpus_bytes_read_or_give_a_clear_error(src_lines, tgt_lines):
    with tempfile.TemporaryDirectory() as tmp:
        src, tgt = Path(tmp) / "a.src", Path(tmp) / "a.tgt"
        src.write_bytes(b"\n".join(src_lines))
        tgt.write_bytes(b"\n".join(tgt_lines))
        try:
            s, t = read_parallel(src, tgt)
        except TransformerMTError as exc:
            assert "a.src" in str(exc) or "a.tgt" in str(exc)
        else:
            assert len(s) == len(t)
