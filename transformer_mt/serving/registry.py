"""The models a server serves, by language pair: which pairs there are, loading on first use, routing, pivoting.

``transformer-mt serve --model RUN`` serves one model: a registry of one, loaded before the server starts and
never unloaded. ``serve --models-dir DIR`` serves every run directory (and CTranslate2 export) found directly
under DIR:

- each model's pair is read from its config (``data.src_lang`` -> ``data.tgt_lang``), without loading it; an
  imported multilingual model (OPUS-MT's ``>>xx<<`` tokens) serves each of its targets, a run trained here on
  several directions (data.train_corpora) each direction it was trained for. Two models for one pair: the first
  by folder name serves it (the other is named in the log);
- a model is loaded on its first request, in a worker thread; beyond ``max_loaded`` loaded models the least
  recently used is unloaded (what it has queued is decoded first). A model that fails to load answers a 503
  naming the pair and the error, and is tried again a minute later;
- each loaded model has its own :class:`BatchingTranslator`, so requests for different pairs never wait for each
  other's batches;
- **pivoting**: where no model translates source -> target but source -> X and X -> target exist, a request is
  translated into X and the result into target (X is English where it can be), both steps through the models'
  batchers. Off with ``pivot=False`` (``--no-pivot``).

Safety: a run directory under DIR that is a symbolic link is used only when the link and the folder it leads to
belong to the user running the server (or root); files are then read through ``safe_files``' resolver, as for
``--model``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..config import load_config
from ..data.tokenizer import load_tokenizers
from ..decoding.translator import Translator
from ..errors import TransformerMTError
from .batching import BatchingTranslator, DecodeOptions, QueueFull, ShuttingDown
from .limits import ApiError

log = logging.getLogger("transformer_mt.serving")

MAX_LOADED_MODELS = 64  # --max-loaded-models at most (each is a model in memory and a decoding thread)
MAX_MODELS = 1000  # folders under --models-dir at most
RETRY_LOAD_S = 60.0  # a model that failed to load is tried again after this long
EXPORT_INFO = "export.json"  # interop.ctranslate2_export.EXPORT_INFO (not imported: it needs ctranslate2)
PIVOT_FIRST = ("en",)  # pivot languages tried first


@dataclass
class ServedModel:
    """One model and what is known of it without loading it."""

    name: str  # its folder's name (shown to clients: never the server's paths)
    path: Path | None
    source: str
    targets: list[str]
    multilingual: bool  # picks its target by a >>xx<< token
    engine: str  # "torch" or "ctranslate2"
    beam_size: int
    length_penalty: float
    split_sentences: bool
    aligns: bool  # its translations carry word alignments (HTML inline tags, documents)
    config_target: str = ""  # its config's data.tgt_lang (a multilingual model's targets are its >>xx<< tokens)
    # The (source, target) pairs it serves, where they are not source -> each of targets: a run trained on several
    # directions (data.train_corpora) serves those it was trained for.
    pairs: list[tuple[str, str]] = field(default_factory=list)

    def served_pairs(self) -> list[tuple[str, str]]:
        return self.pairs or [(self.source, target) for target in self.targets]


@dataclass(frozen=True)
class Step:
    model: ServedModel
    source: str
    target: str

    @property
    def language(self) -> str | None:
        """What the translator is told about the target: a multilingual model's choice, else nothing."""
        return self.target if self.model.multilingual else None


@dataclass(frozen=True)
class Route:
    """How source -> target is translated: one step (direct), or two through ``via`` (pivoted)."""

    source: str
    target: str
    steps: tuple[Step, ...]

    @property
    def pivot(self) -> str | None:
        return self.steps[0].target if len(self.steps) > 1 else None

    @property
    def first(self) -> ServedModel:
        return self.steps[0].model

    @property
    def last(self) -> ServedModel:
        return self.steps[-1].model


@dataclass
class _Slot:
    model: ServedModel
    load_lock: threading.Lock = field(default_factory=threading.Lock)
    batcher: BatchingTranslator | None = None
    translator: object | None = None
    last_used: int = 0
    failed: tuple[float, str] | None = None  # (when, why) of the last failed load


class ModelRegistry:
    """The served models by pair; thread-safe. ``start`` makes the batchers (the server's lifespan), ``close``
    drains and stops them."""

    def __init__(self, models: list[ServedModel], loader: Callable[[ServedModel], object], *, max_loaded: int = 4,
                 pivot: bool = True, preloaded: dict[str, object] | None = None):
        if not models:
            raise TransformerMTError("no model to serve")
        if not 1 <= max_loaded <= MAX_LOADED_MODELS:
            raise TransformerMTError(f"--max-loaded-models {max_loaded}: give 1 to {MAX_LOADED_MODELS}")
        self.models = models
        self.loader = loader
        self.max_loaded = max_loaded
        self.slots = {model.name: _Slot(model) for model in models}
        self.preloaded = dict(preloaded or {})  # name -> translator, never unloaded (the one model of --model)
        for name, translator in self.preloaded.items():
            self.slots[name].translator = translator
        self.lock = threading.Lock()
        self.clock = 0
        self.batching = {"max_batch_sentences": 64, "max_wait_ms": 2.0, "max_queue_sentences": 2048}
        self.accepting = False
        self.retired_sizes: list[int] = []  # batch sizes of unloaded models' batchers (for /v1/info)
        self.direct: dict[tuple[str, str], Step] = {}
        for model in models:
            for source, target in model.served_pairs():
                key = (source.lower(), target.lower())
                if key in self.direct:
                    log.warning("%s and %s both translate %s -> %s; %s serves it", self.direct[key].model.name,
                                model.name, source, target, self.direct[key].model.name)
                    continue
                self.direct[key] = Step(model, source, target)
        self.pivoted: dict[tuple[str, str], Route] = {}
        if pivot:
            self._find_pivots()

    @classmethod
    def of_one(cls, translator, model: ServedModel) -> ModelRegistry:
        """The registry of ``serve --model``: one model, already loaded."""
        return cls([model], lambda _: translator, max_loaded=1, pivot=False, preloaded={model.name: translator})

    def _find_pivots(self) -> None:
        sources = {s for s, _ in self.direct}
        targets = {t for _, t in self.direct}
        for source in sources:
            for target in targets:
                if source == target or (source, target) in self.direct:
                    continue
                vias = sorted({t for s, t in self.direct if s == source and (t, target) in self.direct
                               and t != target}, key=lambda code: (code not in PIVOT_FIRST, code))
                if vias:
                    first, second = self.direct[(source, vias[0])], self.direct[(vias[0], target)]
                    self.pivoted[(source, target)] = Route(first.source, second.target, (first, second))

    # ------------------------------------------------------------------------------------------ what is served

    @property
    def many(self) -> bool:
        """More than one model, or one of several sources (the server of one model from one source keeps its
        one-pair answers and messages)."""
        return len(self.models) > 1 or len({source.lower() for source, _ in self.direct}) > 1

    def sources(self) -> list[str]:
        return sorted({step.source for step in self.direct.values()}, key=str.lower)

    def targets_of(self, source: str) -> list[str]:
        """What ``source`` translates into, directly first, then pivoted."""
        key = source.lower()
        direct = [step.target for (s, _), step in self.direct.items() if s == key]
        return direct + sorted(route.target for (s, _), route in self.pivoted.items() if s == key)

    def pivots_of(self, source: str) -> dict[str, str]:
        """The targets of ``source`` reached through another language: target -> the language in between."""
        return {route.target: route.pivot for (s, _), route in self.pivoted.items() if s == source.lower()}

    def pairs(self) -> list[str]:
        """Every pair as "src -> tgt" (pivoted ones marked), for messages."""
        shown = [f"{step.source} -> {step.target}" for step in self.direct.values()]
        return shown + [f"{r.source} -> {r.target} (via {r.pivot})" for r in self.pivoted.values()]

    def route(self, source: str, target: str) -> Route | None:
        key = (source.lower(), target.lower())
        if key in self.direct:
            step = self.direct[key]
            return Route(step.source, step.target, (step,))
        return self.pivoted.get(key)

    def info(self) -> list[dict]:
        with self.lock:
            return [{"name": slot.model.name, "source": slot.model.source, "targets": slot.model.targets,
                     "engine": slot.model.engine, "loaded": slot.batcher is not None or slot.model.name in self.preloaded,
                     **({"pairs": [f"{s}-{t}" for s, t in slot.model.pairs]} if slot.model.pairs else {})}
                    for slot in self.slots.values()]

    # ------------------------------------------------------------------------------------------ running

    def start(self, max_batch_sentences: int, max_wait_ms: float, max_queue_sentences: int) -> None:
        """Accept requests; the preloaded model gets its batcher now."""
        self.batching = {"max_batch_sentences": max_batch_sentences, "max_wait_ms": max_wait_ms,
                         "max_queue_sentences": max_queue_sentences}
        with self.lock:
            self.accepting = True
            for name, translator in self.preloaded.items():
                self.slots[name].batcher = self._new_batcher(translator)

    def _new_batcher(self, translator) -> BatchingTranslator:
        return BatchingTranslator(translator, self.batching["max_batch_sentences"], self.batching["max_wait_ms"],
                                  self.batching["max_queue_sentences"])

    def close(self) -> None:
        """Stop accepting; decode what is queued on every model, then stop their threads."""
        with self.lock:
            self.accepting = False
            batchers = [slot.batcher for slot in self.slots.values() if slot.batcher is not None]
        for batcher in batchers:
            batcher.close()

    def batchers(self) -> list[BatchingTranslator]:
        with self.lock:
            return [slot.batcher for slot in self.slots.values() if slot.batcher is not None]

    def batch_sizes(self) -> list[int]:
        with self.lock:
            return self.retired_sizes + [size for slot in self.slots.values() if slot.batcher is not None
                                         for size in slot.batcher.batch_sizes]

    def loaded(self, name: str) -> bool:
        with self.lock:
            return self.slots[name].batcher is not None

    def _load(self, slot: _Slot, pair: str) -> None:
        """Load ``slot``'s model if it is not (in the calling worker thread); unload the least recently used
        beyond max_loaded."""
        with slot.load_lock:
            with self.lock:
                if slot.batcher is not None or not self.accepting:
                    return
            if slot.failed is not None and time.monotonic() - slot.failed[0] < RETRY_LOAD_S:
                raise ApiError(503, f"the model for {pair} ({slot.model.name}) cannot be loaded: {slot.failed[1]}",
                               {"Retry-After": str(int(RETRY_LOAD_S))})
            try:
                translator = slot.translator or self.loader(slot.model)
            except Exception as exc:  # noqa: BLE001 -- any failure is this model's, answered to its requests
                why = str(exc) if isinstance(exc, TransformerMTError) else f"{type(exc).__name__}: {exc}"
                log.error("cannot load %s (%s): %s", slot.model.name, pair, why)
                # The reason stays in the server's log: it names the server's own paths, never shown to clients.
                slot.failed = (time.monotonic(), "the server's log says why")
                raise ApiError(503, f"the model for {pair} ({slot.model.name}) cannot be loaded: {slot.failed[1]}",
                               {"Retry-After": str(int(RETRY_LOAD_S))}) from None
            slot.failed = None
            retiring = []
            with self.lock:
                if not self.accepting:
                    return
                slot.batcher = self._new_batcher(translator)
                self.clock += 1
                slot.last_used = self.clock
                loaded = sorted((s for s in self.slots.values() if s.batcher is not None and s is not slot
                                 and s.model.name not in self.preloaded), key=lambda s: s.last_used)
                while loaded and len(loaded) + 1 > self.max_loaded:
                    old = loaded.pop(0)
                    retiring.append(old.batcher)
                    self.retired_sizes += old.batcher.batch_sizes
                    old.batcher, old.translator = None, None
            for batcher in retiring:  # what they hold queued is decoded, then the model goes
                threading.Thread(target=batcher.close, name="transformer-mt-unload", daemon=True).start()

    def submit(self, step: Step, sentences: list[str], options: DecodeOptions, prefixes=None, constraints=None):
        """Queue ``sentences`` on ``step``'s model (None when it is not loaded: load it, then try again)."""
        slot = self.slots[step.model.name]
        with self.lock:
            if not self.accepting:
                raise ShuttingDown("the server is shutting down")
            if slot.batcher is None:
                return None
            self.clock += 1
            slot.last_used = self.clock
            # Under the lock: an unloading cannot close this batcher between the look and the submit.
            return slot.batcher.submit(sentences, options, prefixes, constraints)

    async def decode_step(self, step: Step, sentences: list[str], options: DecodeOptions, prefixes=None,
                          constraints=None) -> list:
        options = replace(options, target_language=step.language)
        pair = f"{step.source} -> {step.target}"
        for _ in range(100):  # with max_loaded 1 and busy pairs, a model may be unloaded just after loading
            try:
                future = self.submit(step, sentences, options, prefixes, constraints)
            except QueueFull as exc:
                raise ApiError(503, f"the server is busy: {exc}; retry shortly", {"Retry-After": "1"}) from None
            except ShuttingDown as exc:
                raise ApiError(503, str(exc), {"Retry-After": "5"}) from None
            if future is not None:
                try:
                    return await asyncio.wrap_future(future)
                except TransformerMTError as exc:
                    raise ApiError(400, str(exc)) from None
            await asyncio.to_thread(self._load, self.slots[step.model.name], pair)
        raise ApiError(503, f"the model for {pair} is loaded and unloaded in turn (too many pairs asked at once "
                            f"for --max-loaded-models {self.max_loaded}); retry shortly", {"Retry-After": "1"})

    async def decode(self, route: Route, sentences: list[str], options: DecodeOptions, prefixes=None,
                     constraints=None) -> list:
        """Translate along ``route``: a pivoted route translates into its pivot language (best translation,
        without alignment), then that into the target with the request's options, prefixes and terms."""
        if len(route.steps) == 1:
            return await self.decode_step(route.steps[0], sentences, options, prefixes, constraints)
        first, second = route.steps
        middle = await self.decode_step(first, sentences, DecodeOptions(options.beam_size, options.length_penalty, 1))
        return await self.decode_step(second, [result[0].text for result in middle], options, prefixes, constraints)


# ---------------------------------------------------------------------------------------------- --models-dir

def _trusted(uid: int) -> bool:
    return uid in (os.geteuid(), 0)


def model_folders(models_dir) -> list[Path]:
    """The folders directly under ``models_dir`` that hold a run (config.yaml) or an export (export.json); a
    symbolic link is followed only when it and its folder are the user's own (or root's)."""
    root = Path(models_dir)
    try:
        info = os.stat(root)
    except OSError as exc:
        raise TransformerMTError(f"--models-dir {models_dir}: {exc.strerror.lower()}; give a folder of run "
                                 f"directories") from None
    if not stat.S_ISDIR(info.st_mode):
        raise TransformerMTError(f"--models-dir {models_dir} is not a folder; give a folder of run directories")
    try:
        names = sorted(os.listdir(root))
    except OSError as exc:
        raise TransformerMTError(f"--models-dir {models_dir} cannot be read: {exc.strerror}") from None
    folders = []
    for name in names:
        if name.startswith("."):
            continue
        path = root / name
        try:
            link = os.lstat(path)
            if stat.S_ISLNK(link.st_mode):
                target = os.stat(path)
                if not _trusted(link.st_uid) or not _trusted(target.st_uid):
                    log.warning("%s is a symbolic link to a folder of another user (or one another user made); "
                                "it is not served", path)
                    continue
            elif not stat.S_ISDIR(link.st_mode):
                continue
            folder = os.stat(path)
            if not stat.S_ISDIR(folder.st_mode):
                continue
        except OSError:
            continue
        # A folder another user made (in a shared --models-dir), or one every user may write into, holds what
        # they chose: it would serve their model (taking over a pair that sorts after it). As a foreign link is.
        if not _trusted(folder.st_uid) or folder.st_mode & stat.S_IWOTH:
            log.warning("%s is a folder of another user, or one every user may write into; it is not served",
                        path)
            continue
        if (path / "config.yaml").is_file() or (path / EXPORT_INFO).is_file():
            folders.append(path)
    if len(folders) > MAX_MODELS:
        raise TransformerMTError(f"--models-dir {models_dir} holds {len(folders)} models; at most {MAX_MODELS} "
                                 f"are served")
    return folders


def describe_translator(translator, name: str, split_sentences: bool | None = None) -> ServedModel:
    """The ServedModel of a loaded translator (``serve --model``; tests pass wrappers without tokenizers)."""
    config = translator.config
    source_tokenizer = getattr(translator, "src_tokenizer", None)
    codes = source_tokenizer.language_codes() if source_tokenizer is not None else []
    source, targets, multilingual, pairs = _languages(config, codes)
    return ServedModel(name, None, source, targets, multilingual,
                       "torch" if isinstance(translator, Translator) else "ctranslate2",
                       config.decoding.beam_size, config.decoding.length_penalty,
                       config.decoding.split_sentences if split_sentences is None else split_sentences,
                       isinstance(translator, Translator), "" if pairs else config.data.tgt_lang, pairs)


def _languages(config, codes: list[str]) -> tuple[str, list[str], bool, list[tuple[str, str]]]:
    """A model's source, targets, whether a >>xx<< token picks its target, and the pairs it serves where they are
    not source -> each target: an imported model's from its vocabulary's ``codes``, a run's from its config."""
    if codes:
        return config.data.src_lang, [code[2:-2] for code in codes], True, []
    if config.data.multilingual():  # a run trained here on several directions: those, and only those
        directions = config.data.directions()
        return directions[0][0], config.data.target_languages(), True, directions
    return config.data.src_lang, [config.data.tgt_lang], False, []


def describe_folder(path: Path, split_sentences: bool | None = None, decoding: dict | None = None) -> ServedModel:
    """The ServedModel of a run directory or CTranslate2 export, read from its config.yaml (and, for an imported
    multilingual model, its vocabulary's >>xx<< tokens) without loading the model. ``decoding``: the command
    line's decoding settings (beam_size, length_penalty) over the config's."""
    config = load_config(path / "config.yaml", environment=False)  # by descriptor, never the environment
    codes: list[str] = []
    if config.tokenizer.vocabulary != "sentencepiece":
        source_tokenizer, _ = load_tokenizers(path, False, config.tokenizer.vocabulary)
        codes = source_tokenizer.language_codes()
    for key, value in (decoding or {}).items():
        if value is not None:
            setattr(config.decoding, key, value)
    export = (path / EXPORT_INFO).is_file()
    source, targets, multilingual, pairs = _languages(config, codes)
    for code in (config.data.src_lang, config.data.tgt_lang, *(code for pair in pairs for code in pair)):
        if not isinstance(code, str) or not code or len(code) > 20 or not code.replace("-", "").replace("_", "").isalnum():
            raise TransformerMTError(f"{path}: language code {code!r} in its config.yaml is not a language code")
    return ServedModel(path.name, path, source, targets, multilingual, "ctranslate2" if export else "torch",
                       config.decoding.beam_size, config.decoding.length_penalty,
                       config.decoding.split_sentences if split_sentences is None else split_sentences, not export,
                       "" if pairs else config.data.tgt_lang, pairs)
