"""Histology: the 9 PathMNIST tissues (colorectal H&E, NCT-CRC-HE-100K), 28 px tiles of 112 µm.

The classes, their teaching text and the confusable pairs are :mod:`pathsynth.tissues`' (the catalogue the
histology code has always read); this module states the rest of the domain.
"""

from ..images import PATHMNIST_TILE_UM
from ..tissues import CONFUSABLE_PAIRS, MAGNIFIED_HEADING, TISSUES
from . import Domain

PATHMNIST = Domain(
    flag="pathmnist",
    image_noun="tile",
    name="Histology",
    modality="H&E-stained colorectal tissue (light microscopy)",
    class_noun="tissue",
    channels=3,
    size=28,
    scale=f"a 28 px tile is {PATHMNIST_TILE_UM:.0f} µm across (about 4 µm per pixel)",
    units_per_pixel=PATHMNIST_TILE_UM / 28,
    unit="µm",
    classes=TISSUES,
    pairs=CONFUSABLE_PAIRS,
    data_env="PATHSYNTH_DATA",
    models="",
    augmentation="histology",
    test_time_views="dihedral",
    magnified_heading=MAGNIFIED_HEADING,
    examples=("fat cells", "tumour glands", "mucin"),
    try_words=("fat", "necrosis", "lymphocytes", "mucin", "muscle", "normal crypts", "stroma", "tumour glands"),
    nested_phrases_count=True,  # the resolver's thresholds and outputs for histology were calibrated this way
    citation="Kather et al. 2019 (NCT-CRC-HE-100K), PLOS Medicine 16(1): e1002730; MedMNIST v2 (Yang et al. 2023)",
)
