"""The domains PathSynth teaches, as data: one catalogue per domain in the style of medmnist's ``INFO``.

A :class:`Domain` holds everything the library needs to know about an imaging domain: its medmnist flag, modality,
channels, image size and physical scale, its classes (names, abbreviations, teaching text per scale, resolver
phrases), the pairs trainees confuse, how its images may be augmented and where its data and models live. The
registry, :data:`DOMAINS`, is the one place that lists them; :func:`get_domain` looks one up by flag.

    >>> from pathsynth.domains import get_domain
    >>> xray = get_domain("pneumoniamnist")
    >>> xray.class_index("pneumonia"), xray.num_classes, xray.channels
    (1, 2, 1)

Adding a domain means a catalogue module here, trained models and tests: nothing else names a class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UnknownTissueError
from ..tissues import ConfusablePair, Tissue
from ..tissues import _norm  # the catalogue's one name normalisation, so a domain looks names up as tissues.py does

DEFAULT_DOMAIN = "pathmnist"

# A class of a domain: a tissue in histology, a finding on a film. The fields are the same, so one type serves.
ClassEntry = Tissue


@dataclass(frozen=True)
class Domain:
    flag: str  # medmnist's flag (the key of its INFO), also the domain's id in the CLI, the database and assets
    name: str  # what a user calls it ("Histology", "Chest X-ray")
    modality: str
    class_noun: str  # "tissue", "finding": what one class is called in the UI
    channels: int  # 3 = RGB, 1 = greyscale
    size: int  # the shipped models' image size (px)
    scale: str  # the physical scale of one shipped image, in words
    units_per_pixel: float  # the pixel size at ``size`` px, in ``unit``
    unit: str  # "µm" or "mm"
    classes: tuple[ClassEntry, ...]
    pairs: tuple[ConfusablePair, ...]
    data_env: str  # the settings variable naming a local npz of this domain (else medmnist's cache)
    models: str  # the folder under assets/models holding this domain's models ("" = the top, for histology)
    augmentation: str  # "histology" (dihedral + stain jitter) or "radiograph" (upright: shifts, scale, exposure)
    test_time_views: str  # "dihedral" (8 views: a tile has no up) or "hflip" (2 views: a film does)
    magnified_heading: str = ""
    caution: str = "For education only: not for diagnosis."
    citation: str = ""
    # The free-text resolver's words for this domain (empty: derived from the classes' synonyms).
    examples: tuple[str, ...] = ()  # a few descriptions to suggest when the user typed nothing
    try_words: tuple[str, ...] = ()  # words to suggest when a description matched no class
    filler_words: frozenset[str] = frozenset()  # domain words that say nothing about the class ("film", "cxr")
    nested_phrases_count: bool = False  # does "consolidation" inside a matched "no consolidation" score too?
    image_noun: str = "image"  # what one image is called in feedback ("tile", "film")
    _lookup: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        for entry in self.classes:
            for key in (entry.label, entry.abbreviation, entry.display_name, str(entry.index)):
                self._lookup[_norm(key)] = entry.index

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(c.label for c in self.classes)

    @property
    def display_names(self) -> tuple[str, ...]:
        return tuple(c.display_name for c in self.classes)

    @property
    def abbreviations(self) -> tuple[str, ...]:
        return tuple(c.abbreviation for c in self.classes)

    def class_index(self, key: int | str) -> int:
        """A class's index from its index, medmnist label, abbreviation or display name (case-insensitive);
        :class:`~pathsynth.errors.UnknownTissueError` (a ``KeyError`` and ``ValueError``) names the accepted ones."""
        if isinstance(key, bool):
            raise UnknownTissueError(f"unknown {self.class_noun} {key!r}")
        if isinstance(key, int) or (hasattr(key, "__index__") and not isinstance(key, str)):
            if 0 <= int(key) < self.num_classes:
                return int(key)
            raise UnknownTissueError(f"{self.class_noun} index {int(key)} out of range 0-{self.num_classes - 1}")
        found = self._lookup.get(_norm(key))
        if found is None:
            where = "" if self.flag == DEFAULT_DOMAIN else f" in {self.name}"  # histology's words as tissue_index's
            raise UnknownTissueError(f"unknown {self.class_noun} {key!r}{where}; use an index "
                                     f"0-{self.num_classes - 1}, a label ({', '.join(self.labels)}) or one of "
                                     f"{', '.join(self.abbreviations)}")
        return found

    def get_class(self, key: int | str) -> ClassEntry:
        return self.classes[self.class_index(key)]

    def teaching_text(self, key: int | str, magnified: bool = False) -> str:
        """What to look for in an image of this class at the shipped size; ``magnified`` adds what only a finer
        image shows, under the domain's heading."""
        entry = self.get_class(key)
        if magnified and entry.magnified:
            return f"{entry.description}\n\n{self.magnified_heading}: {entry.magnified}"
        return entry.description

    def confusable_pair(self, a: int | str, b: int | str) -> ConfusablePair | None:
        wanted = {self.class_index(a), self.class_index(b)}
        return next((p for p in self.pairs if {p.first, p.second} == wanted), None)

    def matches_medmnist(self) -> bool:
        """True when the catalogue's labels and channels are medmnist's (medmnist is the source of truth)."""
        from medmnist import INFO

        info = INFO[self.flag]
        return (info["n_channels"] == self.channels
                and [info["label"][str(i)] for i in range(len(info["label"]))] == list(self.labels))


def _registry() -> dict[str, Domain]:
    from .pathmnist import PATHMNIST
    from .pneumoniamnist import PNEUMONIAMNIST

    return {domain.flag: domain for domain in (PATHMNIST, PNEUMONIAMNIST)}


DOMAINS: dict[str, Domain] = _registry()
DOMAIN_FLAGS: tuple[str, ...] = tuple(DOMAINS)


def get_domain(flag: str | Domain | None = None) -> Domain:
    """The domain with this medmnist flag (None: histology, the default); ``ValueError`` names the known ones."""
    if isinstance(flag, Domain):
        return flag
    key = DEFAULT_DOMAIN if flag is None else str(flag).strip().lower()
    if key not in DOMAINS:
        raise ValueError(f"unknown domain {flag!r}; choose one of {', '.join(DOMAIN_FLAGS)}")
    return DOMAINS[key]
