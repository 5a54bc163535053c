"""The catalogue's teaching text per scale (issue 32): what a 28 px tile (~4 µm per pixel) shows is checked on
tiles; nuclear detail only appears labelled as higher magnification, or for finer tiles."""

import re

import numpy as np
import pytest
from sample_tiles import sample_tiles

from pathsynth import quiz as Q
from pathsynth.appearance import area_words, tile_measures
from pathsynth.tissues import (CONFUSABLE_PAIRS, MAGNIFIED_HEADING, NUM_TISSUES, TISSUES, pair_text, teaching_text,
                               tissue_index)
from pathsynth.ui_helpers import tissue_card

# What a 1-2 px nucleus cannot show: its shape, chromatin, position in the cell, layering, cell types by detail.
NUCLEAR_DETAIL = re.compile(r"cigar|blunt|karyorrh|hyperchromat|chromatin|nucleol|stratif|basal|polarity|mitos|"
                            r"mitotic|ghost|vesicular|pleomorph|columnar|goblet|cytoplasm|fibroblast|tapered|"
                            r"flat(tened)? nucle|nuclear dust", re.IGNORECASE)


def visible_texts():
    return [t.description for t in TISSUES] + [p.text for p in CONFUSABLE_PAIRS]


def test_visible_scale_text_names_no_nuclear_detail_and_the_magnified_text_does():
    for text in visible_texts():
        assert not NUCLEAR_DETAIL.search(text), (NUCLEAR_DETAIL.search(text).group(), text)
    assert "blue-grey" not in TISSUES[tissue_index("MUC")].description  # the tiles are lilac to pink-purple
    magnified = [t.magnified for t in TISSUES] + [p.magnified for p in CONFUSABLE_PAIRS]
    assert all(len(text) > 60 for text in magnified)
    assert sum(bool(NUCLEAR_DETAIL.search(text)) for text in magnified) >= 8  # the detail moved there, not lost


def test_feedback_on_a_28_px_tile_keeps_to_what_it_shows_and_finer_tiles_get_more():
    coarse, fine = np.zeros((28, 28, 3), np.uint8), np.zeros((224, 224, 3), np.uint8)
    for answer in range(NUM_TISSUES):
        for chosen in range(NUM_TISSUES):
            text = Q.explain(Q.Question(coarse, answer, "real"), chosen)
            assert not NUCLEAR_DETAIL.search(text), (answer, chosen, text)
    muscle_vs_stroma = Q.explain(Q.Question(fine, tissue_index("MUS"), "real"), tissue_index("STR"))
    assert "cigar-shaped" in muscle_vs_stroma and "At this magnification" in muscle_vs_stroma
    assert teaching_text("DEB", 0.5).endswith(TISSUES[2].magnified) and teaching_text("DEB", 4.0) == \
        TISSUES[2].description
    assert pair_text(CONFUSABLE_PAIRS[0]) == CONFUSABLE_PAIRS[0].text
    card = tissue_card(5)  # Generate's card: the magnified text only under its label
    assert TISSUES[5].description in card and f"_{MAGNIFIED_HEADING}:_ {TISSUES[5].magnified}" in card


@pytest.fixture(scope="module")
def medians():
    """Each tissue's median of each measure over the sample tiles (real with PATHSYNTH_DATA, else generated)."""
    images, labels = sample_tiles()
    measures = tile_measures(images)
    return {name: np.array([np.median(values[labels == t]) for t in range(NUM_TISSUES)])
            for name, values in measures.items()}


def _rank(values, tissue, among=None) -> int:
    """0 for the largest of ``values`` over ``among`` (default every tissue)."""
    among = list(range(NUM_TISSUES)) if among is None else [tissue_index(t) for t in among]
    order = sorted(among, key=lambda t: -values[t])
    return order.index(tissue_index(tissue))


TISSUE_TILES = ["ADI", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]  # everything but background


def test_each_visible_claim_holds_on_the_tiles(medians):
    m = medians
    i = tissue_index
    # adipose: "mostly white, empty-looking space (the brightest tissue tile)", "hardly any dark dots"
    assert m["white"][i("ADI")] > 0.4 and _rank(m["white"], "ADI") == 0 and _rank(m["brightness"], "ADI") == 0
    assert _rank(-m["dots"], "ADI", TISSUE_TILES) == 0
    # background: "flat, nearly uniform (the smoothest tile of all)", "most often an even dark purple-grey"
    assert _rank(-m["texture"], "BACK") == 0 and m["brightness"][i("BACK")] < 140 and m["purple"][i("BACK")] > 0.5
    # lymphocytes: "the darkest, most crowded tissue tile", "dark purple dots", "very little pink"
    assert _rank(-m["brightness"], "LYM", TISSUE_TILES) == 0 and _rank(m["dots"], "LYM") == 0
    assert _rank(m["purple"], "LYM", TISSUE_TILES) == 0 and m["pink"][i("LYM")] < 0.15
    # tumour: "the darkest tile after lymphocytes", "darker than normal mucosa, with fewer pale spaces"
    assert _rank(-m["brightness"], "TUM", TISSUE_TILES) == 1 and m["white"][i("TUM")] < m["white"][i("NORM")]
    # normal mucosa: "lighter and more regular than tumour", "loose dotty tissue": dottier than all but lymphocytes
    assert m["brightness"][i("NORM")] > m["brightness"][i("TUM")] and _rank(m["dots"], "NORM") == 1
    # mucus: "pale lilac", "lighter than tumour and far less crowded than lymphocytes", "few dark dots"
    assert m["brightness"][i("MUC")] > m["brightness"][i("TUM")] and m["purple"][i("MUC")] > m["pink"][i("MUC")]
    assert m["dots"][i("MUC")] < 0.6 * m["dots"][i("LYM")] and m["dark"][i("MUC")] < m["dark"][i("TUM")]
    # debris and mucus: "debris is mostly pink", "mucus lilac rather than pink"
    assert m["pink"][i("DEB")] > 0.4 and m["pink"][i("MUC")] < m["pink"][i("DEB")] / 3
    # muscle: "pink", "fibres in parallel (the most strongly aligned texture of all)"; stroma "less aligned"
    assert _rank(m["alignment"], "MUS") == 0 and m["alignment"][i("STR")] < m["alignment"][i("MUS")]
    assert min(m["pink"][i("MUS")], m["pink"][i("STR")]) > 0.4


def test_area_words_name_what_one_sees():
    assert area_words(np.full((10, 3), 245)) == "white and empty-looking"
    assert area_words(np.tile([[110, 60, 130]], (10, 1))) == "dark purple"
    assert area_words(np.tile([[210, 130, 175]], (10, 1))) == "pink"
    assert area_words(np.tile([[225, 200, 230]], (10, 1))) == "pale purple"
