"""Translate with a model exported to CTranslate2 (transformer_mt.interop.ctranslate2_export), like with a Translator.

    from transformer_mt.interop.ct2_translator import CTranslate2Translator
    translator = CTranslate2Translator("runs/demo-ct2")
    translator.translate(["A dog sees the cat."], beam_size=5)

Strings in, strings out; ``translate`` takes the arguments of ``Translator.translate`` (without
``incremental``), defaults from the run's config (``.config``, read from the export's
config.yaml). Sentences are tokenized with the exported SentencePiece model into ids, and the ids
into their pieces, which are CTranslate2's tokens (so unknown text becomes ``<unk>`` exactly as
it becomes id 1 for our model); output pieces go back to ids and through SentencePiece's decoder.

How our decoding (search.py) is mapped onto CTranslate2's, and where they differ:

- Length penalty. Ours divides a finished hypothesis's log-probability by the GNMT penalty
  ((5 + length) / 6) ** alpha, length counting the end token. CTranslate2 divides by
  length ** alpha, length without the end token: another formula. So CTranslate2 is asked for
  raw log-probabilities (``return_end_token`` so the end token is counted as ours counts it) and
  the hypotheses are ranked here with the GNMT penalty. Scores are ours: length-normalised
  log-probabilities, equal to the Translator's up to float rounding of the two engines (~1e-6 in the tests).
- Stopping. Ours waits until beam_size hypotheses have ended (``early_exit=False``, the
  default). CTranslate2 waits for round(beam_size * patience) hypotheses only when a length or
  coverage penalty is set; with length_penalty 0 it exits early. A negligible length penalty
  (``RAW_SCORES_PENALTY``: length ** 1e-12 rounds to 1.0 in float32, so the scores stay raw)
  turns its early exit off; with num_hypotheses = beam_size it then returns the hypotheses that
  ours collects, and the GNMT ranking above picks the same translations. One corner differs:
  ours keeps the first beam_size hypotheses that finish and no more (at the length limit: those
  ending in the end token first, then the cut ones), CTranslate2 keeps every one that finishes
  by the step the search stops and returns the beam_size with the best log-probability. So when
  more than beam_size hypotheses finish by then, typically when the length limit is reached
  after some have ended, the n-best lists can differ, and sometimes the best translation: a cut
  hypothesis with a better log-probability can replace one that ended (tests/test_export.py
  measures where they agree).
- ``early_exit=True`` is only approximated: CTranslate2 (length_penalty 0) stops once its best
  candidate has ended at some step and nbest hypotheses are finished, and it does not stop at
  beam_size finished ones; ours stops when the best candidate ends at the current step (with
  nbest finished) or at beam_size finished. CTranslate2 returns its nbest by log-probability,
  re-ranked here by GNMT, where ours ranks all its finished hypotheses.
- Length limit. Ours is per sentence (max_length_a * source length + max_length_b tokens, the end
  token not counted); CTranslate2's ``max_decoding_length`` is per call, so for beam search each
  call holds sentences with the same limit (equal source lengths): batches are smaller than
  batch_size when a batch would mix lengths. Greedy search decodes whole batches under their
  largest limit and decodes again, alone, the few sentences that did not end within their own.
  ``min_decoding_length=0``: ours may end at the first step
  (CTranslate2's default of 1 forbids an empty translation).
- Padding and the start token are never generated (suppressed, as search.NEVER_GENERATED).
- The exported position table has ``positions`` rows (export.EXPORTED_POSITIONS); CTranslate2
  cannot extend it as our model does, so longer inputs are cut there (with a warning) and the
  output limit is capped there.
- Arithmetic: CTranslate2's kernels round differently from torch's; near-ties can go either way,
  and an int8 (or float16) compute type changes scores and sometimes translations.
- Issue 27's options: ``no_repeat_ngram_size`` is passed through: CTranslate2's option of that name
  blocks the same n-grams, but before its softmax, so the tokens left get higher log-probabilities than
  ours (which, as fairseq's, are not renormalised): scores differ, and so may the ranking. Refused, with
  an error that says why: sampling (CTranslate2's random generator is process-wide, and the calls here
  are split by output length, so a seed would not give the torch engine's reproducibility per batch),
  ``repetition_penalty`` (CTranslate2 penalises logits, divided when positive and multiplied when
  negative; ours multiplies log-probabilities: another formula) and target prefixes (CTranslate2's
  scores leave the prefix's log-probability out, so its hypotheses would be ranked unlike ours).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ..config import Config, load_config
from ..data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer, load_tokenizers
from ..decoding.logits import search_options
from ..decoding.paragraphs import translate_document, translate_texts
from ..decoding.translator import Translation, encode_sentences, resolve_decoding
from ..errors import TransformerMTError
from ..safe_files import read_user_file
from .ctranslate2_export import EXPORT_INFO, MAX_EXPORT_INFO_BYTES, import_ctranslate2

log = logging.getLogger(__name__)

# A length penalty whose factor length ** RAW_SCORES_PENALTY is 1.0 in float32 for every length: it only
# turns off CTranslate2's early exit (which it takes when no penalty is set), the scores stay log-probabilities.
RAW_SCORES_PENALTY = 1e-12


def gnmt_score(log_prob: float, length: int, length_penalty: float) -> float:
    """Our ranking score (search.beam_search): log-probability / ((5 + length) / 6) ** alpha."""
    return log_prob / (((5.0 + length) / 6.0) ** length_penalty)


class CTranslate2Translator:
    """An exported model (directory written by ``export_ctranslate2``) behind Translator's ``translate``."""

    def __init__(self, export_dir, device: str = "cpu", compute_type: str = "default", intra_threads: int = 0):
        """``compute_type``: CTranslate2's (default keeps the exported weight type; int8, float32, ...).
        ``intra_threads``: CPU threads per translation (0: CTranslate2's default)."""
        ctranslate2 = import_ctranslate2()
        self.export_dir = Path(export_dir)
        info_path = self.export_dir / EXPORT_INFO
        if not info_path.is_file():
            raise TransformerMTError(f"{self.export_dir} is not a transformer-mt CTranslate2 export (no {EXPORT_INFO}); "
                                     f"create one with transformer-mt export")
        try:
            self.info = json.loads(read_user_file(info_path, "export info", limit=MAX_EXPORT_INFO_BYTES,
                                                  fix="export the model again").decode("utf-8"))
            self.positions = int(self.info["positions"])
            if self.positions < 1:
                raise ValueError("positions must be at least 1")
            src_name, tgt_name = self.info["source_tokenizer"], self.info["target_tokenizer"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TransformerMTError(f"{info_path} is damaged ({type(exc).__name__}); export the model again") from None
        self.config: Config = load_config(self.export_dir / "config.yaml", environment=False)  # data, not ours
        if self.config.tokenizer.vocabulary != "sentencepiece":  # an imported model's id lists (export copies them)
            self.src_tokenizer, self.tgt_tokenizer = load_tokenizers(self.export_dir, False,
                                                                     self.config.tokenizer.vocabulary)
        else:
            self.src_tokenizer = Tokenizer(self.export_dir / Path(src_name).name)
            self.tgt_tokenizer = (self.src_tokenizer if tgt_name == src_name
                                  else Tokenizer(self.export_dir / Path(tgt_name).name))
        try:
            self.translator = ctranslate2.Translator(str(self.export_dir), device=device, compute_type=compute_type,
                                                     intra_threads=intra_threads)
        except (RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TransformerMTError(f"CTranslate2 cannot load {self.export_dir}: {first}") from None
        self.device = device
        self.compute_type = self.translator.compute_type
        self.never_generated = [[self.tgt_tokenizer.id_to_piece(i)] for i in (PAD_ID, BOS_ID)]

    def translate(self, sentences: list[str], beam_size: int | None = None, nbest: int | None = None,
                  length_penalty: float | None = None, batch_size: int | None = None,
                  max_length_a: float | None = None, max_length_b: int | None = None,
                  early_exit: bool | None = None, return_scores: bool = False, return_alignment: bool = False,
                  alignment_unit: str = "pieces", alignment_layer: int | None = None,
                  target_language: str | None = None, temperature: float | None = None, top_k: int | None = None,
                  top_p: float | None = None, seed: int | None = None, no_repeat_ngram_size: int | None = None,
                  repetition_penalty: float | None = None, prefix: str | list[str] | None = None,
                  glossary=None, constraints: list[list[str]] | None = None):
        """As ``Translator.translate``: a list of strings, with ``nbest`` > 1 a list of ``nbest``-lists,
        with ``return_scores`` for each sentence a list of :class:`Translation` (text, score), best first.
        ``return_alignment`` is refused: CTranslate2 returns the attention of one layer and head chosen
        when the model is exported, not the head-averaged layer that alignments are defined on.
        ``no_repeat_ngram_size`` is CTranslate2's; sampling, ``repetition_penalty``, ``prefix`` and glossaries
        (``glossary``, ``constraints``) are refused (see the module's docstring)."""
        if return_alignment:
            raise TransformerMTError("alignments need the PyTorch engine (--engine torch): CTranslate2 returns "
                                     "the attention of one layer and head fixed at export, not the layer asked for")
        search = search_options(temperature, top_k, top_p, seed, no_repeat_ngram_size, repetition_penalty,
                                self.config.decoding)
        if search.sampling:
            raise TransformerMTError("sampling (--top-k, --top-p, --temperature) needs --engine torch: here "
                                     "CTranslate2's process-wide random generator would not give reproducible samples")
        if search.repetition_penalty != 1.0:
            raise TransformerMTError("--repetition-penalty (decoding.repetition_penalty) needs --engine torch: "
                                     "CTranslate2 penalises logits, not log-probabilities (another formula)")
        if prefix is not None and any(p.strip() for p in ([prefix] if isinstance(prefix, str) else prefix)):
            raise TransformerMTError("a target prefix (--prefix) needs --engine torch: CTranslate2's scores leave "
                                     "the prefix out, so its hypotheses would be ranked unlike the torch engine's")
        if glossary is not None or (constraints is not None and any(constraints)):
            raise TransformerMTError("a glossary (--glossary) needs --engine torch: CTranslate2's search has no lexical "
                                     "constraints, so its terms could not be kept")
        no_repeat = search.no_repeat_ngram_size
        beam_size, nbest, length_penalty, batch_size, max_length_a, max_length_b, early_exit = resolve_decoding(
            self.config, beam_size, nbest, length_penalty, batch_size, max_length_a, max_length_b, early_exit)
        encoded = encode_sentences(sentences, self.src_tokenizer, self.config, target_language)
        too_long = [len(ids) for ids in encoded if len(ids) > self.positions]
        if too_long:
            log.warning("%d input sentence(s) longer than the %d positions of the exported model (longest: %d "
                        "tokens) are cut to %d tokens", len(too_long), self.positions, max(too_long), self.positions)
            encoded = [ids[:self.positions] for ids in encoded]
        # search.length_limits, in the same float32 arithmetic; CTranslate2 cannot go past its position table.
        lengths = torch.tensor([len(ids) for ids in encoded], dtype=torch.float32)
        limits = (lengths * max_length_a + max_length_b).long().clamp(min=1, max=self.positions).tolist()

        scored: list[list[Translation]] = [[Translation("", 0.0)] for _ in sentences]
        order = sorted((i for i, ids in enumerate(encoded) if ids), key=lambda i: len(encoded[i]), reverse=True)
        hypotheses: dict[int, list] = {}
        if beam_size == 1:
            # Greedy search does not depend on the limit until the limit is reached: decode whole
            # batches under their largest limit, and again alone only the sentences that ran past
            # their own limit (exact, and far fewer, smaller calls than one call per limit).
            again = []
            for rows in (order[start:start + batch_size] for start in range(0, len(order), batch_size)):
                results = self._decode([encoded[i] for i in rows], max(limits[i] for i in rows), 1, 1,
                                       length_penalty, early_exit, keep_end=True, no_repeat_ngram_size=no_repeat)
                for i, hyps in zip(rows, results):
                    ids = hyps[0][0]
                    if ids and ids[-1] == EOS_ID and len(ids) - 1 < limits[i]:
                        hypotheses[i] = [(ids[:-1], hyps[0][1])]
                    else:
                        again.append(i)
            order = again
        for rows in self._batches(order, limits, batch_size):
            results = self._decode([encoded[i] for i in rows], limits[rows[0]], beam_size, nbest,
                                   length_penalty, early_exit, no_repeat_ngram_size=no_repeat)
            hypotheses.update(zip(rows, results))
        for i, hyps in hypotheses.items():
            texts = [" ".join(text.splitlines()) for text in self.tgt_tokenizer.decode([h[0] for h in hyps])]
            scored[i] = [Translation(text, score) for text, (_, score) in zip(texts, hyps)]
        if return_scores:
            return scored
        if nbest == 1:
            return [s[0].text for s in scored]
        return [([t.text for t in s] + [""] * nbest)[:nbest] for s in scored]

    def translate_text(self, texts: list[str], format: str = "text", split_sentences: bool | None = None,
                       **options) -> list[str]:
        """Translate texts as ``Translator.translate_text`` does (decoding/paragraphs.py); inline HTML tags
        are placed by relative position: this engine gives no word alignments."""
        return translate_texts(self, texts, format=format, split_sentences=split_sentences, **options)

    def translate_document(self, data: bytes, filename: str, split_sentences: bool | None = None,
                           max_chars: int | None = None, **options) -> bytes:
        """Translate a document file (.txt, .html, .srt, .docx by ``filename``'s extension) and return the
        translated file, its structure and formatting kept (decoding/paragraphs.py, text/documents.py)."""
        return translate_document(self, data, filename, split_sentences=split_sentences, max_chars=max_chars,
                                  **options)

    @staticmethod
    def _batches(order: list[int], limits: list[int], batch_size: int):
        """Runs of ``order`` with one output limit (CTranslate2 has one per call), at most batch_size long."""
        batch: list[int] = []
        for i in order:
            if batch and (len(batch) == batch_size or limits[i] != limits[batch[0]]):
                yield batch
                batch = []
            batch.append(i)
        if batch:
            yield batch

    def _decode(self, sources: list[list[int]], limit: int, beam_size: int, nbest: int, length_penalty: float,
                early_exit: bool, keep_end: bool = False,
                no_repeat_ngram_size: int = 0) -> list[list[tuple[list[int], float]]]:
        """For each source (ids), up to nbest (target ids, score) by our ranking, best first.

        ``keep_end``: the target ids keep a final end token (so the caller sees which ended)."""
        wait_for_beam = beam_size > 1 and not early_exit
        results = self.translator.translate_batch(
            [self.src_tokenizer.id_to_piece(ids) for ids in sources],
            beam_size=beam_size,
            num_hypotheses=beam_size if wait_for_beam else nbest,
            length_penalty=RAW_SCORES_PENALTY if wait_for_beam else 0.0,
            no_repeat_ngram_size=no_repeat_ngram_size,
            max_decoding_length=limit, min_decoding_length=0, max_input_length=0,
            suppress_sequences=self.never_generated, return_end_token=True, return_scores=True)
        ranked = []
        for result in results:
            hyps = []
            for tokens, log_prob in zip(result.hypotheses, result.scores):
                ids = self.tgt_tokenizer.piece_to_id(tokens)
                score = gnmt_score(log_prob, len(ids), length_penalty)  # the end token counts, as in search.py
                hyps.append((ids[:-1] if ids and ids[-1] == EOS_ID and not keep_end else ids, score))
            ranked.append(sorted(hyps, key=lambda h: h[1], reverse=True)[:nbest])
        return ranked
