"""Which language a text is in: py3langid's naive Bayes model (140 languages, shipped in its 4.6 MB wheel).

Chosen over lingua-language-detector (the other well-kept identifier whose model ships in its wheel): on 1,400
sentences of ``../shared/data`` (200 each of German, English, French, Czech and Chinese from Multi30k/3AM, and
German and English news headlines and sentences) both named 1,388 right, but lingua's wheel is 96 MB and it took
26 ms a sentence against py3langid's 0.4 ms on one core. Their misses were alike: short headlines, and Czech
taken for Slovak.

Codes are ISO 639-1 where one exists, as LibreTranslate's clients expect. The model tells the written forms of
Mandarin, Wu and Cantonese apart poorly (a Mandarin sentence often comes out as Wu), and LibreTranslate has one
code for Chinese in simplified script, so the three count as ``zh`` here.
"""

from __future__ import annotations

import threading
from functools import lru_cache

# Written varieties that LibreTranslate's clients know by one code (see the module's docstring).
MERGED_CODES = {"wuu": "zh", "yue": "zh"}
# py3langid's label for text with no language in it (digits, symbols).
NO_LANGUAGE = "zxx"

_load_lock = threading.Lock()


@lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    with _load_lock:  # a 2 s load: two first requests at once must not both pay it
        return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def load() -> None:
    """Load the model now (about 2 s) rather than on the first request."""
    _identifier()


def loaded() -> bool:
    """Whether the model is in memory (calls no longer wait for its 2 s load)."""
    return _identifier.cache_info().currsize > 0


@lru_cache(maxsize=1)
def known_languages() -> frozenset[str]:
    """The codes ``detect_languages`` can answer."""
    return frozenset({MERGED_CODES.get(code, code) for code in _identifier().labels} - {NO_LANGUAGE})


def knows(code: str) -> bool:
    """Whether ``code`` is a language the identifier can name (the demo's "src" is not)."""
    return code in known_languages()


def detect_languages(text: str, top: int | None = 3) -> list[tuple[str, float]]:
    """The ``top`` (None: all) most likely languages of ``text``, best first, each with its probability (0-1).

    Empty when the text holds no language at all (only digits, symbols or white space).
    """
    merged: dict[str, float] = {}
    for code, probability in _identifier().rank(text):
        code = MERGED_CODES.get(code, code)
        merged[code] = merged.get(code, 0.0) + probability
    ranked = sorted(merged.items(), key=lambda item: item[1], reverse=True)
    if not text.strip() or ranked[0][0] == NO_LANGUAGE:
        return []
    return [(code, probability) for code, probability in ranked if code != NO_LANGUAGE][:top]
