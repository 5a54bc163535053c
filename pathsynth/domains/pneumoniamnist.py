"""Chest X-ray: PneumoniaMNIST (paediatric frontal films from Kermany et al. 2018), 28 px greyscale.

A 28 px film is a whole chest in 28 columns: one pixel is several millimetres (the source films, 384-2,916 px
wide, were centre-cropped and shrunk), so a trainee sees the lung fields, the heart and mediastinum as a bright
central column, the diaphragm domes and how sharp their outlines are: not ribs in detail, vessels, air
bronchograms or small nodules. ``description`` says only what such a film shows, and was checked against the
real films (tests/test_domains.py measures each claim on the training split: normal lungs are darker, with more
contrast against the heart and sharper edges, than lungs with pneumonia); ``magnified`` is what a full-resolution
film adds, shown under its heading.
"""

from ..tissues import ConfusablePair, Tissue
from . import Domain

FINDINGS = (
    Tissue(
        0, "normal", "NORM", "Normal film",
        "Both lung fields are dark grey (air) and about equally dark, clearly darker than the bright column of the "
        "heart and spine in the middle; the outlines of the heart and of the diaphragm domes at the bottom are "
        "sharp, so the film has strong contrast.",
        "Vessels taper towards the edges of the lungs; the costophrenic angles are sharp; the heart borders, the "
        "hemidiaphragms and the aortic knuckle are each crisply outlined, with no air bronchograms.",
        ("normal", "clear lungs", "normal film", "normal chest", "normal chest x-ray", "healthy lungs",
         "clear lung fields", "unremarkable chest", "normal cxr"),
        ("no pneumonia", "no consolidation", "no focal consolidation", "no acute findings", "no opacity", "lungs clear", "healthy chest", "well aerated lungs",
         "dark lungs", "sharp heart border", "clear film", "negative film"),
    ),
    Tissue(
        1, "pneumonia", "PNA", "Pneumonia",
        "The lung fields are lighter, greyer and hazier than in a normal film, on one side, in one zone or on "
        "both: less contrast between the lungs and the heart in the middle, and the outlines of the heart and "
        "diaphragm are blurred where the whiter lung touches them. A lobar consolidation shows as a brighter "
        "patch of one lung field; a diffuse pattern as an evenly grey lung.",
        "Consolidation with air bronchograms (dark branching tubes inside the white lung), loss of one heart "
        "border or hemidiaphragm next to it (the silhouette sign), patchy or interstitial shadowing around the "
        "airways, sometimes a pleural effusion; the source labels bacterial and viral pneumonia alike.",
        ("pneumonia", "lobar consolidation", "consolidation", "hazy lung", "hazy right lower zone",
         "airspace opacity", "chest infection", "lung infection", "infiltrate", "bronchopneumonia"),
        ("opacity", "opacification", "patchy shadowing", "white lung", "air bronchograms", "hazy zone",
         "lobar pneumonia", "right lower lobe consolidation", "left lower lobe consolidation", "pulmonary infiltrate",
         "viral pneumonia", "bacterial pneumonia", "infective changes", "cloudy lung", "whiter lung field"),
    ),
)

PAIRS = (
    ConfusablePair(
        0, 1,
        "Normal versus pneumonia: compare each lung field with the heart in the middle. Normal lungs are dark "
        "and even, with a strong step in brightness to the heart and sharp heart and diaphragm outlines. With "
        "pneumonia a lung field, or part of one, is lighter and hazier, the step to the heart is smaller and "
        "the outlines next to the haze are blurred. Look for one side or zone brighter than the other.",
        "At full resolution: air bronchograms and the silhouette sign localise a consolidation; a normal film has "
        "tapering vessels and crisp borders throughout.",
    ),
)

PNEUMONIAMNIST = Domain(
    flag="pneumoniamnist",
    image_noun="film",
    name="Chest X-ray",
    modality="frontal chest radiograph (paediatric)",
    class_noun="finding",
    channels=1,
    size=28,
    scale="a 28 px film is a whole chest: roughly 5-10 mm per pixel (the source films vary in size)",
    units_per_pixel=7.0,
    unit="mm",
    classes=FINDINGS,
    pairs=PAIRS,
    data_env="PATHSYNTH_DATA_PNEUMONIAMNIST",
    models="pneumoniamnist",
    augmentation="radiograph",
    test_time_views="hflip",
    magnified_heading="On a full-resolution film (not visible at 28 px)",
    examples=("clear lungs", "lobar consolidation", "hazy right lower zone"),
    try_words=("clear lungs", "normal film", "consolidation", "hazy lung", "white lung", "infiltrate", "pneumonia"),
    filler_words=frozenset(("x", "ray", "rays", "xray", "xrays", "cxr", "film", "films", "radiograph", "radiographs",
                            "radiography", "chest", "frontal", "pa", "ap", "erect", "supine", "projection", "plain",
                            "paediatric", "pediatric", "child", "patient")),
    citation="Kermany et al. 2018, Cell 172(5): 1122-1131; MedMNIST v2 (Yang et al. 2023)",
)
