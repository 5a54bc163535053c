import os

import numpy as np
import pytest
import torch

from pathsynth import data as D
from pathsynth.tissues import ABBREVIATIONS, LABELS, NUM_TISSUES, TISSUES, check_against_medmnist, get_tissue, tissue_index

EXPECTED_COUNTS = [87, 96, 87, 110, 70, 123, 60, 72, 95]  # shared/data/README.md


def test_catalogue_matches_medmnist_info():
    assert NUM_TISSUES == 9
    assert check_against_medmnist()
    assert ABBREVIATIONS == ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")
    assert all(t.index == i and len(t.description) > 60 for i, t in enumerate(TISSUES))


@pytest.mark.parametrize("key,expected", [(0, 0), ("8", 8), ("TUM", 8), ("tum", 8), ("smooth muscle", 5),
                                          ("Smooth_Muscle", 5), ("Normal colon mucosa", 6), (np.int64(3), 3)])
def test_tissue_lookup(key, expected):
    assert tissue_index(key) == expected
    assert get_tissue(key).index == expected


@pytest.mark.parametrize("key", [9, -1, "fat cells", "", True])
def test_tissue_lookup_rejects_unknown(key):
    with pytest.raises(KeyError):
        tissue_index(key)


def test_bundled_sample_loads():
    images, labels = D.load_bundled_sample()
    assert images.shape == (800, 28, 28, 3) and images.dtype == np.uint8
    assert labels.shape == (800,) and labels.dtype == np.int64
    assert np.bincount(labels, minlength=9).tolist() == EXPECTED_COUNTS


def test_env_var_and_explicit_npz(tmp_path, monkeypatch):
    images, labels = D.load_bundled_sample()
    path = tmp_path / "pathmnist.npz"  # medmnist layout with several splits
    np.savez(path, train_images=images[:50], train_labels=labels[:50, None], val_images=images[50:70],
             val_labels=labels[50:70, None], test_images=images[70:90], test_labels=labels[70:90, None])
    x, y = D.load_pathmnist("test", data=path)
    assert x.shape == (20, 28, 28, 3) and (y == labels[70:90]).all()
    monkeypatch.setenv(D.DATA_ENV_VAR, str(path))
    x, y = D.load_pathmnist("val")
    assert len(x) == 20 and (y == labels[50:70]).all()
    splits = D.load_training_data(None)  # a file with a val split uses it instead of folds
    assert len(splits["train"][0]) == 50 and len(splits["val"][0]) == 20


def test_medmnist_path_reads_medmnist_layout(tmp_path, monkeypatch):
    """medmnist's own loader on a file in its layout, placed where it looks (no download)."""
    images, labels = D.load_bundled_sample()
    arrays = {f"{s}_{k}": (images[:30] if k == "images" else labels[:30, None]) for s in D.SPLITS for k in ("images", "labels")}
    np.savez(tmp_path / "pathmnist.npz", **arrays)
    monkeypatch.setenv("PATHSYNTH_MEDMNIST_ROOT", str(tmp_path))
    x, y = D.load_medmnist("val", 28, download=False)
    assert x.shape == (30, 28, 28, 3) and (y == labels[:30]).all()


def test_offline_error_names_both_options(tmp_path, monkeypatch):
    monkeypatch.delenv(D.DATA_ENV_VAR, raising=False)
    monkeypatch.setenv("PATHSYNTH_MEDMNIST_ROOT", str(tmp_path))  # empty: medmnist must download -> fails offline
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # make sure no network is reached
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    with pytest.raises(D.DataUnavailableError) as info:
        D.load_pathmnist("test", download=True)
    message = str(info.value)
    assert "internet" in message and "--data" in message and D.DATA_ENV_VAR in message
    assert "\n" not in message


def test_bad_npz_files_give_clear_errors(tmp_path):
    with pytest.raises(D.DataUnavailableError, match="not found"):
        D.load_npz(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not an archive")
    with pytest.raises(D.DataUnavailableError, match="cannot read"):
        D.load_npz(tmp_path / "junk.npz")
    np.savez(tmp_path / "train_only.npz", train_images=np.zeros((2, 28, 28, 3), np.uint8), train_labels=np.zeros((2, 1)))
    with pytest.raises(D.DataUnavailableError, match="no 'test' split"):
        D.load_npz(tmp_path / "train_only.npz", "test")


def test_folds_are_stratified_and_deterministic():
    _, labels = D.load_bundled_sample()
    folds = D.stratified_folds(labels)
    again = D.stratified_folds(labels)
    assert all((a[1] == b[1]).all() for a, b in zip(folds, again))
    all_val = np.concatenate([va for _, va in folds])
    assert sorted(all_val.tolist()) == list(range(800))  # every image validated exactly once
    overall = np.bincount(labels, minlength=9) / len(labels)
    for train_idx, val_idx in folds:
        assert not set(train_idx) & set(val_idx)
        share = np.bincount(labels[val_idx], minlength=9) / len(val_idx)
        assert np.abs(share - overall).max() < 0.02
    train_idx, val_idx = D.train_val_split(labels)
    assert len(val_idx) == 160 and (val_idx == folds[0][1]).all()


def test_dihedral_transforms_are_the_eight_distinct_symmetries():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)
    views = [D.dihedral(x, k) for k in range(8)]
    assert all(v.shape == x.shape for v in views)
    assert len({tuple(v.flatten().tolist()) for v in views}) == 8
    assert torch.equal(views[0], x)


def test_augmentations_keep_shape_dtype_and_range():
    images, _ = D.load_bundled_sample()
    x = D.to_tensor(images[:16])
    torch.manual_seed(0)
    for transform in (D.RandomDihedral(), D.RandomHEDJitter(), D.train_augmentation()):
        out = transform(x)
        assert out.shape == x.shape and out.dtype == torch.float32
        assert out.min() >= 0 and out.max() <= 1
        single = transform(x[0])
        assert single.shape == x[0].shape
    jittered = D.RandomHEDJitter(0.1, 0.1)(x)
    assert not torch.allclose(jittered, x)
    assert (jittered - x).abs().mean() < 0.1  # colour changes, morphology stays
    assert np.array_equal(D.to_uint8(x), images[:16])


def test_hed_round_trip_matches_skimage():
    from skimage.color import rgb2hed

    images, _ = D.load_bundled_sample()
    x = D.to_tensor(images[:4])
    ours = D.rgb_to_hed(x).permute(0, 2, 3, 1).numpy()
    theirs = np.stack([rgb2hed(img) for img in images[:4].astype(np.float64) / 255.0])
    assert np.allclose(ours, np.maximum(theirs, 0), atol=1e-4)
    back = D.hed_to_rgb(D.rgb_to_hed(x))
    assert (back - x).abs().max() < 0.02
