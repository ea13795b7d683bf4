"""Translate texts (paragraphs, documents, HTML) rather than single sentences: the one composition
that ``transformer-mt translate``, ``evaluate`` and ``Translator.translate_text`` share.

    translate_texts(translator, ["One sentence. Another one.\\n\\nA paragraph."])
    translate_texts(translator, ['<p>The <b>big</b> cat.</p>'], format="html")

Each text is cut into sentences (text/segment.py, text/html.py), the sentences of all texts are
translated in ONE ``translate()`` call, so that its length sorting and batching work across texts, and
each text is put back together in its own shape. A text that is one sentence costs one sentence
segmentation more than ``translate()`` (microseconds); the decoding is the same.
"""

from __future__ import annotations

import unicodedata

from ..errors import TransformerMTError
from ..text.segment import segment_text
from .alignment import WORD_START, piece_words

FORMATS = ("text", "html")
# What translate() is asked for when inline HTML tags are to be placed; html_word_pairs() turns each
# result into the pairs SegmentedHtml.join() takes (the server's batches do the same).
HTML_ALIGNMENT = {"return_alignment": True, "alignment_unit": "pieces"}
# translate() options that change what it returns (a text gets one translation back), or are given per sentence
# (``constraints``: a glossary, which is matched in each sentence, is the way to give terms for texts).
NOT_FOR_TEXTS = ("nbest", "return_scores", "return_alignment", "alignment_unit", "constraints")


def check_format(format: str) -> str:
    if format not in FORMATS:
        raise TransformerMTError(f"unknown format {format!r}; use {' or '.join(FORMATS)}")
    return format


def translate_texts(translator, texts: list[str], format: str = "text", split_sentences: bool | None = None,
                    paragraphs: bool = False, **options) -> list[str]:
    """Translate each text of ``texts`` (plain text, or an HTML document or fragment with
    ``format="html"``) and return one translation per text, in the text's shape.

    ``split_sentences`` (default: the run's decoding.split_sentences) cuts each line of a text (each
    block of an HTML document) into sentences of the run's source language; False translates each
    line (block) whole. ``translator`` is a :class:`~transformer_mt.decoding.translator.Translator`
    (inline HTML tags are placed by its word alignments) or anything with its ``translate()`` and
    ``config`` (a CTranslate2Translator: inline tags placed by relative position). ``options`` are
    ``translate()``'s decoding options (beam_size, length_penalty, batch_size, ...); ``prefix`` (format
    text: a text, or a list with one per text) is what the translation of each text starts with: the prefix
    of its first sentence. ``paragraphs=True`` (format text) translates each hard-wrapped paragraph whole
    and wraps its translation at the source's width (text/segment.py's wrapped_paragraphs).
    """
    if isinstance(texts, str):
        raise TypeError("translate_text() takes a list of texts; wrap a single text in a list")
    check_format(format)
    _drop_sentence_options(options, NOT_FOR_TEXTS, "translate_text() gives one translation per text")
    data = translator.config.data
    if split_sentences is None:
        split_sentences = translator.config.decoding.split_sentences
    if format == "text":
        segmented = [segment_text(text, data.src_lang, split_sentences, paragraphs=paragraphs) for text in texts]
    else:
        from ..text.html import segment_html  # html5lib and its tree: 0.1 s of import that plain text never needs

        segmented = [segment_html(text, data.src_lang, split_sentences) for text in texts]
    sentences = [sentence for one in segmented for sentence in one.sentences]
    if options.get("prefix") is not None:
        options["prefix"] = _first_sentence_prefixes(options["prefix"], segmented, format)
    translations, alignments = _translate_sentences(
        translator, sentences, format == "html" and any(one.has_inline_tags for one in segmented), options)
    joined = []
    position = 0
    for one in segmented:
        own = slice(position, position + len(one.sentences))
        position = own.stop
        if format == "text":
            joined.append(one.join(translations[own], data.tgt_lang))
        else:
            joined.append(one.join(translations[own], alignments[own] if alignments is not None else None,
                                   data.tgt_lang))
    return joined


def translate_document(translator, data: bytes, filename: str, split_sentences: bool | None = None,
                       max_chars: int | None = None, **options) -> bytes:
    """Translate a document file's bytes (.txt, .html, .srt, .docx: text/documents.py, by ``filename``'s
    extension) and return the translated file's bytes, its structure kept; inline formats (HTML tags, Word
    runs) are placed by word alignments where ``translator`` gives them. ``options`` are translate()'s
    decoding options; ``max_chars`` bounds the document's text (default: documents.MAX_DOCUMENT_CHARS)."""
    from ..text.documents import segment_document

    _drop_sentence_options(options, NOT_FOR_TEXTS + ("prefix",), "a document gets one translation")
    data_config = translator.config.data
    if split_sentences is None:
        split_sentences = translator.config.decoding.split_sentences
    document = segment_document(data, filename, data_config.src_lang, split_sentences, max_chars)
    translations, alignments = _translate_sentences(translator, document.sentences, document.has_inline_tags, options)
    return document.join(translations, alignments, data_config.tgt_lang)


def _drop_sentence_options(options: dict, names: tuple, why: str) -> None:
    """Refuse (or drop when unset) the translate() options that give several results per sentence."""
    for option in names:
        if options.get(option) not in (None, False, 1):
            raise TransformerMTError(f"{option} is an option of translate(), which translates sentences one by one; "
                                     f"{why}")
        options.pop(option, None)


def _translate_sentences(translator, sentences: list[str], inline_tags: bool, options: dict):
    """The translations of ``sentences`` in one translate() call, and (where inline tags are to be placed and
    ``translator`` aligns) their word pairs; None where tags go by relative position."""
    if not sentences:
        return [], None
    if not (inline_tags and _aligns(translator)):
        return translator.translate(sentences, **options), None
    results = [best for best, *_ in translator.translate(sentences, **HTML_ALIGNMENT, **options)]
    return [result.text for result in results], [html_word_pairs(s, r) for s, r in zip(sentences, results)]


def _first_sentence_prefixes(prefix, segmented: list, format: str) -> list[str]:
    """A prefix per text (one text for all, or a list) as translate()'s prefix per sentence: a text's
    translation starts with its first sentence's."""
    if format != "text":
        raise TransformerMTError("a target prefix is for format 'text'; an HTML translation starts with its markup")
    if isinstance(prefix, str):
        prefix = [prefix] * len(segmented)
    if not isinstance(prefix, (list, tuple)) or len(prefix) != len(segmented):
        count = len(prefix) if isinstance(prefix, (list, tuple)) else "no list of"
        raise TransformerMTError(f"prefix: {count} prefixes for {len(segmented)} texts; give one per text "
                                 f"(\"\" for none) or one text for all")
    return [text_prefix if k == 0 else "" for one, text_prefix in zip(segmented, prefix)
            for k in range(len(one.sentences))]


def _aligns(translator) -> bool:
    """Whether ``translator.translate`` gives word alignments (the PyTorch Translator of one model; an
    ensemble's members attend differently; CTranslate2's attention comes from one layer and head fixed at
    export, see cli.py)."""
    return bool(getattr(translator, "aligns", False))


def html_word_pairs(sentence: str, result) -> list[tuple[int, int]]:
    """The pairs (source word, target word) of an AlignedTranslation with piece pairs, words as text/html.py
    counts them (the whitespace-separated words of the sentence and of the translation, which are
    alignment.py's words), leaving out pairs with a piece that is only punctuation: the decoder attends to
    the source's final full stop at many steps (an attention sink), which would tie words to the sentence's
    last word. None where SentencePiece's normalization changed the number of words (the pairs would
    point at the wrong words)."""
    source_word, source_words = piece_words(result.source_tokens)
    target_word, target_words = piece_words(result.target_tokens)
    if len(source_words) != len(sentence.split()) or len(target_words) != len(result.text.split()):
        return []
    return sorted({(source_word[i], target_word[j]) for i, j in result.alignment
                   if not _is_punctuation(result.source_tokens[i]) and not _is_punctuation(result.target_tokens[j])},
                  key=lambda pair: (pair[1], pair[0]))


def _is_punctuation(piece: str) -> bool:
    text = piece.lstrip(WORD_START)
    return bool(text) and all(unicodedata.category(char).startswith("P") for char in text)
