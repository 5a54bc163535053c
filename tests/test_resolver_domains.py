"""The free-text resolver per imaging domain: chest X-ray findings, and histology exactly as before."""

import dataclasses
import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pathsynth import resolver as R
from pathsynth.domains import get_domain

XRAY = get_domain("pneumoniamnist")
NORMAL, PNEUMONIA = XRAY.class_index("normal"), XRAY.class_index("pneumonia")

# Resolved by catalogue phrases alone, so with or without the sentence encoder
CHEST_LEXICAL = [
    ("lobar consolidation", PNEUMONIA), ("clear lungs", NORMAL), ("hazy right lower zone", PNEUMONIA),
    ("normal film", NORMAL), ("pneumonia", PNEUMONIA), ("PNA", PNEUMONIA), ("NORM", NORMAL),
    ("normal chest x-ray", NORMAL), ("white lung", PNEUMONIA), ("infiltrate in the left lower lobe", PNEUMONIA),
    ("consolidation on the chest x-ray", PNEUMONIA), ("normal CXR", NORMAL), ("pnuemonia", PNEUMONIA),
]
NEGATIONS = [("no consolidation", NORMAL), ("no pneumonia", NORMAL), ("No consolidation on this film", NORMAL)]
# Paraphrases only the encoder understands
CHEST_SEMANTIC = [("lungs are clear", NORMAL), ("hazy lungs", PNEUMONIA), ("whiter left lung", PNEUMONIA)]
NONSENSE = ["asdfgh", "banana bread", "the weather today", "lorem ipsum dolor sit amet", "12345"]
HISTOLOGY_WORDS = ["adipose", "tumour glands", "fat cells", "mucin", "lymphocytes", "necrosis"]
HISTOLOGY_PHRASES = ["fat cells", "tumour glands", "TUM", "NORM", "adipse", "lymfocytes", "glands", "cells",
                     "banana spaceship", "", "tumour stroma", "lymphocytes infiltrating the tumour", "no tissue",
                     "pale mucinous material", "normal", "pneumonia", "show me normal crypts"]


def _quiet(**kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the encoder-less fallback warns by design
        return R.TissueResolver(**kwargs)


@pytest.fixture(scope="module")
def chest():
    return R.TissueResolver(domain=XRAY)


@pytest.fixture(scope="module")
def chest_lexical():
    return _quiet(use_encoder=False, domain=XRAY)


@pytest.fixture(scope="module", params=[True, False], ids=["encoder", "lexical"])
def either(request, chest, chest_lexical):
    return chest if request.param else chest_lexical


def test_the_chest_resolver_uses_its_domain(chest):
    assert chest.uses_encoder and chest.domain is XRAY
    assert set(chest.prototype_owner) == set(range(XRAY.num_classes))
    assert R.TissueResolver(use_encoder=False, domain="pneumoniamnist").domain is XRAY


@pytest.mark.parametrize("text,expected", CHEST_LEXICAL + NEGATIONS)
def test_chest_phrases(either, text, expected):
    r = either.resolve(text)
    assert (r.tissue, r.status) == (expected, "ok"), (r.message, r.candidates)
    assert r.message.startswith(f"Understood '{text}' as {XRAY.display_names[expected]} "
                                f"({XRAY.abbreviations[expected]})")
    assert len(r.candidates) == XRAY.num_classes


@pytest.mark.parametrize("text,expected", CHEST_SEMANTIC)
def test_chest_paraphrases_need_the_encoder(chest, text, expected):
    r = chest.resolve(text)
    assert (r.tissue, r.status) == (expected, "ok"), (r.message, r.candidates)


def test_a_negated_finding_does_not_also_count_as_the_finding(chest_lexical):
    # "consolidation" inside the matched "no consolidation" gives pneumonia no score of its own
    r = chest_lexical.resolve("no consolidation")
    assert dict(r.candidates)[PNEUMONIA] == 0.0


def test_histology_keeps_phrases_inside_longer_ones():
    # histology's thresholds and outputs were calibrated with "tumour" in "tumour stroma" counting for tumour
    r = _quiet(use_encoder=False).resolve("tumour stroma")
    tumour = get_domain("pathmnist").class_index("TUM")
    assert r.tissue == get_domain("pathmnist").class_index("STR") and dict(r.candidates)[tumour] > 0


def test_chest_filler_words_do_not_dilute_a_finding(chest_lexical):
    plain = chest_lexical.resolve("pneumonia here")
    wordy = chest_lexical.resolve("pneumonia here on a frontal chest x-ray film")
    assert wordy.candidates == plain.candidates and wordy.status == "ok"
    assert {"film", "cxr", "x", "ray", "chest", "radiograph", "frontal", "pa", "ap"} <= chest_lexical.fillers


def test_histology_fillers_are_unchanged(chest_lexical):
    histology = _quiet(use_encoder=False)
    phrase_words = {w for key in histology.phrases for w in key}
    assert histology.fillers == R.FILLER_WORDS - phrase_words
    assert "film" not in histology.fillers and "cxr" not in histology.fillers
    assert histology.fillers - chest_lexical.fillers <= {w for key in chest_lexical.phrases for w in key}


@pytest.mark.parametrize("text", NONSENSE)
def test_chest_nonsense_is_not_understood(either, text):
    r = either.resolve(text)
    assert (r.status, r.tissue) == ("not_understood", None), r.candidates
    assert r.message == (f"Could not match '{text}' to a finding. Try words like 'clear lungs', 'normal film', "
                         "'consolidation', 'hazy lung', 'white lung', 'infiltrate', 'pneumonia', "
                         "or a code: NORM, PNA.")


@pytest.mark.parametrize("text", ["", "   ", "🙂", "..."])
def test_empty_input_asks_for_a_finding(either, text):
    r = either.resolve(text)
    assert (r.status, r.tissue) == ("not_understood", None)
    assert r.message == "Please describe a finding, e.g. 'clear lungs', 'lobar consolidation' or 'hazy right lower zone'."
    assert [i for i, _ in r.candidates] == list(range(XRAY.num_classes))


@pytest.mark.parametrize("text", HISTOLOGY_WORDS)
def test_histology_words_are_no_chest_finding(either, text):
    r = either.resolve(text)
    assert r.status != "ok", (r.message, r.candidates)


def test_histology_messages_are_word_for_word():
    histology = _quiet(use_encoder=False)
    assert histology.resolve("").message == "Please describe a tissue, e.g. 'fat cells', 'tumour glands' or 'mucin'."
    assert histology.resolve("xyz").message == (
        "Could not match 'xyz' to a tissue. Try words like 'fat', 'necrosis', 'lymphocytes', 'mucin', 'muscle', "
        "'normal crypts', 'stroma', 'tumour glands', or a code: ADI, BACK, DEB, LYM, MUC, MUS, NORM, STR, TUM.")
    assert histology.resolve("fat cells").message == "Understood 'fat cells' as Adipose tissue (ADI)."


def test_a_catalogue_without_examples_suggests_its_synonyms():
    bare = _quiet(use_encoder=False, domain=dataclasses.replace(XRAY, examples=(), try_words=()))
    assert bare.resolve("").message == "Please describe a finding, e.g. 'normal' or 'pneumonia'."
    assert "Try words like 'normal', 'pneumonia', or a code: NORM, PNA." in bare.resolve("qwzx").message


def test_histology_by_name_is_histology_by_default():
    default, named = R.TissueResolver(), R.TissueResolver(domain=get_domain("pathmnist"))
    for text in HISTOLOGY_PHRASES:
        a, b = default.resolve(text).to_dict(), named.resolve(text).to_dict()
        a.pop("latency_ms"), b.pop("latency_ms")
        assert a == b, text


def test_tissue_from_text_uses_the_resolvers_domain(chest_lexical):
    assert R.tissue_from_text("PNA", chest_lexical) == (PNEUMONIA, None)
    assert R.tissue_from_text("NORM", chest_lexical) == (NORMAL, None)
    assert R.tissue_from_text(1, chest_lexical) == (PNEUMONIA, None)
    index, resolution = R.tissue_from_text("clear lungs", chest_lexical)
    assert index == NORMAL and resolution.status == "ok"
    # a class or factory is not built for a catalogue name: the catalogue is histology's
    histology_norm = get_domain("pathmnist").class_index("NORM")
    assert R.tissue_from_text("NORM", R.TissueResolver) == (histology_norm, None)
    with pytest.raises(KeyError):
        R.tissue_from_text(XRAY.num_classes, chest_lexical)


_CHEST_WORDS = st.sampled_from(["no", "clear", "lungs", "consolidation", "hazy", "left", "lower", "zone", "x",
                                "ray", "PNA", "NORM", "pneumonia", "the", "film", "banana", "fat", "normal"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=40), st.lists(_CHEST_WORDS, max_size=6).map(" ".join)))
def test_property_chest_invariants(chest, text):
    r = chest.resolve(text)
    ranked = [t for t, _ in r.candidates]
    assert sorted(ranked) == list(range(XRAY.num_classes))
    assert [s for _, s in r.candidates] == sorted((s for _, s in r.candidates), reverse=True)
    assert (r.tissue is None) == (r.status == "not_understood")
    assert r.tissue in (None, ranked[0]) and 0.0 <= r.confidence <= 1.0
