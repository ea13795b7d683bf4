"""The Transformer of Vaswani et al. (2017), "Attention Is All You Need".

Read top to bottom: positional encoding, embeddings, multi-head attention,
the position-wise feed-forward network, the residual ``SublayerConnection``,
encoder and decoder layers, and the ``Transformer`` that ties them together.

Shapes: B = batch, S = source length, T = target length, D = d_model,
H = heads. Boolean masks follow ``scaled_dot_product_attention``: True means
"may attend".

Incremental decoding (used by search.py): ``Transformer.decode`` takes a
``cache`` — one dict per decoder layer — holding the self-attention keys and
values of all earlier positions and the encoder keys/values projected once.
Each step then costs one position, not the whole prefix. ``reorder_cache``
selects rows of every cached tensor, which is how beam search follows the
surviving beams and drops finished sentences (as in fairseq). The beams of a
sentence share one copy of its encoder output and cross-attention keys/values.

Attention weights (for attention plots and word alignments) come out only when
asked: ``decode(..., return_attention=True)``. Without the flag nothing is kept
and the fast kernels run; with it the attention is computed by the spelled-out
formula, since ``scaled_dot_product_attention`` does not return its weights.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .errors import TransformerMTError
from .kernels import FastDropout, OneDNNLinear, StepKeysValues, attention_over_steps


def subsequent_mask(size: int, device=None) -> torch.Tensor:
    """(size, size) boolean mask: position i may attend to positions <= i."""
    return torch.ones(size, size, dtype=torch.bool, device=device).tril()


class PositionalEncoding(nn.Module):
    """Sinusoidal position signals (section 3.5), added to the scaled embeddings.

    The paper's sines and cosines alternate (``interleaved``: sin in even dimensions, cos in odd
    ones); Marian, and so OPUS-MT models, put all sines first (``concatenated``: [sin | cos]).
    """

    def __init__(self, d_model: int, max_positions: int, layout: str = "interleaved"):
        super().__init__()
        self.d_model = d_model
        self.layout = layout
        self.register_buffer("table", self.make_table(max_positions, d_model, layout=layout), persistent=False)

    @staticmethod
    def make_table(length: int, d_model: int, start: int = 0, layout: str = "interleaved") -> torch.Tensor:
        """The signals of positions start .. start + length - 1, one row each."""
        position = torch.arange(start, start + length, dtype=torch.float32).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        table = torch.zeros(length, d_model)
        if layout == "concatenated":
            sines = (d_model + 1) // 2
            table[:, :sines] = torch.sin(position * div_term)
            table[:, sines:] = torch.cos(position * div_term[: d_model // 2])
        else:
            table[:, 0::2] = torch.sin(position * div_term)
            table[:, 1::2] = torch.cos(position * div_term[: d_model // 2])
        return table

    def forward(self, length: int, offset: int = 0) -> torch.Tensor:
        end = offset + length
        if end > self.table.size(0):
            # Sinusoids extend to any length (the Translator cuts sources to max_positions, with a warning:
            # see translator.cut_to_positions; targets may run past it). These rows are computed for this
            # call and not kept, so a forward pass never changes the module (translating threads share it).
            return self.make_table(length, self.d_model, start=offset, layout=self.layout).to(self.table.device)
        return self.table[offset:end]


class Embeddings(nn.Module):
    """Token embeddings scaled by sqrt(d_model) (section 3.4) plus positions, then dropout."""

    def __init__(self, embedding: nn.Embedding, positions: PositionalEncoding, dropout: float, scale: bool = True):
        super().__init__()
        self.embedding = embedding
        self.positions = positions
        self.scale = math.sqrt(embedding.embedding_dim) if scale else 1.0
        self.dropout = FastDropout(dropout)

    def forward(self, tokens: torch.Tensor, offset: int = 0) -> torch.Tensor:
        x = self.embedding(tokens) * self.scale
        x = x + self.positions(tokens.size(1), offset).to(x.dtype)
        return self.dropout(x)


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention (section 3.2.2).

    Self-attention projects queries, keys and values with one fused matrix;
    cross-attention projects the query from the decoder and keys/values from
    the encoder output (fused, and only once per sentence when cached).
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float, self_attention: bool):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.self_attention = self_attention
        self.dropout = dropout
        self.attn_dropout = FastDropout(dropout)
        if self_attention:
            self.qkv_proj = OneDNNLinear(d_model, 3 * d_model)
        else:
            self.q_proj = OneDNNLinear(d_model, d_model)
            self.kv_proj = OneDNNLinear(d_model, 2 * d_model)
        self.out_proj = OneDNNLinear(d_model, d_model)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, H, L, D/H)"""
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        memory: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        cache: dict | None = None,
        cache_prefix: str = "",
        weights: list | None = None,
    ) -> torch.Tensor:
        """Attention of ``query`` (B, T, D) to itself or to ``memory`` (B, S, D); returns (B, T, D).

        ``weights``: a list that receives this call's attention weights, (B, H, T, keys), when
        someone asks for them (attention plots, alignments); otherwise None and nothing is kept.
        """
        if self.self_attention:
            q, k, v = self.qkv_proj(query).chunk(3, dim=-1)
            q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)
            if cache is not None:
                # Append this step's key/value to those of the earlier positions.
                k, v = cache.setdefault(cache_prefix + "kv", StepKeysValues()).append(k, v)
        else:
            if cache is not None and cache_prefix + "k" in cache:
                k, v = cache[cache_prefix + "k"], cache[cache_prefix + "v"]
            else:
                k, v = self.kv_proj(memory).chunk(2, dim=-1)
                k, v = self.split_heads(k), self.split_heads(v)
                if cache is not None:
                    cache[cache_prefix + "k"], cache[cache_prefix + "v"] = k, v
            # Beam search decodes several rows (beams) per sentence, sentence-major, against one
            # copy of the sentence's encoder output: the beams become extra query positions of
            # their sentence, so keys/values are neither copied per beam nor reordered with them.
            rows, length, _ = query.shape
            sentences = k.size(0)
            q = self.split_heads(self.q_proj(query).view(sentences, rows // sentences * length, -1))
        # On CPU the spelled-out formula beats scaled_dot_product_attention in two cases: training
        # with dropout (a faster mask) and cached cross-attention, where a sentence's few beam
        # queries meet its keys (beam-5 decoding of 1,000 sentences, measured before the linear
        # layers moved to oneDNN: 7.75 s -> 7.23 s).
        cached_cross_attention = cache is not None and not self.self_attention and not self.training
        if weights is not None:  # scaled_dot_product_attention does not return the weights
            out, attention = self.spelled_out_attention(q, k, v, attn_mask, is_causal)
            weights.append(self.weights_per_row(attention, query.size(0)))
        elif cache is not None and self.self_attention:
            out = attention_over_steps(q, k, v)  # the newest position over the cached ones (kernels.py)
        elif q.device.type == "cpu" and ((self.training and self.dropout > 0.0) or cached_cross_attention):
            out, _ = self.spelled_out_attention(q, k, v, attn_mask, is_causal)
        else:
            out = F.scaled_dot_product_attention(
                q, k, v,
                attn_mask=attn_mask,
                dropout_p=self.dropout if self.training else 0.0,
                is_causal=is_causal,
            )
        return self.out_proj(out.transpose(1, 2).reshape(query.shape))

    def spelled_out_attention(self, q, k, v, attn_mask, is_causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """softmax(q k^T / sqrt(d_k)) v (equation 1), with dropout on the weights when training.

        Returns the output and the attention weights (before dropout). On CPU,
        ``scaled_dot_product_attention`` with dropout computes these same steps but draws its
        mask with the slow Bernoulli sampler; this uses ``kernels.dropout_mask``, the faster one.
        """
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        if is_causal:
            attn_mask = subsequent_mask(q.size(-2), q.device)
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        attention = scores.softmax(dim=-1)
        return torch.matmul(self.attn_dropout(attention), v), attention

    def weights_per_row(self, attention: torch.Tensor, rows: int) -> torch.Tensor:
        """(B, H, T, keys) for the B query rows: cached cross-attention computed a sentence's beams
        as extra query positions of one row (see forward); give each beam its own row again."""
        sentences, heads, queries, keys = attention.shape
        if sentences == rows:
            return attention
        beams = rows // sentences
        return (attention.view(sentences, heads, beams, queries // beams, keys).transpose(1, 2)
                .reshape(rows, heads, queries // beams, keys))


class PositionwiseFeedForward(nn.Module):
    """FFN(x) = W2 act(W1 x + b1) + b2 (section 3.3)."""

    def __init__(self, d_model: int, ffn_dim: int, activation: str, activation_dropout: float):
        super().__init__()
        self.w_1 = OneDNNLinear(d_model, ffn_dim)
        self.w_2 = OneDNNLinear(ffn_dim, d_model)
        self.activation = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu}[activation]
        self.dropout = FastDropout(activation_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.dropout(self.activation(self.w_1(x))))


class SublayerConnection(nn.Module):
    """Residual connection around a sublayer, with layer norm.

    Post-norm (the paper): LayerNorm(x + Dropout(Sublayer(x))).
    Pre-norm: x + Dropout(Sublayer(LayerNorm(x))); needs a final norm after the stack.
    """

    def __init__(self, d_model: int, dropout: float, pre_norm: bool):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.dropout = FastDropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, x: torch.Tensor, sublayer) -> torch.Tensor:
        if self.pre_norm:
            return x + self.dropout(sublayer(self.norm(x)))
        return self.norm(x + self.dropout(sublayer(x)))


class EncoderLayer(nn.Module):
    """Self-attention then feed-forward, each inside a SublayerConnection."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.num_heads, cfg.attention_dropout, self_attention=True)
        self.feed_forward = PositionwiseFeedForward(cfg.d_model, cfg.ffn_dim, cfg.activation, cfg.activation_dropout)
        self.sublayer = nn.ModuleList(SublayerConnection(cfg.d_model, cfg.dropout, cfg.pre_norm) for _ in range(2))

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        x = self.sublayer[0](x, lambda x: self.self_attn(x, attn_mask=src_mask))
        return self.sublayer[1](x, self.feed_forward)


class DecoderLayer(nn.Module):
    """Masked self-attention, encoder-decoder (cross) attention, then feed-forward."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_attn = MultiHeadAttention(cfg.d_model, cfg.num_heads, cfg.attention_dropout, self_attention=True)
        self.cross_attn = MultiHeadAttention(cfg.d_model, cfg.num_heads, cfg.attention_dropout, self_attention=False)
        self.feed_forward = PositionwiseFeedForward(cfg.d_model, cfg.ffn_dim, cfg.activation, cfg.activation_dropout)
        self.sublayer = nn.ModuleList(SublayerConnection(cfg.d_model, cfg.dropout, cfg.pre_norm) for _ in range(3))

    def forward(self, x, memory, src_mask, cache: dict | None = None,
                self_weights: list | None = None, cross_weights: list | None = None) -> torch.Tensor:
        """``self_weights`` / ``cross_weights``: lists that receive the attention weights, when asked for."""
        # With a cache, x holds only the newest position, which may attend to
        # every cached one, so no causal mask is needed. (A plain bool, not one computed from
        # x's length: under torch.compile that would be a symbolic value the attention refuses.)
        causal = cache is None
        x = self.sublayer[0](x, lambda x: self.self_attn(x, is_causal=causal, cache=cache, cache_prefix="self_",
                                                         weights=self_weights))
        x = self.sublayer[1](x, lambda x: self.cross_attn(x, memory, attn_mask=src_mask, cache=cache,
                                                          cache_prefix="cross_", weights=cross_weights))
        return self.sublayer[2](x, self.feed_forward)


class Transformer(nn.Module):
    """Encoder-decoder Transformer. ``forward`` is teacher-forced training;
    ``encode`` + ``decode`` (with a cache) is what search uses."""

    def __init__(self, cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int, pad_id: int = 0):
        super().__init__()
        self.cfg = cfg
        self.pad_id = pad_id
        positions = PositionalEncoding(cfg.d_model, cfg.max_positions, cfg.position_table)
        src_embedding = nn.Embedding(src_vocab_size, cfg.d_model, padding_idx=pad_id)
        if cfg.share_embeddings:
            if src_vocab_size != tgt_vocab_size:
                raise ValueError("shared embeddings need one vocabulary for source and target")
            tgt_embedding = src_embedding
        else:
            tgt_embedding = nn.Embedding(tgt_vocab_size, cfg.d_model, padding_idx=pad_id)
        self.src_embed = Embeddings(src_embedding, positions, cfg.dropout, cfg.scale_embeddings)
        self.tgt_embed = Embeddings(tgt_embedding, positions, cfg.dropout, cfg.scale_embeddings)
        self.encoder_layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_encoder_layers))
        self.decoder_layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_decoder_layers))
        # Pre-norm leaves the residual stream un-normalised; normalise once at the end.
        self.encoder_norm = nn.LayerNorm(cfg.d_model) if cfg.pre_norm else nn.Identity()
        self.decoder_norm = nn.LayerNorm(cfg.d_model) if cfg.pre_norm else nn.Identity()
        # The output bias (Marian's final logits bias) is off in the paper's model.
        self.generator = OneDNNLinear(cfg.d_model, tgt_vocab_size, bias=cfg.output_bias)
        self.reset_parameters()
        if cfg.tie_output:
            self.generator.weight = tgt_embedding.weight

    def reset_parameters(self) -> None:
        for name, param in self.named_parameters():
            if param.dim() > 1:
                nn.init.xavier_uniform_(param)
            elif name.endswith("bias"):
                nn.init.zeros_(param)
        # Embeddings ~ N(0, d^-1/2): after the sqrt(d) scale they have unit variance,
        # and as tied output weights they give logits of sensible size.
        for embed in (self.src_embed.embedding, self.tgt_embed.embedding):
            nn.init.normal_(embed.weight, mean=0.0, std=self.cfg.d_model ** -0.5)
            with torch.no_grad():
                embed.weight[self.pad_id].zero_()

    def source_mask(self, src_tokens: torch.Tensor) -> torch.Tensor:
        """(B, 1, 1, S): True where the source token is real, not padding."""
        return (src_tokens != self.pad_id)[:, None, None, :]

    def encode(self, src_tokens: torch.Tensor):
        """src_tokens (B, S) -> memory (B, S, D), src_mask (B, 1, 1, S)."""
        src_mask = self.source_mask(src_tokens)
        x = self.src_embed(src_tokens)
        for layer in self.encoder_layers:
            x = layer(x, src_mask)
        return self.encoder_norm(x), src_mask

    def decode(self, tgt_tokens, memory, src_mask, cache: list[dict] | None = None,
               return_attention: bool = False, return_self_attention: bool = False):
        """Decoder hidden states (B, T, D). With a cache, tgt_tokens holds only the newest position.

        ``return_attention`` / ``return_self_attention``: return ``(hidden, attention)`` instead,
        where ``attention["cross"]`` holds one (B, H, T, S) tensor of encoder-decoder attention
        weights per decoder layer (zero on source padding) and ``attention["self"]`` one
        (B, H, T, prefix length) tensor of decoder self-attention weights per layer.
        """
        offset = 0
        if cache is not None and "self_kv" in cache[0]:
            offset = cache[0]["self_kv"].length
        self_weights = [] if return_self_attention else None
        cross_weights = [] if return_attention else None
        x = self.tgt_embed(tgt_tokens, offset)
        for i, layer in enumerate(self.decoder_layers):
            x = layer(x, memory, src_mask, None if cache is None else cache[i], self_weights, cross_weights)
        hidden = self.decoder_norm(x)
        if not (return_attention or return_self_attention):
            return hidden
        attention = {"cross": cross_weights} if return_attention else {}
        if return_self_attention:
            attention["self"] = self_weights
        return hidden, attention

    def forward(self, src_tokens: torch.Tensor, tgt_input: torch.Tensor,
                output_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing: logits (B, T, V) for the next token at every target position.

        With ``output_mask`` (B, T) the logits are computed only where it is True,
        as (N, V): training skips the vocabulary projection at padding positions.
        """
        memory, src_mask = self.encode(src_tokens)
        hidden = self.decode(tgt_input, memory, src_mask)
        if output_mask is not None:
            hidden = hidden[output_mask]
        return self.generator(hidden)

    def new_cache(self) -> list[dict]:
        return [{} for _ in self.decoder_layers]

    @staticmethod
    def reorder_cache(cache: list[dict], row_index: torch.Tensor,
                      sentence_index: torch.Tensor | None = None) -> list[dict]:
        """Follow the surviving beams: keep rows ``row_index`` of every self-attention cache.

        The cross-attention keys/values are stored once per sentence (see MultiHeadAttention),
        so they only change when sentences leave the batch: then ``sentence_index`` says which
        sentences stay. For greedy search rows and sentences are the same index. The given cache
        stays as it was."""
        return [{name: entry.select(row_index) if isinstance(entry, StepKeysValues)
                 else entry if sentence_index is None else entry.index_select(0, sentence_index)
                 for name, entry in layer.items()} for layer in cache]


def parameter_count(cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int) -> int:
    """About how many numbers a model of ``cfg`` holds (weights and the position table), before building it."""
    d, ffn = cfg.d_model, cfg.ffn_dim
    attention, feed_forward, norm = 4 * d * d + 4 * d, 2 * d * ffn + d + ffn, 2 * d
    encoder = cfg.num_encoder_layers * (attention + feed_forward + 2 * norm) + norm
    decoder = cfg.num_decoder_layers * (2 * attention + feed_forward + 3 * norm) + norm
    embeddings = src_vocab_size * d + (0 if cfg.share_embeddings else tgt_vocab_size * d)
    output = 0 if cfg.tie_output else tgt_vocab_size * d
    return encoder + decoder + embeddings + output + cfg.max_positions * d


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


# What a layer costs beyond its weights: its modules' and parameters' Python objects and small allocations
# (measured: ~56 KiB a layer at d_model 16, where the weights are ~9 KiB). A model of many narrow layers
# is mostly this.
LAYER_OVERHEAD_BYTES = 64 << 10


def model_bytes(cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int) -> int:
    """About the memory a model of ``cfg`` takes once built: float32 weights and each layer's overhead."""
    layers = cfg.num_encoder_layers + cfg.num_decoder_layers
    return 4 * parameter_count(cfg, src_vocab_size, tgt_vocab_size) + LAYER_OVERHEAD_BYTES * layers


def check_model_fits(cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int) -> None:
    """Refuse, before allocating anything, a model whose float32 weights and layers alone exceed this machine's
    memory (a --set typo, or a crafted checkpoint's or config.json's sizes meant to take down a server that
    loads it)."""
    memory = _physical_memory()
    count = parameter_count(cfg, src_vocab_size, tgt_vocab_size)
    needed = model_bytes(cfg, src_vocab_size, tgt_vocab_size)
    if memory is not None and needed > memory:
        raise TransformerMTError(
            f"model.d_model {cfg.d_model}, model.ffn_dim {cfg.ffn_dim}, {cfg.num_encoder_layers}+"
            f"{cfg.num_decoder_layers} layers, model.max_positions {cfg.max_positions} and vocabularies of "
            f"{src_vocab_size}/{tgt_vocab_size} pieces make {count:.3g} parameters ({needed / 2**30:.3g} GiB in "
            f"float32 with the layers' own objects), more than this machine's memory ({memory / 2**30:.3g} GiB); "
            f"choose smaller model.* values")


def build_model(cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int, pad_id: int = 0) -> Transformer:
    check_model_fits(cfg, src_vocab_size, tgt_vocab_size)
    return Transformer(cfg, src_vocab_size, tgt_vocab_size, pad_id)
