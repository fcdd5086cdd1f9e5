"""Datasets held in memory as uint8 tensors: digits (built in), CIFAR-10/100, any ImageFolder.

Images are decoded once (ImageFolder trees and archives are cached as .npz), so loading
never limits a search; a missing, corrupt or foreign file raises DatasetError naming it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import sys
import tarfile
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffnas.errors import DatasetError
from diffnas.registry import DATASETS

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Dataset:
    """Train and test splits plus what a model needs to know about them."""

    name: str
    label: str  # how results on it should be labelled, e.g. "CIFAR-10 (JPEG copy)"
    train: ImageSet
    test: ImageSet
    classes: list[str]
    # default augmentation for search and training
    crop_padding: int
    flip: bool

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def input_size(self) -> int:
        return int(self.train.images.shape[-1])

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.train.images.float() / 255.0
        mean = x.mean(dim=(0, 2, 3))
        std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
        return mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)


def load_dataset(name: str, root: str | None = None, cache_dir: str | None = None) -> Dataset:
    loader = DATASETS.get(name)
    return loader(root, cache_dir)


# =========================================================================== digits
@DATASETS.register("digits")
def load_digits(root: str | None = None, cache_dir: str | None = None) -> Dataset:
    """The 8x8 handwritten digits (1,797 images) shipped in this package: no file, no network.

    `digits.csv.gz` is scikit-learn's copy (licence in DIGITS_LICENSE.txt beside it); pixel
    counts 0..16 are scaled by 16 to uint8 (256 clipped to 255), as before the copy was shipped.
    """
    from importlib import resources

    with resources.files("diffnas.data").joinpath("digits.csv.gz").open("rb") as fh:
        raw = np.loadtxt(io.TextIOWrapper(gzip.GzipFile(fileobj=fh)), delimiter=",")
    pixels = raw[:, :-1].reshape(-1, 8, 8)
    images = torch.from_numpy((pixels * 16).clip(0, 255).astype(np.uint8))[:, None]
    labels = torch.from_numpy(raw[:, -1].astype(np.int64))
    # a fixed stratified 80/20 split, independent of the run seed
    gen = torch.Generator().manual_seed(1234)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_test = len(idx) // 5
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    tr, te = torch.cat(train_idx).sort().values, torch.cat(test_idx).sort().values
    return Dataset(
        "digits",
        "digits (scikit-learn, 8x8)",
        ImageSet(images[tr], labels[tr]),
        ImageSet(images[te], labels[te]),
        [str(i) for i in range(10)],
        crop_padding=1,
        flip=False,
    )


# =========================================================================== synthetic
@DATASETS.register("synthetic")
def load_synthetic(root: str | None = None, cache_dir: str | None = None) -> Dataset:
    """Deterministic random 32x32 RGB images with class-dependent patterns (benchmarks, tests)."""
    gen = torch.Generator().manual_seed(7)
    n_classes, n_train, n_test = 10, 2560, 512
    protos = torch.rand(n_classes, 3, 32, 32, generator=gen)

    def make(n: int) -> ImageSet:
        labels = torch.randint(0, n_classes, (n,), generator=gen)
        noise = torch.rand(n, 3, 32, 32, generator=gen)
        images = (0.6 * protos[labels] + 0.4 * noise) * 255
        return ImageSet(images.to(torch.uint8), labels)

    return Dataset(
        "synthetic",
        "synthetic 32x32",
        make(n_train),
        make(n_test),
        [f"class{i}" for i in range(n_classes)],
        crop_padding=4,
        flip=True,
    )


# =========================================================================== CIFAR
_CIFAR = {
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        b"labels",
        "batches.meta",
        b"label_names",
        "CIFAR-10",
    ),
    "cifar100": (
        "cifar-100-python",
        ["train"],
        ["test"],
        b"fine_labels",
        "meta",
        b"fine_label_names",
        "CIFAR-100",
    ),
}


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode` as protocol-2 pickles of bytes use it, for latin-1 only."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"encoding {encoding!r} is not expected in a CIFAR batch")
    return text.encode("latin1")


def _cifar_globals() -> dict[tuple[str, str], object]:
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1,
    }
    for mod in ("numpy.core", "numpy._core"):
        allowed[(f"{mod}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{mod}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{mod}.numeric", "_frombuffer")] = getattr(numeric, "_frombuffer")  # noqa: B009
    return allowed


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles what CIFAR python batches hold (dicts, lists, bytes, numbers, numpy arrays)
    and nothing else: a pickle naming any other function is refused, not run."""

    def find_class(self, module: str, name: str) -> object:
        found = _cifar_globals().get((module, name))
        if found is None:
            raise pickle.UnpicklingError(
                f"it names {module}.{name}, which a CIFAR batch never holds; diffnas does not "
                f"run code from data files"
            )
        return found


_CIFAR_SOURCE = (
    "download the 'python version' again from https://www.cs.toronto.edu/~kriz/cifar.html"
)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            data = _CifarUnpickler(fh, encoding="bytes").load()
    except FileNotFoundError:
        raise DatasetError(f"missing CIFAR file '{path}'") from None
    except Exception as exc:
        raise DatasetError(
            f"CIFAR file '{path}' is corrupt or not in the official python format ({exc}); "
            f"{_CIFAR_SOURCE}"
        ) from None
    if not isinstance(data, dict):
        raise DatasetError(
            f"CIFAR file '{path}' holds a {type(data).__name__}, not the official format's "
            f"dict of data and labels; {_CIFAR_SOURCE}"
        )
    return data


def _load_cifar_batches(directory: Path, name: str) -> Dataset:
    _, train_files, test_files, label_key, meta_file, names_key, pretty = _CIFAR[name]

    def read(files: list[str]) -> ImageSet:
        xs, ys = [], []
        for f in files:
            d = _unpickle(directory / f)
            if b"data" not in d or label_key not in d:
                raise DatasetError(
                    f"CIFAR file '{directory / f}' lacks 'data' or labels: not a {pretty} batch"
                )
            try:
                x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
                y = np.asarray(d[label_key], dtype=np.int64).reshape(-1)
            except (TypeError, ValueError, OverflowError) as exc:
                raise DatasetError(
                    f"CIFAR file '{directory / f}' does not hold 32x32 RGB images with one "
                    f"label each ({exc}); {_CIFAR_SOURCE}"
                ) from None
            if len(x) != len(y):
                raise DatasetError(
                    f"CIFAR file '{directory / f}' has {len(x)} images but {len(y)} labels; "
                    f"{_CIFAR_SOURCE}"
                )
            xs.append(x)
            ys.append(y)
        return ImageSet(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)))

    meta_path = directory / meta_file
    if meta_path.exists():
        names = _unpickle(meta_path).get(names_key)
        if not isinstance(names, list) or not all(isinstance(c, bytes) for c in names):
            raise DatasetError(
                f"CIFAR file '{meta_path}' lacks the class names ({names_key!r}); {_CIFAR_SOURCE}"
            )
        classes = [c.decode(errors="replace") for c in names]
    else:
        classes = [str(i) for i in range(10 if name == "cifar10" else 100)]
    return Dataset(
        name, pretty, read(train_files), read(test_files), classes, crop_padding=4, flip=True
    )


def _find_cifar(name: str, root: str | None, cache_dir: str | None) -> Dataset:
    folder = _CIFAR[name][0]
    pretty = _CIFAR[name][6]
    hint = (
        f"point --data-root (data.root) at the official python-format files (a directory holding "
        f"'{folder}', that directory itself, or its .tar.gz), or at an ImageFolder tree "
        f"train/<class>/*.jpg + test/<class>/*.jpg (or its .tar.gz)"
    )
    if root is None:
        root = os.environ.get("DIFFNAS_DATA")
        if root is None:
            raise DatasetError(f"{name} needs a data location: {hint}")
    path = Path(root).expanduser()
    if not path.exists():
        raise DatasetError(f"{name} data location '{path}' does not exist; {hint}")
    if path.is_dir():
        for candidate in (path / folder, path):
            if (candidate / _CIFAR[name][1][0]).exists():
                return _load_cifar_batches(candidate, name)
        if (path / "train").is_dir():
            ds = load_imagefolder(str(path), cache_dir)
            return _as_cifar(ds, name, pretty, path)
        raise DatasetError(f"'{path}' holds neither '{folder}' batches nor a train/ folder; {hint}")
    if path.name.endswith((".tar.gz", ".tgz", ".tar")):
        ds = load_imagefolder(str(path), cache_dir)
        return _as_cifar(ds, name, pretty, path)
    raise DatasetError(f"'{path}' is not a directory or a .tar.gz archive; {hint}")


def _as_cifar(ds: Dataset, name: str, pretty: str, path: Path) -> Dataset:
    n_classes = 10 if name == "cifar10" else 100
    if ds.num_classes != n_classes or ds.input_size != 32:
        raise DatasetError(
            f"'{path}' has {ds.num_classes} classes of {ds.input_size}x{ds.input_size} images; "
            f"{pretty} has {n_classes} classes of 32x32 (use --dataset imagefolder for other data)"
        )
    jpeg = ds.label.endswith("(JPEG)")
    ds.name, ds.label = name, f"{pretty} ({'JPEG copy' if jpeg else 'image files'})"
    ds.crop_padding, ds.flip = 4, True
    return ds


@DATASETS.register("cifar10")
def load_cifar10(root: str | None = None, cache_dir: str | None = None) -> Dataset:
    """CIFAR-10: official python batches, or an ImageFolder copy (e.g. the JPEG one)."""
    return _find_cifar("cifar10", root, cache_dir)


@DATASETS.register("cifar100")
def load_cifar100(root: str | None = None, cache_dir: str | None = None) -> Dataset:
    """CIFAR-100: official python files, or an ImageFolder copy."""
    return _find_cifar("cifar100", root, cache_dir)


# =========================================================================== ImageFolder
def _iter_tree(path: Path) -> Iterator[tuple[str, bytes | None]]:
    """(relative path, file bytes) of every file under a directory or inside a tar archive,
    and (relative path, None) of every folder (to notice empty class folders)."""
    if path.is_dir():
        for dirpath, dirs, files in os.walk(path):
            for d in sorted(dirs):
                yield str((Path(dirpath) / d).relative_to(path)), None
            for f in sorted(files):
                full = Path(dirpath) / f
                if f.startswith("."):
                    continue
                yield str(full.relative_to(path)), full.read_bytes()
        return
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if member.isdir():
                    yield member.name, None
                    continue
                if not member.isfile() or Path(member.name).name.startswith("."):
                    continue
                fh = tar.extractfile(member)
                if fh is not None:
                    yield member.name, fh.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DatasetError(
            f"archive '{path}' is corrupt or truncated ({exc}); download it again"
        ) from None


def _decode(name: str, data: bytes, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img = img.convert("RGB")
            if size is not None and img.size != size:
                img = img.resize(size, Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        raise DatasetError(
            f"'{name}' is too large to decode safely ({exc}); resize it or remove it from the "
            f"ImageFolder tree"
        ) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(
            f"'{name}' is not an image PIL can read ({exc}); remove it from the ImageFolder tree"
        ) from None


def _cache_path(path: Path, cache_dir: str | None) -> Path:
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    if path.is_dir():  # a tree changes without its directory's mtime changing: hash the listing
        listing = sorted(
            f"{Path(d).relative_to(path)}/{f}:{os.stat(Path(d) / f).st_size}"
            for d, _, files in os.walk(path)
            for f in files
        )
        key += "|" + "\n".join(listing)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    base = Path(cache_dir).expanduser() if cache_dir else Path.home() / ".cache" / "diffnas"
    return base / f"imagefolder-{digest}.npz"


@DATASETS.register("imagefolder")
def load_imagefolder(root: str | None = None, cache_dir: str | None = None) -> Dataset:
    """An ImageFolder tree `train/<class>/*` and `test/<class>/*` (or `val/`), as a directory
    or a .tar(.gz) archive. Images are decoded once and cached as a uint8 .npz."""
    if root is None:
        raise DatasetError(
            "imagefolder needs --data-root (data.root): a directory or .tar.gz with "
            "train/<class>/<image> and test/<class>/<image>"
        )
    path = Path(root).expanduser()
    if not path.exists():
        raise DatasetError(f"ImageFolder location '{path}' does not exist")
    cache = _cache_path(path, cache_dir)
    if cache.exists():
        try:
            with np.load(cache, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            return _folder_dataset(arrays, path)
        except Exception:
            cache.unlink(missing_ok=True)  # a corrupt cache is rebuilt, not trusted
    # the first load decodes every image (CIFAR-10's 60,000 JPEGs: about 20 s) and writes a
    # cache of the size of the raw pixels (185 MB for CIFAR-10): say so, and where
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    say(f"decoding the images of '{path}' (once; CIFAR-10 takes about 20 s) ...")
    arrays = _decode_tree(path)
    cache.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=f".{cache.stem}.", suffix=".npz")
    with os.fdopen(fd, "wb") as fh:  # a unique temp name: concurrent runs may decode at once
        np.savez(fh, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, cache)
    say(
        f"decoded images cached in {cache} ({cache.stat().st_size / 1e6:.0f} MB; later runs "
        f"load it instead; data.cache_dir chooses the folder, deleting the file is safe)"
    )
    return _folder_dataset(arrays, path)


def _decode_tree(path: Path) -> dict[str, np.ndarray]:
    files: dict[str, list[tuple[str, str, bytes]]] = {}
    folders: set[str] = set()  # train/<class> folders, with or without images
    for rel, data in _iter_tree(path):
        parts = Path(rel).parts
        if data is None:
            if len(parts) >= 2 and parts[-2] == "train":
                folders.add(parts[-1])
            continue
        # find the split folder anywhere in the path: <prefix>/train/<class>/<file>
        for i, p in enumerate(parts):
            if p in ("train", "test", "val") and len(parts) == i + 3:
                if Path(parts[-1]).suffix.lower() not in IMAGE_SUFFIXES:
                    raise DatasetError(
                        f"'{rel}' in '{path}' is not an image file (expected {', '.join(IMAGE_SUFFIXES)}); "
                        f"remove it from the ImageFolder tree"
                    )
                split = "test" if p == "val" else p
                files.setdefault(split, []).append((parts[i + 1], rel, data))
                break
    if "train" not in files:
        raise DatasetError(
            f"'{path}' has no train/<class>/<image> files; an ImageFolder tree needs train/ and test/ "
            f"(or val/) folders with one subfolder per class"
        )
    if "test" not in files:
        raise DatasetError(f"'{path}' has train/ but no test/ (or val/) folder")
    classes = sorted({c for c, _, _ in files["train"]})
    unknown = sorted({c for c, _, _ in files["test"]} - set(classes))
    if unknown:
        raise DatasetError(f"'{path}': test classes {unknown} do not appear in train/")
    first = files["train"][0]
    size = _decode(first[1], first[2], None).shape[:2]
    wh = (size[1], size[0])
    out: dict[str, np.ndarray] = {"classes": np.array(classes)}
    is_jpeg = True
    for split in ("train", "test"):
        items = sorted(files[split], key=lambda t: t[1])
        images = np.empty((len(items), size[0], size[1], 3), dtype=np.uint8)
        for n, (_, rel, data) in enumerate(items):
            images[n] = _decode(rel, data, wh)
            is_jpeg &= Path(rel).suffix.lower() in (".jpg", ".jpeg")
        out[f"{split}_images"] = images.transpose(0, 3, 1, 2)
        out[f"{split}_labels"] = np.array([classes.index(c) for c, _, _ in items], dtype=np.int64)
    out["jpeg"] = np.array(is_jpeg)
    out["empty_classes"] = np.array(sorted(folders - set(classes)), dtype=str)
    return out


def _folder_dataset(arrays: dict[str, np.ndarray], path: Path) -> Dataset:
    classes = [str(c) for c in arrays["classes"]]
    empty = [str(c) for c in arrays.get("empty_classes", [])]
    if empty:
        warnings.warn(
            f"ImageFolder '{path}': the class folder(s) {', '.join(f'train/{c}' for c in empty)} "
            f"hold no images and are left out, so the data has {len(classes)} classes; add "
            f"images or remove the folder(s)",
            stacklevel=3,
        )
    if len(classes) == 1:
        warnings.warn(
            f"ImageFolder '{path}' has a single class ('{classes[0]}'): every label is the "
            f"same, so any network reaches 100 % and a search learns nothing; an ImageFolder "
            f"needs one train/<class> folder per class",
            stacklevel=3,
        )
    train = ImageSet(
        torch.from_numpy(arrays["train_images"]), torch.from_numpy(arrays["train_labels"])
    )
    test = ImageSet(
        torch.from_numpy(arrays["test_images"]), torch.from_numpy(arrays["test_labels"])
    )
    label = f"ImageFolder {path.name}" + (" (JPEG)" if bool(arrays["jpeg"]) else "")
    return Dataset(
        "imagefolder",
        label,
        train,
        test,
        classes,
        crop_padding=train.images.shape[-1] // 8,
        flip=True,
    )
