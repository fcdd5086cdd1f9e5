from __future__ import annotations

import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from diffnas.config import DataConfig
from diffnas.data import load_dataset, search_data
from diffnas.data.transforms import cutout, random_crop, random_flip
from diffnas.errors import DatasetError


def test_random_crop_is_a_window_of_the_padded_image() -> None:
    x = torch.randint(1, 255, (16, 3, 8, 8), dtype=torch.uint8)
    out = random_crop(x, 2, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    offsets = set()
    for i in range(16):
        hits = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(out[i], padded[i, :, dy : dy + 8, dx : dx + 8])
        ]
        assert hits, f"sample {i} is not a crop"
        offsets.add(hits[0])
    assert len(offsets) > 3  # offsets differ between samples


def test_random_flip_flips_some_samples() -> None:
    x = torch.randn(64, 1, 4, 4)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(64)]
    kept = [torch.equal(out[i], x[i]) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 16 < sum(flipped) < 48


def test_cutout_zeroes_one_clipped_square_per_sample() -> None:
    x = torch.ones(32, 2, 10, 10)
    out = cutout(x, 4, torch.Generator().manual_seed(0))
    for i in range(32):
        hole = out[i, 0] == 0
        assert torch.equal(hole, out[i, 1] == 0)  # same hole in every channel
        rows, cols = hole.any(1).nonzero().flatten(), hole.any(0).nonzero().flatten()
        assert 0 < len(rows) <= 4 and 0 < len(cols) <= 4
        assert hole.sum() == len(rows) * len(cols)  # a rectangle
        assert (out[i][~hole.expand(2, -1, -1)] == 1).all()


def test_digits_is_builtin_and_split_is_fixed() -> None:
    ds = load_dataset("digits")
    assert ds.num_classes == 10 and ds.in_channels == 1 and ds.input_size == 8
    assert len(ds.train) + len(ds.test) == 1797
    assert torch.equal(load_dataset("digits").test.labels, ds.test.labels)


def test_search_split_is_disjoint_and_deterministic() -> None:
    cfg = DataConfig(batch_size=16)
    a = search_data(cfg, seed=0, train_portion=0.5)
    b = search_data(cfg, seed=0, train_portion=0.5)
    assert a.train.num_samples + a.val.num_samples == len(a.dataset.train)
    xa, _ = next(a.train.epoch(3))
    xb, _ = next(b.train.epoch(3))
    assert torch.equal(xa, xb)  # same seed, epoch, step -> same augmented batch
    # the splits hold different images
    assert not torch.equal(a.train.images[:16], a.val.images[:16])


def _write_cifar_batches(root, n=6):
    d = root / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
            b"labels": list(rng.integers(0, 10, n)),
        }
        with open(d / name, "wb") as fh:
            pickle.dump(batch, fh)
    with open(d / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, fh)
    return d


def test_cifar10_official_batches(tmp_path) -> None:
    d = _write_cifar_batches(tmp_path)
    ds = load_dataset("cifar10", str(tmp_path))
    assert ds.train.images.shape == (30, 3, 32, 32) and ds.test.images.shape == (6, 3, 32, 32)
    assert ds.classes[3] == "c3" and ds.label == "CIFAR-10"
    with open(d / "data_batch_1", "rb") as fh:
        first = pickle.load(fh)
    assert torch.equal(ds.train.images[0].flatten(), torch.from_numpy(first[b"data"][0]))


def test_cifar_corrupt_and_missing(tmp_path, monkeypatch) -> None:
    d = _write_cifar_batches(tmp_path)
    (d / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="data_batch_3.*corrupt"):
        load_dataset("cifar10", str(tmp_path))
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("cifar10", str(tmp_path / "missing"))
    monkeypatch.delenv("DIFFNAS_DATA", raising=False)
    with pytest.raises(DatasetError, match="needs a data location"):
        load_dataset("cifar100", None)


def _write_folder(root, size=6):
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("ant", "bee"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
                    d / f"{i}.png"
                )


def test_imagefolder_directory_and_archive(tmp_path) -> None:
    tree = tmp_path / "tree"
    _write_folder(tree)
    cache = tmp_path / "cache"
    ds = load_dataset("imagefolder", str(tree), str(cache))
    assert ds.classes == ["ant", "bee"] and len(ds.train) == 6 and len(ds.test) == 4
    assert ds.train.images.shape[1:] == (3, 6, 6)
    png = np.array(Image.open(tree / "train" / "bee" / "1.png"))
    assert torch.equal(ds.train.images[4], torch.from_numpy(png).permute(2, 0, 1))
    assert len(list(cache.glob("*.npz"))) == 1
    again = load_dataset("imagefolder", str(tree), str(cache))  # from the cache
    assert torch.equal(again.train.images, ds.train.images)

    archive = tmp_path / "tree.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname="data")
    from_tar = load_dataset("imagefolder", str(archive), str(cache))
    assert torch.equal(from_tar.train.images, ds.train.images)


def test_imagefolder_rejects_non_images(tmp_path) -> None:
    tree = tmp_path / "tree"
    _write_folder(tree)
    (tree / "train" / "ant" / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match="notes.txt.*not an image"):
        load_dataset("imagefolder", str(tree), str(tmp_path / "c"))
    (tree / "train" / "ant" / "notes.txt").unlink()
    (tree / "train" / "ant" / "broken.jpg").write_bytes(b"\xff\xd8garbage")
    with pytest.raises(DatasetError, match="broken.jpg.*not an image PIL can read"):
        load_dataset("imagefolder", str(tree), str(tmp_path / "c2"))


def test_shared_cifar10_jpeg_copy(tmp_path, shared_data) -> None:
    """A few files of the shared JPEG copy, extracted to a temp dir, load as CIFAR-10."""
    per_class: dict[tuple[str, str], int] = {}
    with tarfile.open(shared_data, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) < 3 or parts[-3] not in ("train", "test"):
                continue
            key = (parts[-3], parts[-2])
            if per_class.get(key, 0) >= 2:
                if len(per_class) == 20 and all(v >= 2 for v in per_class.values()):
                    break
                continue
            per_class[key] = per_class.get(key, 0) + 1
            tar.extract(member, tmp_path, filter="data")
    root = next(p.parent for p in tmp_path.rglob("train") if p.is_dir())
    ds = load_dataset("cifar10", str(root), str(tmp_path / "cache"))
    assert ds.label == "CIFAR-10 (JPEG copy)"
    assert ds.num_classes == 10 and ds.train.images.shape[1:] == (3, 32, 32)
