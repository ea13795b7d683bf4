"""Importing Hugging Face MarianMT (OPUS-MT) models: the same function as transformers' MarianMTModel.

Tiny random MarianMTModels are built here from SentencePiece models trained in the test (nothing is
downloaded), saved as transformers saves them, imported, and compared with transformers itself:
logits of a padded batch, greedy and beam search against ``generate``, the CTranslate2 export, and
fine-tuning with exact resume.
"""

import json
import tempfile
from pathlib import Path

import pytest
import sentencepiece as spm
import torch
from conftest import assert_clean_error, run_cli, write_reverse_corpus

from transformer_mt import Translator, train
from transformer_mt.checkpoint import load_checkpoint
from transformer_mt.config import config_from_dict
from transformer_mt.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from transformer_mt.decoding.search import beam_search, greedy_search
from transformer_mt.errors import TransformerMTError
from transformer_mt.interop.hf_import import import_model

transformers = pytest.importorskip("transformers")
# MarianTokenizer normalises punctuation with sacremoses when installed; the import does not (see marian_import).
pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

LANGUAGES = [">>fra<<", ">>deu<<", ">>spa<<"]
MAX_NEW = 12  # output tokens, the same limit for both toolkits (max_length_a 0, max_length_b 12)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_reverse_corpus(tmp_path_factory.mktemp("data"), n_train=300, n_valid=10, n_test=10)


@pytest.fixture(scope="module")
def spm_models(tmp_path_factory, corpus):
    """source.spm / target.spm as OPUS-MT has them: SentencePiece's default ids (unk 0, bos 1, eos 2)."""
    folder = tmp_path_factory.mktemp("spm")
    for name, lang, size in (("source", "src", 30), ("target", "tgt", 28)):
        spm.SentencePieceTrainer.train(input=str(corpus / f"train.{lang}"), model_prefix=str(folder / name),
                                       vocab_size=size, model_type="unigram")
        (folder / f"{name}.model").rename(folder / f"{name}.spm")
    return folder


def marian_vocabulary(spm_folder, names, languages=(), extra=()):
    """vocab.json as Marian lays it out: </s> 0, <unk> 1, the pieces, <pad> last (``extra``: pieces of
    neither SentencePiece model, as a joint vocabulary built from other data has them)."""
    pieces = []
    for name in names:
        sp = spm.SentencePieceProcessor(model_file=str(spm_folder / f"{name}.spm"))
        pieces += [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    pieces += list(extra)
    ordered = ["</s>", "<unk>", *languages]
    ordered += [p for p in dict.fromkeys(pieces) if p not in ("<unk>", "<s>", "</s>")]
    return {piece: i for i, piece in enumerate(ordered + ["<pad>"])}


def build_marian(folder, spm_folder, separate=False, languages=(), weights="safetensors", seed=0, extra=()):
    """A tiny random MarianMTModel saved in ``folder`` the way transformers saves one (with its tokenizer)."""
    from transformers import MarianConfig, MarianMTModel

    folder.mkdir(parents=True)
    for name in ("source", "target"):
        (folder / f"{name}.spm").write_bytes((spm_folder / f"{name}.spm").read_bytes())
    if separate:
        src_vocab, tgt_vocab = marian_vocabulary(spm_folder, ["source"]), marian_vocabulary(spm_folder, ["target"])
        # One pad id for both sides (config.pad_token_id): pad the shorter vocabulary up to it.
        size = max(len(src_vocab), len(tgt_vocab))
        for vocab in (src_vocab, tgt_vocab):
            pad = vocab.pop("<pad>")
            for i in range(pad, size - 1):
                vocab[f"<extra{i}>"] = i
            vocab["<pad>"] = size - 1
        (folder / "target_vocab.json").write_text(json.dumps(tgt_vocab), encoding="utf-8")
    else:
        src_vocab = tgt_vocab = marian_vocabulary(spm_folder, ["source", "target"], languages, extra)
    (folder / "vocab.json").write_text(json.dumps(src_vocab), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"source_lang": "src", "target_lang": "tgt", "separate_vocabs": separate}), encoding="utf-8")
    pad = len(src_vocab) - 1
    config = MarianConfig(
        vocab_size=len(src_vocab), decoder_vocab_size=len(tgt_vocab), d_model=16, encoder_layers=2,
        decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
        decoder_ffn_dim=32, max_position_embeddings=64, pad_token_id=pad, eos_token_id=0,
        decoder_start_token_id=pad, forced_eos_token_id=None, activation_function="swish", scale_embedding=True,
        share_encoder_decoder_embeddings=not separate, init_std=0.3, dropout=0.1)
    torch.manual_seed(seed)
    model = MarianMTModel(config).eval()
    with torch.no_grad():
        # A random final logits bias, to see it carried over; the pad token's stays far down. transformers
        # normalises over every token before suppressing pad, we over the tokens that can be generated:
        # with pad improbable both normalise over the same tokens (real OPUS-MT models give it logit 0).
        model.final_logits_bias.normal_(0.0, 0.5)
        model.final_logits_bias[0, pad] = -100.0
    if weights == "safetensors":
        model.save_pretrained(folder)
    else:
        config.save_pretrained(folder)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return model


@pytest.fixture(scope="module")
def shared(tmp_path_factory, spm_models):
    tmp = tmp_path_factory.mktemp("shared")
    model = build_marian(tmp / "hf", spm_models)
    import_model(tmp / "hf", tmp / "run")
    return model, tmp / "hf", tmp / "run"


def marian_tokenizer(hf_dir):
    from transformers import MarianTokenizer

    return MarianTokenizer.from_pretrained(str(hf_dir))


SOURCES = ["ba ke mo pu", "gi", "do ga ku mi pe bo", "unseenword ba"]


def marian_batch(tokenizer, sentences):
    batch = tokenizer(sentences, return_tensors="pt", padding=True)
    return batch["input_ids"], batch["attention_mask"]


def our_batch(translator, sentences, target_language=None):
    from transformer_mt.decoding.translator import encode_sentences

    encoded = encode_sentences(sentences, translator.src_tokenizer, translator.config, target_language)
    src = torch.full((len(encoded), max(map(len, encoded))), PAD_ID, dtype=torch.long)
    for row, ids in enumerate(encoded):
        src[row, :len(ids)] = torch.tensor(ids)
    return src


def marian_to_ours(translator, hf_dir, side="tgt"):
    """Marian id -> our id, from the two vocabularies' piece names."""
    ids_file = "spm.tgt.ids.json" if side == "tgt" else "spm.src.ids.json"
    ours = json.loads((translator_run(translator) / ids_file).read_text())
    vocab_file = "target_vocab.json" if side == "tgt" and (hf_dir / "target_vocab.json").exists() else "vocab.json"
    theirs = json.loads((hf_dir / vocab_file).read_text())
    index = {piece: i for i, piece in enumerate(ours)}
    pad = theirs["<pad>"]
    mapping = torch.empty(len(theirs), dtype=torch.long)
    for piece, marian_id in theirs.items():
        mapping[marian_id] = BOS_ID if marian_id == pad else index[piece]  # Marian's pad starts the decoder: our bos
    return mapping


def translator_run(translator):
    return translator.src_tokenizer.model_path.parent


@pytest.mark.parametrize("variant", ["shared-safetensors", "shared-bin", "separate", "multilingual"])
def test_logits_of_a_padded_batch_equal_transformers(tmp_path, spm_models, variant):
    separate, languages = variant == "separate", LANGUAGES if variant == "multilingual" else ()
    model = build_marian(tmp_path / "hf", spm_models, separate=separate, languages=languages,
                         weights="bin" if variant == "shared-bin" else "safetensors", seed=1)
    import_model(tmp_path / "hf", tmp_path / "run")
    translator = Translator.from_run(tmp_path / "run", device="cpu")
    tokenizer = marian_tokenizer(tmp_path / "hf")
    sources = [f">>deu<< {s}" for s in SOURCES] if languages else SOURCES
    input_ids, attention_mask = marian_batch(tokenizer, sources)
    src = our_batch(translator, sources)
    # The same sources, id for id, once renumbered (the tokenizers agree, language tokens and </s> included).
    to_ours_src = marian_to_ours(translator, tmp_path / "hf", "src")
    real = attention_mask.bool()
    assert torch.equal(to_ours_src[input_ids][real], src[src != PAD_ID])
    targets = [[5, 9, 7, 4], [6], [4, 4, 8, 10, 11, 5, 6]]
    targets = (targets + [[7, 5]])[:len(sources)]
    start = tokenizer.pad_token_id
    longest = max(map(len, targets)) + 1
    decoder_ids = torch.full((len(targets), longest), tokenizer.pad_token_id)
    decoder_mask = torch.zeros_like(decoder_ids)
    for row, ids in enumerate(targets):
        decoder_ids[row, :len(ids) + 1] = torch.tensor([start] + ids)
        decoder_mask[row, :len(ids) + 1] = 1
    with torch.no_grad():
        expected = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_ids,
                         decoder_attention_mask=decoder_mask).logits
        to_ours = marian_to_ours(translator, tmp_path / "hf")
        ours = translator.model(src, to_ours[decoder_ids].masked_fill(decoder_mask == 0, PAD_ID))
    mask = decoder_mask.bool()
    torch.testing.assert_close(ours[..., to_ours][mask], expected[mask], atol=1e-4, rtol=1e-4)


def generate(model, tokenizer, sentences, **kwargs):
    input_ids, attention_mask = marian_batch(tokenizer, sentences)
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=False,
                             max_new_tokens=MAX_NEW, suppress_tokens=[tokenizer.pad_token_id], **kwargs)
    results = []
    for row in out.tolist():
        row = row[1:]  # the decoder start token
        if tokenizer.eos_token_id in row:
            row = row[:row.index(tokenizer.eos_token_id)]
        results.append([t for t in row if t != tokenizer.pad_token_id])
    return results


def test_greedy_and_beam_search_give_the_ids_of_generate(shared):
    model, hf_dir, run = shared
    translator = Translator.from_run(run, device="cpu")
    tokenizer = marian_tokenizer(hf_dir)
    to_ours = marian_to_ours(translator, hf_dir)
    src = our_batch(translator, SOURCES)
    greedy = greedy_search(translator.model, src, max_length_a=0.0, max_length_b=MAX_NEW)
    expected = generate(model, tokenizer, SOURCES, num_beams=1)
    assert greedy == [to_ours[torch.tensor(ids, dtype=torch.long)].tolist() for ids in expected]
    # Length penalty 0 in both (they normalise by different formulas otherwise); transformers' early_stopping
    # is this search's rule: a sentence ends with beam_size finished hypotheses.
    beams = beam_search(translator.model, src, beam_size=4, length_penalty=0.0, max_length_a=0.0,
                        max_length_b=MAX_NEW)
    expected = generate(model, tokenizer, SOURCES, num_beams=4, length_penalty=0.0, early_stopping=True)
    assert [hyps[0].tokens for hyps in beams] == [
        to_ours[torch.tensor(ids, dtype=torch.long)].tolist() for ids in expected]
    # And the text, through both tokenizers.
    texts = translator.translate(SOURCES, beam_size=1, max_length_a=0.0, max_length_b=MAX_NEW)
    assert texts == tokenizer.batch_decode(
        [[tokenizer.pad_token_id] + ids for ids in generate(model, tokenizer, SOURCES, num_beams=1)],
        skip_special_tokens=True)


def test_multilingual_target_language_picks_the_token(tmp_path, spm_models):
    build_marian(tmp_path / "hf", spm_models, languages=LANGUAGES)
    import_model(tmp_path / "hf", tmp_path / "run")
    translator = Translator.from_run(tmp_path / "run", device="cpu")
    assert translator.src_tokenizer.language_codes() == LANGUAGES
    tokens = translator.src_tokenizer.id_to_piece(our_batch(translator, ["ba ke"], "fra")[0].tolist())
    assert tokens[0] == ">>fra<<" and tokens[-1] == "</s>"
    with pytest.raises(TransformerMTError, match="not one of this model's 3: fra, deu, spa"):
        translator.translate(["ba ke"], target_language="ita")
    result = run_cli("translate", "--model", tmp_path / "run", "--target-language", "spa", "--beam-size", "1",
                     "ba ke mo")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == translator.translate(["ba ke mo"], beam_size=1, target_language="spa")[0]
    (tmp_path / "src.txt").write_text("ba ke mo\ngi\n")
    (tmp_path / "ref.txt").write_text("mo ke ba\ngi\n")
    scored = run_cli("evaluate", "--model", tmp_path / "run", "--src", tmp_path / "src.txt", "--ref",
                     tmp_path / "ref.txt", "--target-language", "fra", "--json")
    assert scored.returncode == 0, scored.stderr
    assert "bleu" in json.loads(scored.stdout)


def test_a_served_multilingual_model_takes_the_target_language_from_the_request(tmp_path, spm_models):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from test_serve import live

    from transformer_mt.serving.server import create_app

    build_marian(tmp_path / "hf", spm_models, languages=LANGUAGES)
    import_model(tmp_path / "hf", tmp_path / "run")
    translator = Translator.from_run(tmp_path / "run", device="cpu")
    with live(create_app(translator, max_wait_ms=1)) as http:
        # The source with its targets, then each target (clients look the target up among the codes).
        assert http.get("/languages").json() == [{"code": "src", "name": "src", "targets": ["fra", "deu", "spa"]}] + [
            {"code": code, "name": code, "targets": []} for code in ("fra", "deu", "spa")]
        for language in ("fra", "spa"):
            answer = http.post("/translate", json={"q": "ba ke mo", "source": "src", "target": language})
            assert answer.status_code == 200, answer.text
            assert answer.json()["translatedText"] == translator.translate(["ba ke mo"],
                                                                           target_language=language)[0]
        for target in ("auto", "ita"):
            refused = http.post("/translate", json={"q": "ba ke mo", "source": "src", "target": target})
            assert refused.status_code == 400 and "fra, deu, spa" in refused.json()["error"]


def test_the_ctranslate2_export_of_an_import_translates_the_same(tmp_path, shared):
    pytest.importorskip("ctranslate2")
    from transformer_mt.interop.ct2_translator import CTranslate2Translator
    from transformer_mt.interop.ctranslate2_export import export_ctranslate2

    _, _, run = shared
    export_ctranslate2(run, tmp_path / "ct2")
    ours = Translator.from_run(run, device="cpu")
    ct2 = CTranslate2Translator(tmp_path / "ct2")
    for beam in (1, 4):
        assert ct2.translate(SOURCES, beam_size=beam, max_length_a=0.0, max_length_b=MAX_NEW) == ours.translate(
            SOURCES, beam_size=beam, max_length_a=0.0, max_length_b=MAX_NEW)


def test_fine_tuning_an_import_trains_and_resumes_exactly(tmp_path, shared, corpus):
    _, _, run = shared

    def config(max_steps):
        saved = load_checkpoint(run / "checkpoint_best.pt")["config"]
        return config_from_dict({
            "data": {**saved["data"], "root": str(corpus), "max_len": 40},
            "tokenizer": saved["tokenizer"], "model": saved["model"],
            "training": {"max_steps": max_steps, "validate_every": 3, "batch_tokens": 300, "lr": 1e-3,
                         "warmup_steps": 2, "log_every": 1, "num_threads": 1, "init_from": str(run)},
            "decoding": {"beam_size": 1, "batch_size": 16}})

    before = load_checkpoint(run / "checkpoint_best.pt")["model"]
    train(config(6), tmp_path / "straight", show_progress=False)
    train(config(3), tmp_path / "resumed", show_progress=False)
    train(config(6), tmp_path / "resumed", show_progress=False)
    straight = load_checkpoint(tmp_path / "straight" / "checkpoint_last.pt")
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoint_last.pt")
    assert straight["step"] == resumed["step"] == 6
    for name, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    assert any(not torch.equal(tensor, before[name]) for name, tensor in straight["model"].items())  # it trained
    assert Translator.from_run(tmp_path / "straight", device="cpu").translate(["ba ke"], beam_size=1)


@pytest.mark.parametrize("damage, message", [
    ("model_type", "model_type 'bart' cannot be imported"),
    ("config_list", "holds a JSON list, not an object of settings"),
    ("no_weights", "has no model.safetensors or pytorch_model.bin"),
    ("crafted_bin", "may be crafted to run code"),
    ("bad_spm", "is not a SentencePiece model"),
    ("learnt_positions", "is not the sinusoid [sin | cos] table of Marian"),
    ("pre_norm", "'normalize_before: true' is not a Marian (OPUS-MT) model"),
    ("dropout", "'dropout' is 'x', expected a number"),
    ("logits_bias", "final_logits_bias has shape (1, 5)"),
    ("sparse", "is a sparse tensor"),
])
def test_a_bad_model_directory_is_one_clear_error(tmp_path, spm_models, damage, message):
    hf = tmp_path / "hf"
    build_marian(hf, spm_models, weights="bin")
    if damage == "model_type":
        config = json.loads((hf / "config.json").read_text())
        (hf / "config.json").write_text(json.dumps({**config, "model_type": "bart"}))
    elif damage == "config_list":
        (hf / "config.json").write_text(json.dumps([json.loads((hf / "config.json").read_text())]))
    elif damage == "no_weights":
        (hf / "pytorch_model.bin").unlink()
    elif damage == "crafted_bin":
        import os

        class Payload:
            def __reduce__(self):
                return (os.system, (f"touch {tmp_path / 'pwned'}",))

        torch.save({"weights": Payload()}, hf / "pytorch_model.bin")
    elif damage == "bad_spm":
        (hf / "source.spm").write_text("not a model")
    elif damage == "learnt_positions":
        weights = torch.load(hf / "pytorch_model.bin", weights_only=True)
        assert "model.encoder.embed_positions.weight" in weights  # what older transformers saved
        weights["model.encoder.embed_positions.weight"] += 0.1
        torch.save(weights, hf / "pytorch_model.bin")
    elif damage == "pre_norm":
        config = json.loads((hf / "config.json").read_text())
        (hf / "config.json").write_text(json.dumps({**config, "normalize_before": True}))
    elif damage == "dropout":
        config = json.loads((hf / "config.json").read_text())
        (hf / "config.json").write_text(json.dumps({**config, "dropout": "x"}))
    elif damage in ("logits_bias", "sparse"):
        weights = torch.load(hf / "pytorch_model.bin", weights_only=True)
        if damage == "logits_bias":
            weights["final_logits_bias"] = torch.zeros(1, 5)
        else:
            name = next(name for name in weights if name.endswith("fc1.weight"))
            weights[name] = weights[name].to_sparse()
        torch.save(weights, hf / "pytorch_model.bin")
    result = run_cli("import", hf, "--output-dir", tmp_path / "run")
    assert_clean_error(result, message)
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "run").exists()  # nothing half-written


def test_the_token_ids_are_renumbered_with_pad_unk_bos_eos_first(shared):
    _, hf_dir, run = shared
    pieces = json.loads((run / "spm.tgt.ids.json").read_text())
    assert pieces[:4] == ["<pad>", "<unk>", "<s>", "</s>"]
    assert (PAD_ID, BOS_ID, EOS_ID) == (0, 2, 3)
    marian = json.loads((hf_dir / "vocab.json").read_text())
    assert sorted(pieces[4:]) == sorted(p for p in marian if p not in ("<pad>", "<unk>", "</s>"))


def test_an_id_list_from_another_import_is_refused(tmp_path, shared):
    _, _, run = shared
    copy = tmp_path / "run"
    copy.mkdir()
    for path in run.iterdir():
        if path.is_file():
            (copy / path.name).write_bytes(path.read_bytes())
    pieces = json.loads((copy / "spm.tgt.ids.json").read_text())
    pieces[4], pieces[5] = pieces[5], pieces[4]  # same pieces, two ids swapped: another model's numbering
    (copy / "spm.tgt.ids.json").write_text(json.dumps(pieces))
    with pytest.raises(TransformerMTError, match="spm.tgt.ids.json is not the one checkpoint"):
        Translator.from_run(copy, device="cpu")


# Pieces a joint vocabulary holds and the target SentencePiece model does not (OPUS-MT's come from the
# source model: names, numbers): SentencePiece gives them back with their word marks.
FOREIGN = ["\u2581Z\u00fcrich", "\u25812024", "7", "x\u2581y", "\u2581\u2581", "\u2581ba\u2581ke", "\u00e9\u2581"]


@pytest.fixture(scope="module")
def foreign(tmp_path_factory, spm_models):
    """A shared-vocabulary model whose vocabulary has pieces outside target.spm, imported; and those pieces."""
    tmp = tmp_path_factory.mktemp("foreign")
    model = build_marian(tmp / "hf", spm_models, languages=LANGUAGES, extra=FOREIGN)
    import_model(tmp / "hf", tmp / "run")
    target = spm.SentencePieceProcessor(model_file=str(spm_models / "target.spm"))
    vocab = json.loads((tmp / "hf" / "vocab.json").read_text())
    outside = [p for p in vocab if target.piece_to_id(p) == target.unk_id() and p not in ("<unk>", "<pad>")]
    assert set(FOREIGN) <= set(outside)
    return model, tmp / "hf", tmp / "run", [vocab[p] for p in outside]


def test_any_pieces_of_the_vocabulary_decode_as_transformers_decodes_them(foreign):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    _, hf_dir, run, outside = foreign
    translator = Translator.from_run(run, device="cpu")
    tokenizer = marian_tokenizer(hf_dir)
    to_ours = marian_to_ours(translator, hf_dir).tolist()
    every = st.integers(0, len(to_ours) - 1)

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(st.lists(st.one_of(every, st.sampled_from(outside)), max_size=12))
    def check(marian_ids):
        expected = tokenizer.decode(marian_ids, skip_special_tokens=True)
        assert translator.tgt_tokenizer.decode([[to_ours[i] for i in marian_ids]]) == [expected]

    check()


def test_a_model_that_generates_pieces_outside_target_spm_writes_no_word_marks(foreign):
    model, hf_dir, _, outside = foreign
    with torch.no_grad():  # the decoder now prefers those pieces
        model.final_logits_bias[0, outside] += 4.0
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(f"{tmp}/hf")
        for path in hf_dir.iterdir():
            if path.suffix in (".json", ".spm") and path.name != "config.json":
                (Path(tmp) / "hf" / path.name).write_bytes(path.read_bytes())
        import_model(Path(tmp) / "hf", Path(tmp) / "run")
        translator = Translator.from_run(Path(tmp) / "run", device="cpu")
        tokenizer = marian_tokenizer(Path(tmp) / "hf")
        # A model of several targets is told which (translate() refuses to guess; OPUS-MT's inline token here).
        sources = [f">>deu<< {source}" for source in SOURCES]
        generated = generate(model, tokenizer, sources, num_beams=1)
        assert any(set(ids) & set(outside) for ids in generated)  # it does emit them
        texts = translator.translate(sources, beam_size=1, max_length_a=0.0, max_length_b=MAX_NEW)
        assert texts == translator.translate(SOURCES, beam_size=1, max_length_a=0.0, max_length_b=MAX_NEW,
                                             target_language="deu")
    assert texts == tokenizer.batch_decode([[tokenizer.pad_token_id] + ids for ids in generated],
                                           skip_special_tokens=True)
    assert not any("\u2581" in text for text in texts)


def test_weights_that_are_not_finite_are_refused_naming_the_file_and_tensor(tmp_path, spm_models):
    hf = tmp_path / "hf"
    build_marian(hf, spm_models, weights="bin")
    weights = torch.load(hf / "pytorch_model.bin", weights_only=True)
    for name in weights:
        if weights[name].is_floating_point():
            weights[name] = torch.full_like(weights[name], float("nan"))
    torch.save(weights, hf / "pytorch_model.bin")
    result = run_cli("import", hf, "--output-dir", tmp_path / "run")
    assert_clean_error(result, str(hf / "pytorch_model.bin"), "holds", "values that are NaN or infinite")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("damage, message", [
    ("nested", "nests its brackets too deeply"),
    ("deep", "key 'model.num_encoder_layers' must be <= 1000, got 1000000"),
    ("wide", "more than this machine's memory"),
    ("no_positions", "'max_position_embeddings' is 0, but a model needs at least 2 positions"),  # not data.max_len
])
def test_a_config_json_too_large_to_build_is_refused_before_anything_is_allocated(tmp_path, spm_models, damage,
                                                                                message):
    import time

    hf = tmp_path / "hf"
    build_marian(hf, spm_models)
    config = json.loads((hf / "config.json").read_text())
    if damage == "nested":
        (hf / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    elif damage == "deep":  # a million layers of width 16: once minutes and 10 GB before anything was said
        config.update(encoder_layers=1_000_000, decoder_layers=1_000_000, d_model=16)
    elif damage == "no_positions":
        config.update(max_position_embeddings=0)
    else:
        config.update(d_model=2**20, encoder_ffn_dim=2**20, decoder_ffn_dim=2**20)
    if damage != "nested":
        (hf / "config.json").write_text(json.dumps(config))
    start = time.monotonic()
    assert_clean_error(run_cli("import", hf, "--output-dir", tmp_path / "run"), message)
    assert time.monotonic() - start < 60
    assert not (tmp_path / "run").exists()
