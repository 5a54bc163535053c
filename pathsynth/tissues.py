"""The tissue catalogue: the single source of truth for the 9 PathMNIST classes.

Plays the role of medmnist's ``INFO`` dict for PathSynth: every module (data, classifier, generator,
resolver, quiz, app) reads labels, abbreviations and teaching text from here. Index order and
``label`` strings match ``medmnist.INFO["pathmnist"]["label"]``.

Teaching text comes per scale. ``description`` says only what a whole 28 px tile shows at about 4 µm per pixel
(colour, texture, density, spaces, architecture: a nucleus is a 1-2 px dot there), checked against the real tiles
(tests/test_teaching_scale.py measures each claim); ``magnified`` says what one sees at higher magnification (a
nucleus's shape, chromatin, cell types), shown labelled as such: for finer tiles and "for reading"
(:func:`teaching_text`).
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
    description: str  # what a trainee can see in a 28 px tile (~4 µm per pixel): checkable on that tile
    magnified: str  # what one sees at higher magnification (finer tiles, reading): nuclei, cell types
    synonyms: tuple[str, ...] = field(default=())  # everyday phrases that mean this tissue
    resolver_phrases: tuple[str, ...] = field(default=())  # teaching and report wording the resolver also knows


TISSUES: tuple[Tissue, ...] = (
    Tissue(
        0, "adipose", "ADI", "Adipose tissue",
        "Mostly white, empty-looking space (the brightest tissue tile) divided by thin pink lines that meet at "
        "angles, like chicken wire or a honeycomb. One fat cell is 50-150 µm across, so a tile shows only a few "
        "of these spaces, sometimes a single curved line; hardly any dark dots.",
        "Large polygonal cells that look empty (the fat dissolves during processing), separated by thin pink "
        "membranes. Nuclei are few, flat and pushed to the cell edge.",
        ("fat", "fat cells", "adipocytes", "fatty tissue", "lipid", "honeycomb", "chicken wire"),
        ("adipocyte", "fat tissue", "adipose tissue", "fat globules", "fat vacuoles", "large empty cells",
         "white fat", "lipocytes"),
    ),
    Tissue(
        1, "background", "BACK", "Background",
        "No tissue: a flat, nearly uniform field without any structure (the smoothest tile of all). In "
        "PathMNIST it is most often an even dark purple-grey, sometimes pale pink or white, with at most a few "
        "specks or a soft colour gradient. Useful as a negative control.",
        "Bare glass or mounting medium, or tissue far out of focus: no cells, at most dust or out-of-focus "
        "debris.",
        ("empty glass", "blank slide", "no tissue", "glass", "empty", "white space", "slide background"),
        ("blank", "bare glass", "no cells", "empty space", "nothing", "white background", "mounting medium",
         "blank area"),
    ),
    Tissue(
        2, "debris", "DEB", "Debris",
        "Mostly pink, granular or smudgy material with irregular dark purple specks and blotches scattered "
        "unevenly through it, and no organised structure: no glands, no parallel fibres, no even spacing; "
        "sometimes cracked by white gaps.",
        "Necrotic material: karyorrhectic nuclear dust (fragments of broken nuclei) and ghost outlines of dead "
        "cells in granular eosinophilic debris, often next to tumour (dirty necrosis).",
        ("necrosis", "necrotic", "dead cells", "cell debris", "karyorrhexis", "necrotic debris"),
        ("necrotic tissue", "cellular debris", "nuclear dust", "apoptotic debris", "dirty necrosis",
         "dead tissue", "necrotic material"),
    ),
    Tissue(
        3, "lymphocytes", "LYM", "Lymphocytes",
        "The darkest, most crowded tissue tile: dark purple dots packed evenly over the whole tile (each dot "
        "a small immune cell, about 7 µm: 1-2 px), with tiny white gaps between them and very little pink, a "
        "salt-and-pepper look.",
        "Sheets of small round lymphocytes with dense, dark-blue nuclei and almost no cytoplasm, seen in "
        "lymphoid aggregates and tumour-infiltrating immune cells.",
        ("immune cells", "immune cell infiltrate", "lymphoid", "lymphocytic infiltrate", "inflammation",
         "inflammatory cells", "white blood cells", "lymph node"),
        ("lymphocyte", "t cells", "b cells", "t lymphocytes", "tumour infiltrating lymphocytes",
         "tumor infiltrating lymphocytes", "tils", "lymphoid aggregate", "lymphoid follicle",
         "small round blue cells", "immune infiltrate", "inflammatory infiltrate", "leukocytes"),
    ),
    Tissue(
        4, "mucus", "MUC", "Mucus",
        "Pale lilac to pink-purple material, lighter than tumour and far less crowded than lymphocytes: "
        "smooth, streaky or wavy, with soft folds and sometimes pale bubbles or white gaps; few dark dots and "
        "no glands.",
        "Extracellular mucin: pools of faintly staining (pale blue-grey to lilac in H&E), wispy, almost "
        "acellular material with a few floating cells; from goblet cells or mucinous carcinoma.",
        ("mucin", "mucin pool", "mucous", "mucinous", "slime", "goblet cell secretion"),
        ("mucin lake", "mucus pool", "extracellular mucin", "mucoid material", "mucinous material"),
    ),
    Tissue(
        5, "smooth muscle", "MUS", "Smooth muscle",
        "Pink, streaky tissue whose fibres run in parallel across most of the tile (the most strongly "
        "aligned texture of all), with short dark dashes lying along the fibres; bundles may change direction, "
        "with white clefts between them.",
        "Bright pink (eosinophilic) smooth muscle cells in parallel bundles, with elongated, cigar-shaped "
        "nuclei with blunt ends; the muscularis propria of the bowel wall.",
        ("muscle", "muscularis", "muscularis propria", "muscle fibres", "muscle fibers", "myocytes",
         "spindle cells"),
        ("smooth muscle cells", "muscle bundles", "muscle layer", "muscularis mucosae", "leiomyocytes",
         "muscle tissue", "bowel wall muscle"),
    ),
    Tissue(
        6, "normal colon mucosa", "NORM", "Normal colon mucosa",
        "Orderly glands: round or tube-shaped profiles of even size with a purple rim and a paler centre, "
        "often rows of pale round spots or a white lumen, and loose dotty pink tissue between them. Lighter and "
        "more regular than tumour.",
        "Test-tube-shaped crypts lined by a single layer of columnar cells with small basal nuclei and many "
        "goblet cells (the pale spots), in a lamina propria with scattered inflammatory cells.",
        ("normal mucosa", "healthy colon", "normal colon", "crypts", "colonic crypts", "healthy tissue",
         "normal glands", "goblet cells"),
        ("normal epithelium", "benign mucosa", "normal crypts", "healthy mucosa", "benign glands",
         "healthy glands", "colonic mucosa", "normal tissue", "benign colon"),
    ),
    Tissue(
        7, "cancer-associated stroma", "STR", "Cancer-associated stroma",
        "Pink, wavy strands arranged loosely and patchily, less aligned than muscle, with pale gaps and "
        "scattered dark dots or dashes pointing in different directions; sometimes a small purple cluster of "
        "immune cells.",
        "Desmoplastic connective tissue around invasive tumour: collagen with scattered spindle fibroblasts "
        "with tapered nuclei, looser and more disordered than muscle, sometimes with inflammatory cells.",
        ("stroma", "tumour stroma", "tumor stroma", "desmoplasia", "desmoplastic stroma", "fibrosis",
         "connective tissue", "fibroblasts", "collagen"),
        ("fibrous tissue", "desmoplastic reaction", "scar tissue", "fibroblast", "tumour associated stroma",
         "tumor associated stroma", "cancer stroma", "reactive stroma", "stromal tissue"),
    ),
    Tissue(
        8, "colorectal adenocarcinoma epithelium", "TUM", "Colorectal adenocarcinoma epithelium",
        "Dense pink-purple tissue, the darkest tile after lymphocytes: crowded, irregular or fused glands seen "
        "as thick dark purple bands around slit-like or irregular white spaces; darker than normal mucosa, with "
        "fewer pale spaces and no orderly round glands; sometimes debris in the spaces.",
        "Malignant glands lined by stratified, enlarged, hyperchromatic nuclei with loss of goblet cells and "
        "of polarity, often with dirty necrosis in the lumen.",
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
# about 7 µm, 1-2 px at 28 px and 14 px at 224; one fat cell can fill the tile). ``text`` says how to tell the two
# apart in a 28 px tile (colour, texture, density, spaces), ``magnified`` what tells them apart at higher
# magnification (pathsynth.images.microns_per_pixel gives a tile's scale; :func:`pair_text` picks).

@dataclass(frozen=True)
class ConfusablePair:
    first: int
    second: int
    text: str  # how to tell one from the other in a 28 px tile (~4 µm per pixel): checkable on that tile
    magnified: str  # what tells them apart at higher magnification (finer tiles, reading)


CONFUSABLE_PAIRS: tuple[ConfusablePair, ...] = (
    ConfusablePair(
        7, 5,
        "Stroma versus smooth muscle: both are pink and streaky. Muscle is evenly pink and its fibres run in "
        "parallel across most of the tile, with short dark dashes lined up along them and white clefts between "
        "bundles. Stroma is patchier: wavy strands running in different directions with pale gaps "
        "between them, dark dots pointing every way, and sometimes a purple cluster of immune cells or a piece "
        "of gland.",
        "Muscle cells have evenly spaced cigar-shaped nuclei with blunt ends (cut across, round profiles with "
        "central nuclei); stroma has fewer, thinner, tapered fibroblast nuclei in wavy, haphazard collagen.",
    ),
    ConfusablePair(
        2, 4,
        "Debris versus mucus: both lack structure. Debris is mostly pink and granular, speckled unevenly with "
        "irregular dark purple specks and blotches. Mucus is paler and lilac rather than pink, smooth and "
        "streaky or wavy, with few dark dots.",
        "Debris shows karyorrhectic nuclear dust (a few µm each) and ghost outlines of dead cells; mucin is "
        "acellular apart from a few floating cells.",
    ),
    ConfusablePair(
        6, 8,
        "Normal mucosa versus adenocarcinoma: at 112 µm a tile shows one or two gland profiles. Normal glands "
        "are round and evenly sized, with a neat purple rim and paler centres (often rows of pale round spots), "
        "separated by loose pink tissue. Tumour glands are crowded, irregular or fused: thick dark purple bands "
        "around slit-like spaces with little pale tissue between them; the tile looks darker and disordered, "
        "with fewer pale spaces.",
        "Normal crypts have one neat row of small basal nuclei and many goblet cells; tumour glands are lined by "
        "tall, enlarged, hyperchromatic nuclei stacked in several layers, with few goblet cells and often "
        "necrotic debris in the lumen.",
    ),
    ConfusablePair(
        3, 2,
        "Lymphocytes versus debris: both are dotty. Lymphocytes are dark purple dots of one size packed evenly "
        "over the whole tile, with hardly any pink between them. Debris is mostly pink and granular, with dark "
        "specks of varying size scattered unevenly and no even spacing.",
        "Lymphocytes are intact small round cells (about 7 µm) with dense nuclei; debris is karyorrhectic "
        "nuclear dust of varying size with ghost outlines of dead cells.",
    ),
    ConfusablePair(
        0, 1,
        "Adipose versus background: both lack cells. Adipose shows thin pink lines curving around white empty "
        "spaces (chicken wire); a fat cell is 50-150 µm wide, so a tile may show only one or two of them. "
        "Background has no lines at all: a flat, even field, in PathMNIST usually dark purple-grey, sometimes "
        "pale or white.",
        "The membranes of fat cells are sharp, sometimes with a flattened nucleus squeezed against one; "
        "background is glass or mounting medium with no cells at all.",
    ),
)

# Below this pixel size (µm) a tile shows nuclei and cells, so the higher-magnification text applies to it too
# (224 px PathMNIST tiles: 0.5 µm; instructors' uploads at a scanner's 0.25-0.5 µm before conversion).
MAGNIFIED_BELOW_UM = 1.0
MAGNIFIED_HEADING = "At higher magnification (not visible in a 28 px tile)"


def _scaled(visible: str, magnified: str, um_per_pixel: float | None) -> str:
    if um_per_pixel is not None and um_per_pixel < MAGNIFIED_BELOW_UM:
        return f"{visible} At this magnification: {magnified}"
    return visible


def teaching_text(tissue: int | str, um_per_pixel: float | None = None) -> str:
    """What to look for in a tile of ``tissue`` at ``um_per_pixel``: the visible-scale text, plus the
    higher-magnification one when the tile is fine enough to show it (None: a 28 px tile, ~4 µm per pixel)."""
    entry = get_tissue(tissue)
    return _scaled(entry.description, entry.magnified, um_per_pixel)


def pair_text(pair: ConfusablePair, um_per_pixel: float | None = None) -> str:
    """How to tell ``pair`` apart in a tile at ``um_per_pixel`` (as :func:`teaching_text`)."""
    return _scaled(pair.text, pair.magnified, um_per_pixel)


def confusable_pair(a: int | str, b: int | str) -> ConfusablePair | None:
    """The catalogue's pair for two tissues (either order), or None when they are not a listed pair."""
    found = {tissue_index(a), tissue_index(b)}
    return next((pair for pair in CONFUSABLE_PAIRS if {pair.first, pair.second} == found), None)


def confusable_with(tissue: int | str) -> tuple[int, ...]:
    """The tissues listed as confusable with ``tissue``."""
    index = tissue_index(tissue)
    return tuple(p.second if p.first == index else p.first for p in CONFUSABLE_PAIRS if index in (p.first, p.second))
