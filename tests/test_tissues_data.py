import os

import numpy as np
import pytest
import torch

from pathsynth import data as D
from sample_tiles import needs_real_data, real_tiles, sample_tiles
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


@needs_real_data
def test_real_sample_loads():
    images, labels = real_tiles()
    assert images.shape == (800, 28, 28, 3) and images.dtype == np.uint8
    assert labels.shape == (800,) and labels.dtype == np.int64
    assert np.bincount(labels, minlength=9).tolist() == EXPECTED_COUNTS


def test_env_var_and_explicit_npz(tmp_path, monkeypatch):
    images, labels = np.resize(sample_tiles()[0], (90, 28, 28, 3)), np.arange(90) % 9
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
    images, labels = np.resize(sample_tiles()[0], (30, 28, 28, 3)), np.arange(30) % 9
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


@needs_real_data
def test_folds_are_stratified_and_deterministic():
    _, labels = real_tiles()
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
    images, _ = sample_tiles()
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

    images, _ = sample_tiles()
    x = D.to_tensor(images[:4])
    ours = D.rgb_to_hed(x).permute(0, 2, 3, 1).numpy()
    theirs = np.stack([rgb2hed(img) for img in images[:4].astype(np.float64) / 255.0])
    assert np.allclose(ours, np.maximum(theirs, 0), atol=1e-4)
    back = D.hed_to_rgb(D.rgb_to_hed(x))
    assert (back - x).abs().max() < 0.02


def _medmnist_layout(path, splits: dict[str, int], size: int = 28):
    """An npz in medmnist's layout: ``splits`` maps a split to its tile count; tile i of a split is filled with i
    (so picked rows can be told apart) and labelled i % 9."""
    arrays = {}
    for split, count in splits.items():
        arrays[f"{split}_images"] = (np.arange(count, dtype=np.uint8)[:, None, None, None]
                                     * np.ones((1, size, size, 3), np.uint8))
        arrays[f"{split}_labels"] = (np.arange(count) % 9)[:, None].astype(np.uint8)
    np.savez(path, **arrays)
    return path


def test_the_app_shows_the_test_split_when_a_file_has_one(tmp_path):
    full = _medmnist_layout(tmp_path / "full.npz", {"train": 40, "val": 20, "test": 30})
    assert D.display_split(full) == "test"
    assert D.display_split(_medmnist_layout(tmp_path / "tv.npz", {"train": 40, "val": 20})) == "val"
    assert D.display_split(_medmnist_layout(tmp_path / "train.npz", {"train": 40})) == "train"
    images, labels, split = D.load_display_tiles(full, 28)
    assert split == "test" and len(images) == 30 and (images[:, 0, 0, 0] % 9 == labels).all()


def test_display_tiles_are_a_stratified_subset_read_row_by_row(tmp_path):
    path = _medmnist_layout(tmp_path / "big.npz", {"test": 2000})
    images, labels, _ = D.load_display_tiles(path, 28, count=90)
    assert len(images) == 90 and np.bincount(labels, minlength=9).tolist() == [10] * 9
    picked = D.stratified_subset(np.arange(2000) % 9, 90)  # sorted rows: file order
    assert (images[:, 0, 0, 0] == picked % 256).all() and (labels == picked % 9).all()  # tile i holds i % 256
    with pytest.raises(D.DataUnavailableError, match="64 px tiles are needed"):
        D.load_display_tiles(path, 64)


def test_local_tiles_come_from_pathsynth_data_else_medmnist_else_none(tmp_path, monkeypatch):
    root, own = tmp_path / "medmnist", tmp_path / "own.npz"
    root.mkdir()
    monkeypatch.setenv("PATHSYNTH_MEDMNIST_ROOT", str(root))
    monkeypatch.delenv(D.DATA_ENV_VAR, raising=False)
    assert D.local_display_tiles() is None
    _medmnist_layout(root / "pathmnist.npz", {"train": 18, "val": 9, "test": 27})
    assert len(D.local_display_tiles()[0]) == 27  # medmnist's file: its test split
    monkeypatch.setenv(D.DATA_ENV_VAR, str(_medmnist_layout(own, {"train": 45})))
    assert len(D.local_display_tiles()[0]) == 45  # PATHSYNTH_DATA first
    assert D.data_source_name(None) == "own.npz" and D.data_source_name("medmnist") == "medmnist"


def test_download_offline_says_why_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # make sure no network is reached
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    with pytest.raises(D.DataUnavailableError) as info:
        D.download_pathmnist(28, tmp_path)
    assert "could not download PathMNIST" in str(info.value) and "\n" not in str(info.value)
    existing = _medmnist_layout(tmp_path / "pathmnist.npz", {"test": 9})
    assert D.download_pathmnist(28, tmp_path) == existing  # already there: nothing is fetched
    message = D.no_real_tiles_message(28)
    assert "pathsynth data download" in message and D.DATA_ENV_VAR in message and "\n" not in message


def test_no_dataset_file_is_tracked():
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    listed = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    data = [name for name in listed.stdout.splitlines()
            if name.lower().endswith((".npz", ".npy", ".pkl", ".pickle", ".h5", ".hdf5", ".parquet"))]
    assert not data, f"dataset files are tracked (read data through PATHSYNTH_DATA or medmnist): {data}"
