"""Export a trained model to CTranslate2, a C++ inference engine for Transformers (optional extra [export]).

    from transformer_mt.interop.ctranslate2_export import export_ctranslate2
    export_ctranslate2("runs/demo", "runs/demo-ct2", quantization="int8")

The model is loaded like every other model here, through the safe checkpoint loader
(``Translator.from_run``), and walked module by module into a CTranslate2
``TransformerSpec``, in the style of CTranslate2's own converters: one small ``set_*``
function per kind of layer. The export directory is self-contained:

    model.bin, config.json, *_vocabulary.json   CTranslate2's model (weights, special tokens, vocabularies)
    spm.model  or  spm.src.model + spm.tgt.model   the run's SentencePiece model(s)
    config.yaml                                  the run's config (decoding defaults, languages, ...)
    export.json                                  what ct2_translator.CTranslate2Translator needs to know

What has to match our model (model.py) for CTranslate2 to compute the same function:

- post-norm by default (``model.pre_norm``); pre-norm adds the final encoder/decoder layer norms;
- embeddings scaled by sqrt(d_model), then the sinusoidal positions added. Our table interleaves
  sin (even dims) and cos (odd dims) where CTranslate2's built-in one concatenates them, so the
  table is exported explicitly (``EXPORTED_POSITIONS`` rows: CTranslate2 cannot grow an explicit
  table, so longer inputs are cut there and output lengths capped, see ct2_translator);
- self-attention's fused q/k/v projection and cross-attention's fused k/v projection are laid out
  as CTranslate2's fused ones (q, k, v stacked on the output dimension, heads contiguous);
- relu, gelu in its exact (erf) form, or silu (CTranslate2's swish); torch's LayerNorm epsilon;
- the options of imported models (model.position_table, scale_embeddings, output_bias) map onto the
  table written out, the embedding scale and the projection's bias; with model.source_eos the
  sources the Translator hands over already end in ``</s>``;
- vocabularies are the pieces in id order, so token i is id i: pad 0 ``<pad>``, unk 1 ``<unk>``,
  bos 2 ``<s>`` (the decoder start token), eos 3 ``</s>`` (SentencePiece's own ids, or an imported
  model's id lists, copied into the export too); shared embeddings and the tied output projection
  are stored once (CTranslate2 aliases equal weights).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import save_config
from ..data.tokenizer import BOS_ID, EOS_ID, UNK_ID
from ..decoding.translator import Translator, find_checkpoint
from ..errors import TransformerMTError
from ..model import PositionalEncoding, Transformer
from ..safe_files import (
    check_output_folder,
    current_umask,
    held_folder,
    make_temporary_folder,
    remove,
    remove_empty_folder,
    rename,
    write_run_file,
)

# Rows of the exported position table: the longest input (in subword tokens) and output it can encode.
EXPORTED_POSITIONS = 2048
EXPORT_INFO = "export.json"
MAX_EXPORT_INFO_BYTES = 1 << 20  # its export info is a few hundred bytes
EXPORT_FORMAT = 1
INSTALL_HINT = "pip install 'transformer-mt[export]'"


def import_ctranslate2():
    """The ctranslate2 module, or one clear error saying how to install it."""
    try:
        import ctranslate2
    except ImportError:
        raise TransformerMTError(f"CTranslate2 is not installed (needed to export and run exported models): "
                                 f"{INSTALL_HINT}") from None
    return ctranslate2


def _array(tensor: torch.Tensor):
    return tensor.detach().to("cpu", torch.float32).numpy()


def set_linear(spec, module) -> None:
    spec.weight = _array(module.weight)
    if module.bias is not None:
        spec.bias = _array(module.bias)


def set_layer_norm(spec, module) -> None:
    spec.gamma = _array(module.weight)
    spec.beta = _array(module.bias)


def set_embeddings(spec, module) -> None:
    spec.weight = _array(module.weight)


def set_position_encodings(spec, module: PositionalEncoding, num_positions: int) -> None:
    spec.encodings = module.make_table(num_positions, module.d_model, layout=module.layout).numpy()


def set_multi_head_attention(spec, module, norm) -> None:
    """Projections of one attention sublayer and the layer norm of its residual connection."""
    if module.self_attention:
        set_linear(spec.linear[0], module.qkv_proj)  # fused q, k, v: CTranslate2's self-attention layout
    else:
        set_linear(spec.linear[0], module.q_proj)
        set_linear(spec.linear[1], module.kv_proj)  # fused k, v over the encoder output
    set_linear(spec.linear[-1], module.out_proj)
    set_layer_norm(spec.layer_norm, norm)


def set_ffn(spec, module, norm) -> None:
    set_layer_norm(spec.layer_norm, norm)
    set_linear(spec.linear_0, module.w_1)
    set_linear(spec.linear_1, module.w_2)


def set_input_layers(spec, embed, num_positions: int) -> None:
    """Token embeddings times sqrt(d_model), plus the position table (our Embeddings module)."""
    set_embeddings(spec.embeddings[0] if isinstance(spec.embeddings, list) else spec.embeddings, embed.embedding)
    set_position_encodings(spec.position_encodings, embed.positions, num_positions)
    spec.scale_embeddings = embed.scale if embed.scale != 1.0 else False  # model.scale_embeddings: false


def set_encoder_layer(spec, layer) -> None:
    set_multi_head_attention(spec.self_attention, layer.self_attn, layer.sublayer[0].norm)
    set_ffn(spec.ffn, layer.feed_forward, layer.sublayer[1].norm)


def set_decoder_layer(spec, layer) -> None:
    set_multi_head_attention(spec.self_attention, layer.self_attn, layer.sublayer[0].norm)
    set_multi_head_attention(spec.attention, layer.cross_attn, layer.sublayer[1].norm)
    set_ffn(spec.ffn, layer.feed_forward, layer.sublayer[2].norm)


def set_stack(spec, embed, layers, set_layer, final_norm, num_positions: int) -> None:
    """An encoder or a decoder: its input layers, its layers, and (pre-norm only) its final layer norm."""
    set_input_layers(spec, embed, num_positions)
    for layer_spec, layer in zip(spec.layer, layers, strict=True):
        set_layer(layer_spec, layer)
    if isinstance(final_norm, torch.nn.LayerNorm):  # post-norm models have an nn.Identity there
        set_layer_norm(spec.layer_norm, final_norm)


def set_encoder(spec, model: Transformer, num_positions: int) -> None:
    set_stack(spec, model.src_embed, model.encoder_layers, set_encoder_layer, model.encoder_norm, num_positions)


def set_decoder(spec, model: Transformer, num_positions: int) -> None:
    set_stack(spec, model.tgt_embed, model.decoder_layers, set_decoder_layer, model.decoder_norm, num_positions)
    set_linear(spec.projection, model.generator)


def build_spec(translator: Translator, num_positions: int = EXPORTED_POSITIONS):
    """The CTranslate2 TransformerSpec of a loaded model, weights and vocabularies set (not yet validated)."""
    import_ctranslate2()
    from ctranslate2.specs import common_spec, transformer_spec

    model, cfg = translator.model, translator.config.model
    activations = {"relu": common_spec.Activation.RELU, "gelu": common_spec.Activation.GELU,  # F.gelu: erf form
                   "silu": common_spec.Activation.SWISH}
    spec = transformer_spec.TransformerSpec.from_config(
        (cfg.num_encoder_layers, cfg.num_decoder_layers), cfg.num_heads, pre_norm=cfg.pre_norm,
        activation=activations[cfg.activation])
    set_encoder(spec.encoder, model, num_positions)
    set_decoder(spec.decoder, model, num_positions)

    src_tok, tgt_tok = translator.src_tokenizer, translator.tgt_tokenizer
    spec.register_source_vocabulary(src_tok.id_to_piece(list(range(len(src_tok)))))
    spec.register_target_vocabulary(tgt_tok.id_to_piece(list(range(len(tgt_tok)))))
    if src_tok.id_to_piece(UNK_ID) != tgt_tok.id_to_piece(UNK_ID):
        raise TransformerMTError(f"the source and target tokenizers name the unknown token differently "
                                 f"({src_tok.id_to_piece(UNK_ID)!r}, {tgt_tok.id_to_piece(UNK_ID)!r}); "
                                 f"CTranslate2 needs one name")
    spec.config.unk_token = tgt_tok.id_to_piece(UNK_ID)
    spec.config.bos_token = tgt_tok.id_to_piece(BOS_ID)
    spec.config.eos_token = tgt_tok.id_to_piece(EOS_ID)
    spec.config.decoder_start_token = spec.config.bos_token  # search.py starts every hypothesis from bos
    spec.config.add_source_bos = False  # our sources are the bare pieces
    spec.config.add_source_eos = False  # with model.source_eos the Translator's sources already end in </s>
    spec.config.layer_norm_epsilon = model.encoder_layers[0].sublayer[0].norm.eps
    files = [translator.src_tokenizer.model_path, translator.tgt_tokenizer.model_path]
    files += [tok.ids_path for tok in (src_tok, tgt_tok) if hasattr(tok, "ids_path")]  # an imported model's id lists
    for path in dict.fromkeys(files):
        spec.register_file(str(path))  # copied into the export directory by spec.save
    return spec


def _check_output_dir(output_dir: Path) -> None:
    check_output_folder(output_dir, "--output")  # it and its parent are created through these links
    if output_dir.is_symlink() or (output_dir.exists() and not output_dir.is_dir()):
        raise TransformerMTError(f"export output {output_dir} exists and is not a directory (or is a link); "
                                 f"choose a new directory")
    if output_dir.is_dir() and any(output_dir.iterdir()):
        raise TransformerMTError(f"export output directory {output_dir} is not empty; choose a new directory "
                                 f"(an export never overwrites files)")


def export_ctranslate2(run_dir, output_dir, checkpoint: str = "best", quantization: str | None = None) -> Path:
    """Write the model of ``run_dir`` (``checkpoint``: best, last, average or a path) as a CTranslate2 model.

    ``quantization`` (None keeps float32; int8, int8_float32, int8_float16, int8_bfloat16, int16,
    float16, bfloat16, float32) is CTranslate2's weight type. ``output_dir`` must not exist or be
    empty. The directory appears complete or not at all (it is written beside it and renamed).
    Returns ``output_dir``.
    """
    ctranslate2 = import_ctranslate2()
    from ctranslate2.specs import model_spec

    output_dir = Path(output_dir)
    _check_output_dir(output_dir)
    if quantization is not None and quantization not in model_spec.ACCEPTED_MODEL_TYPES:
        raise TransformerMTError(f"unknown quantization {quantization!r}; choose one of "
                                 f"{', '.join(model_spec.ACCEPTED_MODEL_TYPES)}")
    checkpoint_path = find_checkpoint(run_dir, checkpoint)
    translator = Translator.from_run(run_dir, checkpoint, device="cpu")
    num_positions = max(EXPORTED_POSITIONS, translator.config.model.max_positions)
    spec = build_spec(translator, num_positions)
    spec.validate()
    spec.optimize(quantization=quantization)

    tmp = None
    try:
        # A new directory under an unpredictable name, its folders made by descriptor (safe_files), so no link
        # planted beside the output or on the way to it is used; the mode a plain mkdir gives.
        tmp = make_temporary_folder(output_dir, mode=0o777 & ~current_umask(), option="--output")
        with held_folder(tmp) as folder:  # spec.save writes its files by name: into this very folder
            spec.save(folder)
        save_config(translator.config, tmp / "config.yaml")
        info = {"tool": "transformer-mt", "format": EXPORT_FORMAT, "engine": "ctranslate2",
                "ctranslate2_version": ctranslate2.__version__, "checkpoint": str(checkpoint_path.resolve()),
                "quantization": quantization, "positions": num_positions,
                "source_tokenizer": translator.src_tokenizer.model_path.name,
                "target_tokenizer": translator.tgt_tokenizer.model_path.name}
        write_run_file(tmp / EXPORT_INFO, json.dumps(info, indent=1) + "\n")
        _check_output_dir(output_dir)  # still free after the minutes an export may take
        if output_dir.is_dir():
            remove_empty_folder(output_dir, "--output")  # empty: checked above
        rename(tmp, output_dir, "--output")
    except OSError as exc:
        raise TransformerMTError(f"could not write the export to {output_dir}: "
                                 f"{exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            remove(tmp, ignore_errors=True)
    return output_dir
