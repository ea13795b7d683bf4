"""Training-data options: copies of pairs whose source lost its final punctuation."""

from transformer_mt.config import TokenizerConfig
from transformer_mt.data.batches import add_unpunctuated_copies, encode_parallel, without_final_punctuation
from transformer_mt.data.tokenizer import build_tokenizers


def test_without_final_punctuation_strips_any_script_and_keeps_inner_punctuation():
    assert without_final_punctuation("我爱学习。") == "我爱学习"
    assert without_final_punctuation("Wie geht's?! ") == "Wie geht's"
    assert without_final_punctuation("Hello, world") == "Hello, world"
    assert without_final_punctuation("...") == ""


def test_copies_keep_their_target_and_only_punctuated_sources_are_copied():
    src = ["我爱学习。", "你好", "他走了！", "。", "Ja."]
    tgt = ["I love studying.", "Hello", "He left!", "Period", "Yes."]
    new_src, new_tgt, added = add_unpunctuated_copies(src, tgt, share=1.0, seed=0)
    assert new_src[:5] == src and new_tgt[:5] == tgt  # the original pairs, unchanged and in order
    # "你好" has nothing to remove; "。" would become empty: neither is copied
    assert list(zip(new_src[5:], new_tgt[5:])) == [("我爱学习", "I love studying."), ("他走了", "He left!"),
                                                   ("Ja", "Yes.")]
    assert added == 3
    assert add_unpunctuated_copies(src, tgt, share=0.0, seed=0) == (src, tgt, 0)


def test_share_of_copies_is_about_right_and_fixed_by_the_seed():
    src = [f"sentence {i}." for i in range(2000)]
    tgt = [f"Satz {i}." for i in range(2000)]
    first = add_unpunctuated_copies(src, tgt, share=0.25, seed=3)
    assert 400 < first[2] < 600
    assert add_unpunctuated_copies(src, tgt, share=0.25, seed=3) == first
    assert add_unpunctuated_copies(src, tgt, share=0.25, seed=4)[0] != first[0]


def test_encoded_training_corpus_holds_the_copies(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    words = ["a", "b", "c", "d"]
    src = [" ".join(words[: 1 + i % 4]) + (" ." if i % 2 else "") for i in range(40)]
    tgt = [" ".join(reversed(words[: 1 + i % 4])) for i in range(40)]
    (data / "train.src").write_text("\n".join(src) + "\n")
    (data / "train.tgt").write_text("\n".join(tgt) + "\n")
    tok, _ = build_tokenizers(tmp_path, TokenizerConfig(model_type="word", vocab_size=9), data / "train.src",
                              data / "train.tgt")
    plain = encode_parallel(data / "train.src", data / "train.tgt", tok, tok, max_len=16)
    augmented = encode_parallel(data / "train.src", data / "train.tgt", tok, tok, max_len=16,
                                cache_dir=tmp_path / "cache", unpunctuated_copies=1.0)
    assert len(plain) == 40 and len(augmented) == 60  # the 20 sources ending in " ." are copied
    copies = [tok.decode([augmented.src(row).tolist()])[0] for row in range(40, 60)]
    assert copies == [s[:-2] for s in src if s.endswith(" .")]
    # the cache is keyed by the option: the plain corpus is not served from it
    assert len(encode_parallel(data / "train.src", data / "train.tgt", tok, tok, max_len=16,
                               cache_dir=tmp_path / "cache")) == 40
