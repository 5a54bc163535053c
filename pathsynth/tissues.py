"""The tissue catalogue: the single source of truth for the 9 PathMNIST classes.

Plays the role of medmnist's ``INFO`` dict for PathSynth: every module (data, classifier, generator,
resolver, quiz, app) reads labels, abbreviations and teaching text from here. Index order and
``label`` strings match ``medmnist.INFO["pathmnist"]["label"]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import UnknownTissueError


@dataclass(frozen=True)
class Tissue:
    index: int
    label: str  # medmnist's label name, verbatim
    abbreviation: str  # NCT-CRC-HE-100K class code
    display_name: str
    description: str  # what a trainee should look for in H&E
    synonyms: tuple[str, ...] = field(default=())  # everyday phrases that mean this tissue
    resolver_phrases: tuple[str, ...] = field(default=())  # teaching and report wording the resolver also knows


TISSUES: tuple[Tissue, ...] = (
    Tissue(
        0, "adipose", "ADI", "Adipose tissue",
        "Large, empty-looking polygonal cells (the fat dissolves during processing) separated by thin pink "
        "membranes, like chicken wire or a honeycomb. Nuclei are few, flat and pushed to the cell edge.",
        ("fat", "fat cells", "adipocytes", "fatty tissue", "lipid", "honeycomb", "chicken wire"),
        ("adipocyte", "fat tissue", "adipose tissue", "fat globules", "fat vacuoles", "large empty cells",
         "white fat", "lipocytes"),
    ),
    Tissue(
        1, "background", "BACK", "Background",
        "No tissue: bare glass or mounting medium, nearly uniform white to pale grey, sometimes with faint "
        "dust or out-of-focus debris. Useful as a negative control.",
        ("empty glass", "blank slide", "no tissue", "glass", "empty", "white space", "slide background"),
        ("blank", "bare glass", "no cells", "empty space", "nothing", "white background", "mounting medium",
         "blank area"),
    ),
    Tissue(
        2, "debris", "DEB", "Debris",
        "Necrotic material: granular pink-purple fragments, karyorrhectic nuclear dust and cell ghosts without "
        "organised architecture, often next to tumour.",
        ("necrosis", "necrotic", "dead cells", "cell debris", "karyorrhexis", "necrotic debris"),
        ("necrotic tissue", "cellular debris", "nuclear dust", "apoptotic debris", "dirty necrosis",
         "dead tissue", "necrotic material"),
    ),
    Tissue(
        3, "lymphocytes", "LYM", "Lymphocytes",
        "Sheets of small, round, dark-blue nuclei with almost no cytoplasm, densely packed: the most purple, "
        "most cellular tile. Seen in lymphoid aggregates and tumour-infiltrating immune cells.",
        ("immune cells", "immune cell infiltrate", "lymphoid", "lymphocytic infiltrate", "inflammation",
         "inflammatory cells", "white blood cells", "lymph node"),
        ("lymphocyte", "t cells", "b cells", "t lymphocytes", "tumour infiltrating lymphocytes",
         "tumor infiltrating lymphocytes", "tils", "lymphoid aggregate", "lymphoid follicle",
         "small round blue cells", "immune infiltrate", "inflammatory infiltrate", "leukocytes"),
    ),
    Tissue(
        4, "mucus", "MUC", "Mucus",
        "Pale blue-grey to light pink, wispy, almost acellular material with a streaky or bubbly texture; "
        "extracellular mucin pools from goblet cells or mucinous carcinoma.",
        ("mucin", "mucin pool", "mucous", "mucinous", "slime", "goblet cell secretion"),
        ("mucin lake", "mucus pool", "extracellular mucin", "mucoid material", "mucinous material"),
    ),
    Tissue(
        5, "smooth muscle", "MUS", "Smooth muscle",
        "Bright pink (eosinophilic) fibres in parallel bundles with elongated, cigar-shaped nuclei with blunt "
        "ends; the muscularis propria of the bowel wall.",
        ("muscle", "muscularis", "muscularis propria", "muscle fibres", "muscle fibers", "myocytes",
         "spindle cells"),
        ("smooth muscle cells", "muscle bundles", "muscle layer", "muscularis mucosae", "leiomyocytes",
         "muscle tissue", "bowel wall muscle"),
    ),
    Tissue(
        6, "normal colon mucosa", "NORM", "Normal colon mucosa",
        "Orderly test-tube-shaped crypts cut in cross-section as round glands, lined by a single layer of "
        "columnar cells with basal nuclei and many pale goblet cells, in a lamina propria.",
        ("normal mucosa", "healthy colon", "normal colon", "crypts", "colonic crypts", "healthy tissue",
         "normal glands", "goblet cells"),
        ("normal epithelium", "benign mucosa", "normal crypts", "healthy mucosa", "benign glands",
         "healthy glands", "colonic mucosa", "normal tissue", "benign colon"),
    ),
    Tissue(
        7, "cancer-associated stroma", "STR", "Cancer-associated stroma",
        "Desmoplastic connective tissue around invasive tumour: pink collagen with scattered spindle "
        "fibroblasts, looser and more disordered than muscle, sometimes with a few inflammatory cells.",
        ("stroma", "tumour stroma", "tumor stroma", "desmoplasia", "desmoplastic stroma", "fibrosis",
         "connective tissue", "fibroblasts", "collagen"),
        ("fibrous tissue", "desmoplastic reaction", "scar tissue", "fibroblast", "tumour associated stroma",
         "tumor associated stroma", "cancer stroma", "reactive stroma", "stromal tissue"),
    ),
    Tissue(
        8, "colorectal adenocarcinoma epithelium", "TUM", "Colorectal adenocarcinoma epithelium",
        "Malignant glands: crowded, irregular and fused glands with stratified, enlarged, hyperchromatic "
        "nuclei, loss of goblet cells and polarity, often with dirty necrosis in the lumen.",
        ("tumour", "tumor", "cancer", "carcinoma", "adenocarcinoma", "tumour glands", "tumor glands",
         "malignant epithelium", "cancer cells", "malignant glands", "colorectal cancer"),
        ("malignant", "cancerous", "cancerous glands", "neoplastic glands", "adenocarcinoma cells", "crc",
         "tumour cells", "tumor cells", "malignant cells", "carcinoma cells", "colon cancer",
         "invasive carcinoma"),
    ),
)

NUM_TISSUES = len(TISSUES)
LABELS: tuple[str, ...] = tuple(t.label for t in TISSUES)
ABBREVIATIONS: tuple[str, ...] = tuple(t.abbreviation for t in TISSUES)
DISPLAY_NAMES: tuple[str, ...] = tuple(t.display_name for t in TISSUES)
TISSUE_INDICES: tuple[int, ...] = tuple(t.index for t in TISSUES)


def _norm(text: str) -> str:
    return " ".join(str(text).lower().replace("_", " ").replace("-", " ").split())


_LOOKUP: dict[str, int] = {}
for _t in TISSUES:
    for _key in (_t.label, _t.abbreviation, _t.display_name, str(_t.index)):
        _LOOKUP[_norm(_key)] = _t.index


def tissue_index(key: int | str) -> int:
    """Index of a tissue given its index, medmnist label, abbreviation or display name (case-insensitive).

    Raises :class:`~pathsynth.errors.UnknownTissueError` (a ``KeyError`` and a ``ValueError``) naming the
    accepted names for anything else; free text goes through :mod:`pathsynth.resolver` instead.
    """
    if isinstance(key, bool):
        raise UnknownTissueError(f"unknown tissue {key!r}")
    if isinstance(key, int) or (hasattr(key, "__index__") and not isinstance(key, str)):
        index = int(key)
        if index in TISSUE_INDICES:
            return index
        raise UnknownTissueError(f"tissue index {index} out of range 0-{NUM_TISSUES - 1}")
    found = _LOOKUP.get(_norm(key))
    if found is None:
        raise UnknownTissueError(f"unknown tissue {key!r}; use an index 0-{NUM_TISSUES - 1}, a label "
                                 f"({', '.join(LABELS)}) or one of {', '.join(ABBREVIATIONS)}")
    return found


def get_tissue(key: int | str) -> Tissue:
    """The catalogue entry for an index, label, abbreviation or display name."""
    return TISSUES[tissue_index(key)]


def check_against_medmnist() -> bool:
    """True when this catalogue's labels match medmnist's INFO (medmnist is the source of truth)."""
    from medmnist import INFO

    labels = INFO["pathmnist"]["label"]
    return [labels[str(i)] for i in range(len(labels))] == list(LABELS)  # medmnist's own keys


# ------------------------------------------------------------------------------------- confusable pairs
# Tissues trainees mix up at this scale (a tile is 112 µm across at every PathMNIST size: one lymphocyte nucleus is
# about 7 µm, 1-2 px at 28 px and 14 px at 224; one fat cell can fill the tile). Each text says how to tell the two
# apart in such a tile, in micrometres, so it holds at every tile size (pathsynth.images.microns_per_pixel).

@dataclass(frozen=True)
class ConfusablePair:
    first: int
    second: int
    text: str  # the distinguishing features of one versus the other, in a 112 µm tile


CONFUSABLE_PAIRS: tuple[ConfusablePair, ...] = (
    ConfusablePair(
        7, 5,
        "Stroma versus smooth muscle: both are pink and spindly. Muscle is dense, evenly bright pink and "
        "homogeneous, its fibres run in parallel across the whole tile, with evenly spaced cigar-shaped nuclei "
        "with blunt ends (cut across, the bundles show round profiles with central nuclei). Desmoplastic stroma "
        "is paler and patchier: wavy, haphazard collagen strands with pale gaps between them, fewer and thinner, "
        "tapered nuclei pointing in different directions, and often a stray inflammatory cell or tumour gland.",
    ),
    ConfusablePair(
        2, 4,
        "Debris versus mucus: both lack architecture. Debris (necrosis) is granular, a mix of pink and purple, "
        "speckled with dark dots of broken nuclei (karyorrhexis, a few µm each) and ghost outlines of dead cells. "
        "Mucus is pale blue-grey to faint pink, smooth, wispy or stringy, and almost free of dots; a few floating "
        "cells at most.",
    ),
    ConfusablePair(
        6, 8,
        "Normal mucosa versus adenocarcinoma: at 112 µm a tile shows one or two gland profiles. Normal crypts "
        "are round and evenly sized, with one neat row of small dark nuclei at the base and pale goblet cells "
        "(clear bubbles) filling the lining, separated by loose lamina propria. Tumour glands are crowded, "
        "irregular or fused, lined by tall, enlarged, dark nuclei stacked in several layers up towards the lumen, "
        "with few or no goblet cells and often necrotic debris inside: the tile looks more purple and disordered.",
    ),
    ConfusablePair(
        3, 2,
        "Lymphocytes versus debris: both are dark and dotty. Lymphocytes are uniform: small round dark-blue "
        "nuclei of one size (about 7 µm), evenly packed, with hardly any pink between them. Debris is irregular: "
        "dots of varying size and shape (nuclear dust) scattered in granular pink material, with no even spacing "
        "and cell ghosts instead of intact cells.",
    ),
    ConfusablePair(
        0, 1,
        "Adipose versus background: both are mostly white. A fat cell is 50-150 µm wide, so a tile may show only "
        "one or two of them: look for thin, sharp pink membranes curving around the empty spaces (chicken wire), "
        "sometimes a flattened nucleus squeezed against one. Background has no membranes at all: a uniform white "
        "to pale grey field, at most a faint colour gradient, dust or an out-of-focus smudge.",
    ),
)


def confusable_pair(a: int | str, b: int | str) -> ConfusablePair | None:
    """The catalogue's pair for two tissues (either order), or None when they are not a listed pair."""
    found = {tissue_index(a), tissue_index(b)}
    return next((pair for pair in CONFUSABLE_PAIRS if {pair.first, pair.second} == found), None)


def confusable_with(tissue: int | str) -> tuple[int, ...]:
    """The tissues listed as confusable with ``tissue``."""
    index = tissue_index(tissue)
    return tuple(p.second if p.first == index else p.first for p in CONFUSABLE_PAIRS if index in (p.first, p.second))
