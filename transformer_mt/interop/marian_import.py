"""Import a Hugging Face MarianMT model (the ~1,000 OPUS-MT models) as a run directory.

    transformer-mt import opus-mt-de-en --output-dir runs/opus-mt-de-en

Read: ``config.json``, the weights (see hf_files.read_weights), ``source.spm`` and ``target.spm``,
``vocab.json`` (and ``target_vocab.json`` when the model has a vocabulary per language). Written: a
normal run directory (run.json, config.yaml, spm.src/tgt.model, spm.src/tgt.ids.json and
checkpoint_best.pt holding the weights) that translates, evaluates, serves, exports and fine-tunes
(``training.init_from``) like a trained one.

How MarianMTModel (transformers' modeling_marian.py) maps onto model.py, in the style of
CTranslate2's converters: one small ``load_*`` function per kind of layer.

- Post-norm layers like the paper's, with SiLU ("swish") in the feed-forward network, embeddings
  scaled by sqrt(d_model) (``scale_embedding``), the position table [sin | cos]
  (``model.position_table: concatenated``), a bias on the output logits (``final_logits_bias`` ->
  ``model.output_bias``), and sources ending in ``</s>`` (``model.source_eos``).
- q, k and v are separate projections there; self-attention's become our fused q/k/v projection and
  cross-attention's k and v our fused k/v one (stacked on the output dimension, as model.py splits them).
- Ids. Marian numbers one vocabulary (vocab.json) for the pieces of two SentencePiece models, with
  ``</s>`` 0, ``<unk>`` 1 and ``<pad>`` last, and starts the decoder from ``<pad>``; no ``<s>``.
  Here pad/unk/bos/eos are 0/1/2/3 and the decoder starts from bos, so the vocabulary is renumbered
  once, here: Marian's decoder start token (its pad) becomes our bos (2), unk 1, eos 3, a new
  all-zero row becomes our padding (0), and every other piece keeps its order from 4 on. Embedding
  rows and logit biases are reordered the same way, and spm.*.ids.json list the pieces by our ids
  (data/tokenizer.py's MappedTokenizer). Both tokens our search never generates (pad, bos) are
  Marian's pad and the new row, so what can be generated is exactly what Marian can generate.
- Not carried over: the tokenizer's Moses punctuation normalisation (transformers applies it only
  when sacremoses is installed) and generation settings (decoding comes from config.yaml).
"""

from __future__ import annotations

import json

import torch
from torch import nn

from .. import checkpoint as ckpt
from ..config import DataConfig, ModelConfig, TokenizerConfig, config_from_dict, save_config
from ..data.tokenizer_files import BOS_ID, EOS_ID, MAX_MODEL_BYTES, PAD_ID, UNK_ID, check_model_file, ids_paths
from ..errors import TransformerMTError
from ..files import file_sha256
from ..model import PositionalEncoding, Transformer, build_model
from ..safe_files import read_user_file, write_run_file
from ..training.rundir import record_in_marker, write_marker
from .hf_files import read_json, read_weights, write_run_dir

ACTIVATIONS = {"swish": "silu", "silu": "silu", "relu": "relu", "gelu": "gelu"}
START_PIECE = "<s>"  # the name our vocabulary gives Marian's decoder start token (its <pad>)


def _config_value(config: dict, key: str, kind, where: str):
    value = config.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        expected = kind.__name__ if isinstance(kind, type) else "a number"
        raise TransformerMTError(f"{where}: '{key}' is {value!r:.60}, expected {expected}; is this a MarianMT "
                                 f"config.json?")
    return value


def marian_model_config(config: dict, shared: bool, tied: bool, where: str) -> ModelConfig:
    """Our model section for a MarianConfig; refuses what model.py cannot compute the same way."""
    def get(key, kind=int):
        return _config_value(config, key, kind, where)

    def rate(key, default: float) -> float:  # a dropout rate: a number, absent or not
        return float(_config_value({key: config.get(key, default)}, key, (int, float), where))

    for ours, theirs in (("encoder_attention_heads", "decoder_attention_heads"),
                         ("encoder_ffn_dim", "decoder_ffn_dim")):
        if get(ours) != get(theirs):
            raise TransformerMTError(f"{where}: {ours} {get(ours)} and {theirs} {get(theirs)} differ; transformer-mt "
                                     f"models have one value for encoder and decoder")
    activation = ACTIVATIONS.get(config.get("activation_function"))
    if activation is None:
        raise TransformerMTError(f"{where}: activation_function {config.get('activation_function')!r} is not one "
                                 f"of {', '.join(ACTIVATIONS)}")
    if get("max_position_embeddings") < 2:  # a piece and the source's </s>: data.max_len is one less
        raise TransformerMTError(f"{where}: 'max_position_embeddings' is {get('max_position_embeddings')}, but a model "
                                 f"needs at least 2 positions (a piece and the source's </s>); the config.json is "
                                 f"damaged: download it again")
    for key in ("normalize_before", "add_final_layer_norm", "normalize_embedding"):
        if config.get(key, False):  # MBart-style layer norms that Marian models do not have
            raise TransformerMTError(f"{where}: '{key}: true' is not a Marian (OPUS-MT) model; it cannot be imported")
    return ModelConfig(
        d_model=get("d_model"), num_heads=get("encoder_attention_heads"), num_encoder_layers=get("encoder_layers"),
        num_decoder_layers=get("decoder_layers"), ffn_dim=get("encoder_ffn_dim"),
        dropout=rate("dropout", 0.1), attention_dropout=rate("attention_dropout", 0.0),
        activation_dropout=rate("activation_dropout", 0.0), activation=activation, pre_norm=False,
        share_embeddings=shared, tie_output=tied, max_positions=get("max_position_embeddings"),
        position_table="concatenated", scale_embeddings=bool(config.get("scale_embedding", False)),
        output_bias=True, source_eos=True)


def read_vocabulary(hf_dir, name: str) -> list[str]:
    """vocab.json ({piece: id}, ids 0 .. n-1) as the list of pieces in id order."""
    vocab = read_json(hf_dir, name)
    if not isinstance(vocab, dict) or not all(isinstance(k, str) and isinstance(v, int) for k, v in vocab.items()):
        raise TransformerMTError(f"{hf_dir / name} is not a mapping of pieces to ids")
    pieces = [None] * len(vocab)
    for piece, index in vocab.items():
        if not 0 <= index < len(pieces) or pieces[index] is not None:
            raise TransformerMTError(f"{hf_dir / name}: the ids are not 0 .. {len(pieces) - 1}, each once")
        pieces[index] = piece
    return pieces


def id_order(pieces: list[str], config: dict, where: str) -> tuple[list[int | None], list[str]]:
    """For each of our ids, Marian's id (None: the new padding row), and our vocabulary's pieces (see above)."""
    if "<unk>" not in pieces:
        raise TransformerMTError(f"{where}: the vocabulary has no <unk>")
    pad, eos = config.get("pad_token_id"), config.get("eos_token_id")
    start = config.get("decoder_start_token_id", pad)
    for key, index in (("pad_token_id", pad), ("eos_token_id", eos), ("decoder_start_token_id", start)):
        if not isinstance(index, int) or not 0 <= index < len(pieces):
            raise TransformerMTError(f"{where}: {key} {index!r} is not an id of the {len(pieces)}-piece vocabulary")
    unk = pieces.index("<unk>")
    if len({start, unk, eos}) < 3 or pad in (unk, eos):
        raise TransformerMTError(f"{where}: the special ids pad {pad}, unk {unk}, eos {eos}, decoder start {start} "
                                 f"overlap")
    order = [None if pad == start else pad, unk, start, eos]
    order += [i for i in range(len(pieces)) if i not in order]
    names = [pieces[i] if i is not None else "<pad>" for i in order]
    if pad == start:
        names[BOS_ID] = START_PIECE  # the piece "<pad>" names our new padding row
    if len(set(names)) != len(names):
        raise TransformerMTError(f"{where}: the vocabulary already holds a piece named {START_PIECE!r} or "
                                 f"'<pad>' besides the special ones; it cannot be renumbered")
    assert (order[UNK_ID], order[BOS_ID], order[EOS_ID]) == (unk, start, eos) and PAD_ID == 0
    return order, names


def reorder_rows(matrix: torch.Tensor, order: list[int | None]) -> torch.Tensor:
    """Rows of ``matrix`` in our id order; the new padding row is zeros."""
    index = torch.tensor([0 if i is None else i for i in order])
    rows = matrix.index_select(0, index).clone()
    if order[0] is None:
        rows[0].zero_()
    return rows


# --- one loader per kind of layer ------------------------------------------------------------------------

def take(weights: dict, name: str, shape: tuple) -> torch.Tensor:
    tensor = weights.get(name)
    if tensor is None:
        raise TransformerMTError(f"the weights have no {name}; is this a MarianMT model of transformers?")
    if tuple(tensor.shape) != tuple(shape):
        raise TransformerMTError(f"weight {name} has shape {tuple(tensor.shape)}, config.json implies {tuple(shape)}")
    return tensor.to(torch.float32)


@torch.no_grad()
def load_linear(linear: nn.Linear, weights: dict, prefix: str) -> None:
    linear.weight.copy_(take(weights, f"{prefix}.weight", linear.weight.shape))
    linear.bias.copy_(take(weights, f"{prefix}.bias", linear.bias.shape))


@torch.no_grad()
def load_fused_linear(linear: nn.Linear, weights: dict, prefixes: list[str]) -> None:
    """Separate projections stacked on the output dimension (our fused q/k/v and k/v projections)."""
    size = linear.in_features
    linear.weight.copy_(torch.cat([take(weights, f"{p}.weight", (size, size)) for p in prefixes]))
    linear.bias.copy_(torch.cat([take(weights, f"{p}.bias", (size,)) for p in prefixes]))


@torch.no_grad()
def load_layer_norm(norm: nn.LayerNorm, weights: dict, prefix: str) -> None:
    norm.weight.copy_(take(weights, f"{prefix}.weight", norm.weight.shape))
    norm.bias.copy_(take(weights, f"{prefix}.bias", norm.bias.shape))


def load_self_attention(attention, weights: dict, prefix: str) -> None:
    load_fused_linear(attention.qkv_proj, weights, [f"{prefix}.{p}_proj" for p in "qkv"])
    load_linear(attention.out_proj, weights, f"{prefix}.out_proj")


def load_cross_attention(attention, weights: dict, prefix: str) -> None:
    load_linear(attention.q_proj, weights, f"{prefix}.q_proj")
    load_fused_linear(attention.kv_proj, weights, [f"{prefix}.{p}_proj" for p in "kv"])
    load_linear(attention.out_proj, weights, f"{prefix}.out_proj")


def load_feed_forward(ffn, weights: dict, prefix: str) -> None:
    load_linear(ffn.w_1, weights, f"{prefix}.fc1")
    load_linear(ffn.w_2, weights, f"{prefix}.fc2")


def load_encoder_layer(layer, weights: dict, prefix: str) -> None:
    load_self_attention(layer.self_attn, weights, f"{prefix}.self_attn")
    load_layer_norm(layer.sublayer[0].norm, weights, f"{prefix}.self_attn_layer_norm")
    load_feed_forward(layer.feed_forward, weights, prefix)
    load_layer_norm(layer.sublayer[1].norm, weights, f"{prefix}.final_layer_norm")


def load_decoder_layer(layer, weights: dict, prefix: str) -> None:
    load_self_attention(layer.self_attn, weights, f"{prefix}.self_attn")
    load_layer_norm(layer.sublayer[0].norm, weights, f"{prefix}.self_attn_layer_norm")
    load_cross_attention(layer.cross_attn, weights, f"{prefix}.encoder_attn")
    load_layer_norm(layer.sublayer[1].norm, weights, f"{prefix}.encoder_attn_layer_norm")
    load_feed_forward(layer.feed_forward, weights, prefix)
    load_layer_norm(layer.sublayer[2].norm, weights, f"{prefix}.final_layer_norm")


@torch.no_grad()
def load_embedding(embedding: nn.Embedding, weight: torch.Tensor, order: list[int | None]) -> None:
    embedding.weight.copy_(reorder_rows(weight, order))


@torch.no_grad()
def load_output(generator: nn.Linear, weight: torch.Tensor | None, bias: torch.Tensor, order) -> None:
    """The output projection (``weight`` None: tied to the target embedding) and the final logits bias."""
    if weight is not None:
        generator.weight.copy_(reorder_rows(weight, order))
    generator.bias.copy_(reorder_rows(bias.reshape(-1, 1), order).reshape(-1))


def first_present(weights: dict, names: list[str]) -> torch.Tensor:
    for name in names:
        if name in weights:
            return weights[name].to(torch.float32)
    raise TransformerMTError(f"the weights have none of {', '.join(names)}; is this a MarianMT model?")


def check_positions(weights: dict) -> None:
    """Older saves hold the sinusoid tables (transformers computes them now): they must be ours."""
    for name in ("model.encoder.embed_positions.weight", "model.decoder.embed_positions.weight"):
        if name in weights:
            table = weights[name].to(torch.float32)
            ours = PositionalEncoding.make_table(table.size(0), table.size(1), layout="concatenated")
            if not torch.allclose(table, ours, atol=1e-4):
                raise TransformerMTError(f"{name} is not the sinusoid [sin | cos] table of Marian; this model's "
                                         f"positions cannot be imported")


def load_model(model: Transformer, weights: dict, src_order, tgt_order) -> None:
    cfg = model.cfg
    check_positions(weights)
    src = first_present(weights, ["model.encoder.embed_tokens.weight", "model.shared.weight"])
    tgt = first_present(weights, ["model.decoder.embed_tokens.weight", "model.shared.weight"])
    for name, matrix, rows in (("source embeddings", src, len(src_order)), ("target embeddings", tgt,
                                                                              len(tgt_order))):
        if tuple(matrix.shape) != (rows - (src_order[0] is None), cfg.d_model):
            raise TransformerMTError(f"the {name} have shape {tuple(matrix.shape)}, the vocabulary and config.json "
                                     f"imply ({rows - 1}, {cfg.d_model})")
    load_embedding(model.src_embed.embedding, src, src_order)
    if not cfg.share_embeddings:
        load_embedding(model.tgt_embed.embedding, tgt, tgt_order)
    for i, layer in enumerate(model.encoder_layers):
        load_encoder_layer(layer, weights, f"model.encoder.layers.{i}")
    for i, layer in enumerate(model.decoder_layers):
        load_decoder_layer(layer, weights, f"model.decoder.layers.{i}")
    rows = len(tgt_order) - (tgt_order[0] is None)
    bias = weights.get("final_logits_bias", torch.zeros(1, rows))
    if bias.numel() != rows:
        raise TransformerMTError(f"final_logits_bias has shape {tuple(bias.shape)}, expected (1, {rows}) for the "
                                 f"model's vocabulary; the model is damaged: download it again")
    output = None if cfg.tie_output else weights["lm_head.weight"].to(torch.float32)
    load_output(model.generator, output, bias.to(torch.float32), tgt_order)


def import_marian(hf_dir, hf_config: dict, output_dir) -> dict:
    """Write the MarianMT model in ``hf_dir`` (its config.json already read) as the run directory ``output_dir``."""
    where = str(hf_dir / "config.json")
    for name in ("source.spm", "target.spm"):
        check_model_file(hf_dir / name, name, source=str(hf_dir), special_ids=False,
                         fix="the model directory is incomplete or damaged: download it again")
    weights, weights_path = read_weights(hf_dir)
    separate = (hf_dir / "target_vocab.json").exists()
    src_pieces = read_vocabulary(hf_dir, "vocab.json")
    tgt_pieces = read_vocabulary(hf_dir, "target_vocab.json") if separate else src_pieces
    src_order, src_names = id_order(src_pieces, hf_config, str(hf_dir / "vocab.json"))
    tgt_order, tgt_names = id_order(tgt_pieces, hf_config, str(hf_dir / ("target_vocab.json" if separate
                                                                          else "vocab.json")))
    shared = not separate and hf_config.get("share_encoder_decoder_embeddings", True)
    tied = "lm_head.weight" not in weights or torch.equal(
        weights["lm_head.weight"], first_present(weights, ["model.decoder.embed_tokens.weight", "model.shared.weight"]))
    model_cfg = marian_model_config(hf_config, shared, tied, where)
    tokenizer_cfg = {"joint": False, "vocabulary": "separate" if separate else "shared"}
    languages = read_json(hf_dir, "tokenizer_config.json", required=False) or {}
    src_lang, tgt_lang = (str(languages.get(key) or default) for key, default in
                          (("source_lang", "src"), ("target_lang", "tgt")))
    data = {**vars(DataConfig()), "src_lang": src_lang, "tgt_lang": tgt_lang,
            "max_len": model_cfg.max_positions - 1}  # room for the source's </s>
    config = config_from_dict({"data": data, "tokenizer": {**vars(TokenizerConfig()), **tokenizer_cfg},
                               "model": vars(model_cfg)}, source=where)
    model = build_model(config.model, len(src_names), len(tgt_names), PAD_ID)
    load_model(model, weights, src_order, tgt_order)

    def write(folder):
        write_marker(folder)
        for name, copy in (("source.spm", "spm.src.model"), ("target.spm", "spm.tgt.model")):
            # by descriptor (never another user's link), bounded as check_model_file checked it
            write_run_file(folder / copy, read_user_file(hf_dir / name, name, limit=MAX_MODEL_BYTES,
                                                         fix="the model directory is damaged: download it again"))
        for names, ids in ((src_names, "spm.src.ids.json"), (tgt_names, "spm.tgt.ids.json")):
            write_run_file(folder / ids, json.dumps(names, ensure_ascii=False))
        save_config(config, folder / "config.yaml")
        origin = {"path": str(hf_dir.resolve()), "model_type": "marian", "weights": weights_path.name,
                  "weights_sha256": file_sha256(weights_path)}
        state = {"format_version": ckpt.FORMAT_VERSION, "config": config.to_dict(), "model": model.state_dict(),
                 "vocab_sizes": {"src": len(src_names), "tgt": len(tgt_names)},
                 "tokenizer_sha256": ckpt.tokenizer_checksums(folder / "spm.src.model", folder / "spm.tgt.model",
                                                              ids_paths(folder)),
                 "step": 0, "epoch": 0, "best_bleu": -1.0, "imported_from": origin}
        ckpt.atomic_save(state, folder / "checkpoint_best.pt")
        record_in_marker(folder, "imported_from", origin)

    write_run_dir(output_dir, write)
    codes = [name for name in src_names if name.startswith(">>") and name.endswith("<<")]
    return {"run_dir": str(output_dir), "vocab_sizes": (len(src_names), len(tgt_names)),
            "parameters": sum(p.numel() for p in model.parameters()), "languages": (src_lang, tgt_lang),
            "target_languages": [code[2:-2] for code in codes]}

