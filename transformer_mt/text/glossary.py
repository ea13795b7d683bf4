"""Glossaries: a user's own terms (source term -> target term), found in sentences and checked in translations.

Pure text (no torch): the translator turns the target terms of the entries found in a sentence into
constraints of its beam search (decoding/constraints.py).

- A glossary file is TSV (a tab between the two terms) or CSV (a comma; quotes as spreadsheets write them),
  one entry a line, UTF-8; blank lines and lines starting with ``#`` are skipped. A source term given twice is
  an error (which of its targets would be meant?), as DeepL's glossaries have it.
- A source term is found in a sentence as a whole word or phrase, case-insensitively (``casefold``): "Dog" in
  "The dog barks" but not in "dogma". Scripts written without spaces between words (Chinese, Japanese, Thai,
  ...) have no word boundaries to check, so there a term is found wherever its characters are. Where terms
  overlap, the longest wins ("machine translation" before "machine").
- Term use (``evaluate --glossary``): of the entries found in the sources, the share whose target term is found
  (the same way) in the translation.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from dataclasses import dataclass

from ..errors import TransformerMTError

MAX_ENTRIES = 10_000  # a terminology file (DeepL allows more; a server keeps several in memory)
MAX_TERM_CHARS = 200
MAX_TERM_UNITS = 32  # words and marks of one term: a term is a name or a phrase, not a sentence
# Scripts whose words are not separated by spaces: a term's edge there is no word boundary to check.
_UNSPACED = ("CJK", "HIRAGANA", "KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN", "IDEOGRAPHIC")
_UNITS = re.compile(r"\w+|[^\w\s]")
_END = ""  # the key under which a trie node keeps the term that ends there (no unit is empty)


def _unspaced(char: str) -> bool:
    return unicodedata.name(char, "").startswith(_UNSPACED)


def _units(text: str) -> list[tuple[str, bool]]:
    """``text`` (case-folded) as units to compare terms by, each with whether a space comes before it: a run of
    letters and digits of a spaced script is one unit (a whole word), each character of an unspaced script one
    unit (there a term is found wherever its characters are), each other mark one unit."""
    units = []
    folded = text.casefold()  # may be longer than text ("ß" -> "ss"): positions below are the folded text's
    for match in _UNITS.finditer(folded):
        spaced = match.start() == 0 or folded[match.start() - 1].isspace()
        word = match.group(0)
        if not any(_unspaced(char) for char in word):
            units.append((word, spaced))
            continue
        run = ""
        for char in word:
            if _unspaced(char):
                if run:
                    units.append((run, spaced))
                    spaced = False
                    run = ""
                units.append((char, spaced))
                spaced = False
            else:
                run += char
        if run:
            units.append((run, spaced))
    return units


def _is_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _key(term: str) -> str:
    return " ".join(term.casefold().split())


def _path(units: list[tuple[str, bool]]) -> list:
    """A term's keys in the trie: its first unit's text, then each next unit with whether a space precedes it
    (so "C++" is not found in "C + +", and "New York" is in "new   York")."""
    return [units[0][0], *units[1:]]


class TermFinder:
    """Finds any of a set of terms in a text: whole words, any case (compared case-folded: "STRASSE" holds
    "Straße", which a regex's IGNORECASE misses), the longest term where several start at one place.

    The terms are a trie over their units (:func:`_units`), so a text is read once, unit by unit, whatever the
    number of terms: time grows with the text's length times the longest term's units (at most
    ``MAX_TERM_UNITS``), and memory with the terms' total units. (A regex of one alternative per term costs the
    text's length times the number of terms: a glossary of 4,600 long look-alike terms held a server's event
    loop for 100 s on 20,000 characters.)"""

    def __init__(self, terms):
        self.trie: dict = {}
        for term in terms:
            units = _units(term)
            if not units:
                continue
            node = self.trie
            for key in _path(units):
                node = node.setdefault(key, {})
            node.setdefault(_END, term)  # the first of two terms that read alike wins

    def find(self, text: str) -> list[str]:
        """The terms found in ``text`` (as the glossary writes them), each once, in the order they occur."""
        if not self.trie:
            return []
        units = _units(text)
        found: dict[str, None] = {}
        i = 0
        while i < len(units):
            node, longest, end = self.trie.get(units[i][0]), None, i
            j = i + 1
            while node is not None:
                if _END in node:
                    longest, end = node[_END], j
                if j == len(units):
                    break
                node = node.get(units[j])
                j += 1
            if longest is None:
                i += 1
            else:
                found[longest] = None
                i = end
        return list(found)

    @staticmethod
    def holds(text: str, term: str) -> bool:
        return bool(TermFinder([term]).find(text))


@dataclass(frozen=True)
class Glossary:
    """Entries (source term, target term), each source term once (compared case-insensitively)."""

    entries: tuple[tuple[str, str], ...]

    def __post_init__(self):
        object.__setattr__(self, "_targets", {_key(source): target for source, target in self.entries})
        object.__setattr__(self, "_finder", TermFinder(source for source, _ in self.entries))

    def __len__(self) -> int:
        return len(self.entries)

    def matches(self, sentence: str) -> list[tuple[str, str]]:
        """The entries whose source term is in ``sentence``, in the order they occur."""
        return [(source, self._targets[_key(source)]) for source in self._finder.find(sentence)]

    def constraints(self, sentences: list[str]) -> list[list[str]]:
        """Per sentence, the target terms its translation must hold."""
        return [[target for _, target in self.matches(sentence)] for sentence in sentences]

    @classmethod
    def from_entries(cls, entries, where: str = "glossary", lines: list[int] | None = None) -> Glossary:
        """A glossary from ``[[source, target], ...]`` (an API's JSON), checked: two non-empty texts each, no
        source term twice, bounded counts and lengths; errors name ``where`` and the entry (or its line of a
        file: ``lines``, one number per entry)."""

        def named(number: int) -> str:
            return f"line {lines[number - 1]}" if lines else f"entry {number}"

        if not isinstance(entries, (list, tuple)):
            raise TransformerMTError(f"{where} must be a list of [source term, target term] pairs")
        if len(entries) > MAX_ENTRIES:
            raise TransformerMTError(f"{where} has {len(entries):,} entries; at most {MAX_ENTRIES:,} are taken")
        checked: list[tuple[str, str]] = []
        seen: dict[str, int] = {}
        for number, entry in enumerate(entries, 1):
            if (not isinstance(entry, (list, tuple)) or len(entry) != 2
                    or not all(isinstance(term, str) for term in entry)):
                raise TransformerMTError(f"{where}: {named(number)} must be two texts [source term, target term]")
            source, target = (" ".join(term.split()) for term in entry)
            if not all(_is_text(term) for term in entry):  # a lone surrogate ("\ud800") is valid JSON but no text
                raise TransformerMTError(f"{where}: {named(number)} is not valid Unicode text (a lone surrogate)")
            if not source or not target:
                raise TransformerMTError(f"{where}: {named(number)} has an empty term; give both terms")
            if max(len(source), len(target)) > MAX_TERM_CHARS:
                raise TransformerMTError(f"{where}: {named(number)} has a term over {MAX_TERM_CHARS} characters; a "
                                         f"glossary holds terms, not sentences")
            if len(_units(source)) > MAX_TERM_UNITS:
                raise TransformerMTError(f"{where}: {named(number)} has a source term of more than {MAX_TERM_UNITS} "
                                         f"words and marks; a glossary holds terms, not sentences")
            if not _units(source):
                raise TransformerMTError(f"{where}: {named(number)} has a source term without a letter, digit or "
                                         f"mark to find in a sentence")
            if _key(source) in seen:
                raise TransformerMTError(f"{where}: the source term {source!r} is given twice ({named(seen[_key(source)])} "
                                         f"and {named(number)}); keep one")
            seen[_key(source)] = number
            checked.append((source, target))
        return cls(tuple(checked))


def read_glossary(data: bytes, name: str) -> Glossary:
    """A glossary file's bytes (TSV, or CSV when no line holds a tab), checked as :meth:`Glossary.from_entries`
    does; errors name the file and line."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TransformerMTError(f"glossary {name} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1)
             if line.strip() and not line.lstrip().startswith("#")]
    tabbed = any("\t" in line for _, line in lines)
    entries, numbers = [], []
    for number, line in lines:
        if tabbed:
            fields = line.split("\t")
        else:
            try:
                fields = next(csv.reader(io.StringIO(line)))
            except csv.Error as exc:
                raise TransformerMTError(f"glossary {name}, line {number}: {exc}") from None
        if len(fields) != 2:
            separator = "a tab" if tabbed else "a comma (quote a term that holds one)"
            raise TransformerMTError(f"glossary {name}, line {number}: expected a source term and a target term "
                                     f"separated by {separator}, found {len(fields)} field(s)")
        entries.append(fields)
        numbers.append(number)
    return Glossary.from_entries(entries, f"glossary {name}", numbers)


def term_use(glossary: Glossary, sources: list[str], translations: list[str]) -> dict:
    """Of the entries found in the sources, how many have their target term in the translation."""
    finder = glossary._finder
    applicable = used = 0
    for source, translation in zip(sources, translations):
        for _, target in glossary.matches(source):
            applicable += 1
            used += finder.holds(translation, target)
    return {"applicable": applicable, "used": used, "term_use": 100.0 * used / applicable if applicable else None}
