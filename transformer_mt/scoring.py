"""Corpus-level BLEU and chrF with sacreBLEU, reported with its signature."""

from __future__ import annotations

from sacrebleu.metrics import BLEU, CHRF

from .errors import TransformerMTError


def default_tokenize(tgt_lang: str) -> str:
    """sacreBLEU's tokenizer for the target language: zh for Chinese, ja-mecab for Japanese, else 13a."""
    lang = tgt_lang.lower().split("-")[0].split("_")[0]
    if lang in ("zh", "cmn", "yue"):
        return "zh"
    if lang in ("ja", "jpn"):
        return "ja-mecab"
    return "13a"


def resolve_tokenize(setting: str, tgt_lang: str) -> str:
    """The config's ``decoding.sacrebleu_tokenize``, with 'auto' resolved for the target language."""
    return default_tokenize(tgt_lang) if setting == "auto" else setting


def check_tokenize(tokenize: str) -> None:
    """Raise the error :func:`score` would give for ``tokenize``, before minutes of decoding, not after."""
    try:
        BLEU(tokenize=tokenize)
    except KeyError:
        raise TransformerMTError(f"--tokenize {tokenize!r} is not a sacreBLEU tokenizer; choose one of "
                                 f"{', '.join(BLEU.TOKENIZERS)}") from None
    except Exception as exc:  # sacrebleu raises plain exceptions for missing optional tokenizers
        raise _unavailable(tokenize, exc) from None


# What makes a sacreBLEU tokenizer available that is not always: an extra's packages, or a model it downloads.
TOKENIZER_FIXES = {"ja-mecab": "pip install 'sacrebleu[ja]'", "ko-mecab": "pip install 'sacrebleu[ko]'"}
DOWNLOADING_TOKENIZERS = ("spm", "flores101", "flores200", "spBLEU-1K")


def _unavailable(tokenize: str, exc: BaseException) -> TransformerMTError:
    """One line for a tokenizer sacreBLEU knows but cannot use here: its reason (sacreBLEU's text spans lines, and
    may start with an empty one), and the fix."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    if tokenize in TOKENIZER_FIXES:
        fix = f"install its packages ({TOKENIZER_FIXES[tokenize]})"
    elif tokenize in DOWNLOADING_TOKENIZERS:
        fix = "run once where sacreBLEU can download its SentencePiece model"
    else:
        fix = "install what it needs"
    return TransformerMTError(f"sacreBLEU tokenizer {tokenize!r} is not available ({reason}); {fix}, or choose "
                              f"another tokenizer (--tokenize or decoding.sacrebleu_tokenize, e.g. 13a or char)")


def score(hypotheses: list[str], references: list[str], tokenize: str = "13a") -> dict:
    """Return {'bleu', 'chrf', 'signature', 'bleu_signature', 'chrf_signature', 'bleu_details'}."""
    if len(hypotheses) != len(references):
        raise TransformerMTError(
            f"{len(hypotheses)} hypotheses but {len(references)} references; both must have one line per sentence"
        )
    if not hypotheses:  # sacreBLEU fails with an IndexError on an empty corpus
        raise TransformerMTError("nothing to score: no hypotheses and no references")
    try:
        bleu_metric = BLEU(tokenize=tokenize)
    except Exception as exc:  # sacrebleu raises plain exceptions for missing optional tokenizers
        raise _unavailable(tokenize, exc) from None
    chrf_metric = CHRF()
    bleu = bleu_metric.corpus_score(hypotheses, [references])
    chrf = chrf_metric.corpus_score(hypotheses, [references])
    bleu_signature = str(bleu_metric.get_signature())
    chrf_signature = str(chrf_metric.get_signature())
    return {
        "bleu": bleu.score,
        "chrf": chrf.score,
        "signature": bleu_signature,
        "bleu_signature": bleu_signature,
        "chrf_signature": chrf_signature,
        "bleu_details": str(bleu),
        "num_sentences": len(hypotheses),
    }
