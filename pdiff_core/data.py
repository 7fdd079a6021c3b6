"""
Datasets: a registry of loaders that return fixed, seeded train/val/test splits
as float32 tensors, standardized with statistics of the train split only.

Nothing here downloads. digits ships with scikit-learn, MNIST-1D is generated
offline, and MNIST, Fashion-MNIST, CIFAR-10/100 or a user's .npz file are read
from local files. Every problem raises DataError with a one-line fix.
"""

import gzip
import math
import os
import pickle
import random
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from functools import lru_cache, partial
from importlib.util import find_spec
from typing import Callable, NamedTuple

import numpy as np
import torch

MIN_SPLIT = 10  # fewer examples than this in a split makes its accuracy meaningless
MNIST1D_SEED = 42  # the package's own seed: MNIST-1D is the same data for every run; our seed picks val


class DataError(ValueError):
    """A dataset problem the user can fix; the message says how."""


@dataclass
class Splits:
    name: str
    x_train: torch.Tensor = field(repr=False)
    y_train: torch.Tensor = field(repr=False)
    x_val: torch.Tensor = field(repr=False)
    y_val: torch.Tensor = field(repr=False)
    x_test: torch.Tensor = field(repr=False)
    y_test: torch.Tensor = field(repr=False)
    input_shape: tuple[int, ...]  # one example, no batch dim: (C,H,W), (C,L) or (F,)
    n_classes: int
    norm: tuple | None = field(default=None, repr=False)   # (scale, mean, std) of the train split

    def standardize(self, x) -> torch.Tensor:
        """Raw inputs in the dataset's own units (digits: pixels 0..16) -> the model's inputs, with
        the train split's statistics: how a user's own labelled examples enter the trunk."""
        scale, mean, std = self.norm
        x = torch.as_tensor(np.asarray(x), dtype=torch.float32).reshape(-1, *self.input_shape)
        return (x / scale - mean) / std


# -----------------------------------------------------------------------------
# splitting and preprocessing, shared by every dataset

def _split(y, frac, seed, what):
    """(keep, take) index arrays with ceil(frac*n) in take; stratified when the classes allow it"""
    from sklearn.model_selection import train_test_split
    n = len(y)
    n_take = math.ceil(frac * n)
    if min(n - n_take, n_take) < MIN_SPLIT:
        raise DataError(f"too few examples to split {what}: {n} would give {n - n_take} + {n_take}, "
                        f"need at least {MIN_SPLIT} in every split; add data or change val_frac/test_frac")
    idx = np.arange(n)
    try:
        return train_test_split(idx, test_size=n_take, random_state=seed, stratify=y)
    except ValueError:  # a class too rare to stratify: a plain random split is the best we can do
        return train_test_split(idx, test_size=n_take, random_state=seed)


def _finish(name, train, val, test, n_classes, scale=1.0):
    """(x, y) numpy pairs -> Splits; mean/std come from train only, so val/test never leak into it"""
    xs = [torch.tensor(x, dtype=torch.float32).div_(scale) for x, _ in (train, val, test)]
    ys = [torch.tensor(y, dtype=torch.int64) for _, y in (train, val, test)]
    x0 = xs[0]
    dims = [0, *range(2, x0.dim())] if x0.dim() > 2 else [0, 1]  # per channel; flat features share one
    var, mean = torch.var_mean(x0, dim=dims, keepdim=True, correction=0)
    if not (torch.isfinite(var).all() and torch.isfinite(mean).all()):  # float32 squares overflow beyond ~1e19
        raise DataError(f"{name}: the train split's values are too large to standardize in float32 (their variance "
                        f"overflows); rescale them first, e.g. X / np.abs(X).max()")
    std = torch.where(var > 0, var.sqrt(), torch.ones_like(var))  # a constant channel must not become NaN
    for x in xs:
        x.sub_(mean).div_(std)
    return Splits(name, xs[0], ys[0], xs[1], ys[1], xs[2], ys[2], tuple(x0.shape[1:]), n_classes, (scale, mean, std))


def _from_pool(name, x, y, n_classes, seed, val_frac, test_frac, scale=1.0):
    """one labelled pool -> test is test_frac of all, val is val_frac of all, train the rest"""
    rest, test = _split(y, test_frac, seed, f"{name} into train+val and test")
    tr, va = _split(y[rest], val_frac / (1 - test_frac), seed, f"{name} into train and val")
    tr, va = rest[tr], rest[va]
    return _finish(name, (x[tr], y[tr]), (x[va], y[va]), (x[test], y[test]), n_classes, scale)


def _from_fixed(name, x, y, x_test, y_test, n_classes, seed, val_frac, scale=1.0):
    """a fixed train/test pair -> val is val_frac of the train part; test keeps its file order"""
    if len(y_test) < MIN_SPLIT:
        raise DataError(f"{name} has only {len(y_test)} test examples; need at least {MIN_SPLIT}")
    tr, va = _split(y, val_frac, seed, f"{name}'s train part into train and val")
    return _finish(name, (x[tr], y[tr]), (x[va], y[va]), (x_test, y_test), n_classes, scale)


def _check_labels(y, n_classes, where):
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise DataError(f"{where} has labels outside 0..{n_classes - 1}; re-download it")


def _missing(title, files, root, alt, where):
    """the 'files not found' error: which files go where, and how to get them"""
    if not root:
        return DataError(f"{title} files not found: no data folder given; put {files} in a folder "
                         f"and pass --set data_root=DIR ({where})")
    gone = "" if os.path.isdir(root) else " (that folder does not exist)"
    return DataError(f"{title} files not found: expected {files} in {root}{alt}{gone}; {where}, "
                     f"or pass --set data_root=DIR")


# -----------------------------------------------------------------------------
# digits and MNIST-1D: built in, no files

def _load_digits(root, seed, val_frac, test_frac):
    from sklearn.datasets import load_digits
    d = load_digits()  # bundled with scikit-learn: 1797 8x8 images, pixels 0..16
    return _from_pool("digits", d.data.reshape(-1, 1, 8, 8), d.target, 10, seed, val_frac, test_frac, scale=16.0)


@lru_cache(maxsize=1)
def _mnist1d_arrays():
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:
        raise DataError(f"the mnist1d package failed to import ({e}); pip install mnist1d (it also imports "
                        f"scipy, matplotlib and requests)") from None
    args = get_dataset_args()
    args.seed = MNIST1D_SEED
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(args)  # the offline generator; mnist1d's get_dataset would try to download
    finally:  # make_dataset reseeds numpy's and Python's global RNGs; give the caller its state back
        np.random.set_state(np_state)
        random.setstate(py_state)
    return d["x"], d["y"], d["x_test"], d["y_test"]


def _load_mnist1d(root, seed, val_frac, test_frac):
    x, y, xt, yt = _mnist1d_arrays()
    return _from_fixed("mnist1d", x[:, None, :], y, xt[:, None, :], yt, 10, seed, val_frac)


def _check_mnist1d(root):
    if find_spec("mnist1d") is None:
        raise DataError("mnist1d needs the mnist1d package; pip install mnist1d")


# -----------------------------------------------------------------------------
# npz: the user's own arrays

_NPZ_SPLIT_KEYS = ("X_train", "y_train", "X_test", "y_test")
_NPZ_HOWTO = "save X and y, or X_train, y_train, X_test and y_test, with np.savez"


def _npz_path(root):
    if not root:
        raise DataError("dataset 'npz' needs the path of a .npz file: pass --set data_root=FILE.npz")
    path = os.path.expanduser(str(root))
    if not os.path.isfile(path):
        raise DataError(f"npz file not found: {path}; {_NPZ_HOWTO} and pass --set data_root=FILE.npz")
    return path


def _npz_headers(path):
    """{key: (shape, dtype)} from each member's .npy header: reads no data and unpickles nothing"""
    try:
        with zipfile.ZipFile(path) as zf:
            out = {}
            for member in zf.namelist():
                with zf.open(member) as f:
                    major, _ = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(f)
                out[member.removesuffix(".npy")] = (shape, dtype)
            return out
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read {path} as a .npz archive ({e}); {_NPZ_HOWTO}") from None


def _npz_layout(path):
    """check keys, dtypes, ranks and lengths from the headers; return [(X key, y key), ...]"""
    meta = _npz_headers(path)
    want = _NPZ_SPLIT_KEYS if any(k in meta for k in _NPZ_SPLIT_KEYS) else ("X", "y")
    missing = [k for k in want if k not in meta]
    if missing:
        has = ", ".join(sorted(meta)) or "nothing"
        raise DataError(f"{path} lacks {', '.join(missing)} (it has: {has}); {_NPZ_HOWTO}")
    pairs = [want[i:i + 2] for i in range(0, len(want), 2)]
    for xk, yk in pairs:
        for k in (xk, yk):
            dtype = meta[k][1]
            if dtype.kind not in "biuf":
                what = "Python objects, which are never unpickled" if dtype.hasobject else f"dtype {dtype}"
                raise DataError(f"{path}: {k} holds {what}; save a numeric array, "
                                f"e.g. np.asarray({k}, dtype=np.float32)")
        xs, ys = meta[xk][0], meta[yk][0]
        if len(xs) not in (2, 3, 4):
            raise DataError(f"{path}: {xk} has shape {xs}; expected N×features, N×C×L or N×C×H×W")
        if 0 in xs[1:]:
            raise DataError(f"{path}: {xk} has shape {xs}, so its examples hold no values; save at least one "
                            f"feature per example")
        if len(ys) != 1:
            raise DataError(f"{path}: {yk} has shape {ys}; expected one label per example, shape (N,) "
                            f"(try y.ravel())")
        if xs[0] != ys[0]:
            raise DataError(f"{path}: {xk} has {xs[0]} examples but {yk} has {ys[0]} labels; they must match")
    if len(pairs) == 2 and meta["X_train"][0][1:] != meta["X_test"][0][1:]:
        raise DataError(f"{path}: X_train examples have shape {meta['X_train'][0][1:]} but X_test ones "
                        f"{meta['X_test'][0][1:]}; they must match")
    need = [3 * MIN_SPLIT] if len(pairs) == 1 else [2 * MIN_SPLIT, MIN_SPLIT]  # train+val+test / train+val, test
    for (xk, _), n in zip(pairs, need):
        if meta[xk][0][0] < n:
            raise DataError(f"{path}: {xk} has {meta[xk][0][0]} examples, too few; need at least {n} "
                            f"({MIN_SPLIT} per split)")
    return pairs


def _npz_labels(path, ys):
    """{key: labels} -> ({key: int64 labels}, n_classes); classes are 0..max and each must occur"""
    out = {}
    for k, y in ys.items():
        if y.dtype.kind == "f":
            bad = y[~(np.isfinite(y) & (y == np.round(y)))]
            if len(bad):
                raise DataError(f"{path}: {k} holds non-integer labels such as {bad[:3].tolist()}; "
                                f"save integer class ids 0..C-1")
        out[k] = y.astype(np.int64)
    seen = np.unique(np.concatenate(list(out.values())))
    remap = "remap them, e.g. y = np.unique(y, return_inverse=True)[1]"
    if seen[0] < 0:
        raise DataError(f"{path}: labels must be 0..C-1 but include negative values "
                        f"{seen[seen < 0][:5].tolist()}; {remap}")
    n_classes = int(seen[-1]) + 1
    if n_classes != len(seen):  # the first 10 gaps lie below len(seen)+10: no huge arange for a stray big label
        gaps = np.setdiff1d(np.arange(min(n_classes, len(seen) + 10)), seen)[:10].tolist()
        raise DataError(f"{path}: labels must be 0..C-1 with every class present, but the max label is "
                        f"{n_classes - 1} and {gaps} never occur; {remap}")
    if n_classes < 2:
        raise DataError(f"{path}: every label is 0; a classifier needs at least 2 classes")
    if "y_test" in out:   # a class only the test part has is always wrong, which reads as a failed run
        unseen = np.setdiff1d(out["y_test"], out["y_train"])
        if len(unseen):
            raise DataError(f"{path}: y_test has classes {unseen[:10].tolist()} that y_train never has, so no model "
                            f"can predict them; put examples of them in the train part (do both use the same ids?)")
    return out, n_classes


def _npz_read(path, keys):
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in keys}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read {path} ({e}); {_NPZ_HOWTO}") from None


def _check_npz(root):
    path = _npz_path(root)
    pairs = _npz_layout(path)
    _npz_labels(path, _npz_read(path, [yk for _, yk in pairs]))  # labels are small; X is not read


def _load_npz(root, seed, val_frac, test_frac):
    path = _npz_path(root)
    pairs = _npz_layout(path)
    data = _npz_read(path, [k for pair in pairs for k in pair])
    ys, n_classes = _npz_labels(path, {yk: data[yk] for _, yk in pairs})
    for xk, _ in pairs:
        if data[xk].dtype.kind == "f" and not np.isfinite(data[xk]).all():
            raise DataError(f"{path}: {xk} contains NaN or inf; drop or impute those values first")
    if len(pairs) == 1:
        return _from_pool("npz", data["X"], ys["y"], n_classes, seed, val_frac, test_frac)
    return _from_fixed("npz", data["X_train"], ys["y_train"], data["X_test"], ys["y_test"], n_classes,
                       seed, val_frac)


# -----------------------------------------------------------------------------
# MNIST and Fashion-MNIST: IDX files

_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_IDX_SETS = {  # name: (title, torchvision's subfolder, where to get the files)
    "mnist": ("MNIST", "MNIST/raw", "download them from the MNIST site and put them there"),
    "fashion_mnist": ("Fashion-MNIST", "FashionMNIST/raw",
                      "download them from github.com/zalandoresearch/fashion-mnist and put them there"),
}


def _open(path):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _idx_dims(head, path):
    """dims from an IDX header: two zero bytes, type 0x08 (unsigned byte), ndim, then ndim big-endian sizes"""
    if len(head) < 4 or head[:3] != b"\0\0\x08" or not 1 <= head[3] <= 4 or len(head) < 4 + 4 * head[3]:
        raise DataError(f"{path} is not an unsigned-byte IDX file (starts with {head[:4].hex() or 'nothing'}); "
                        f"re-download it")
    return struct.unpack(f">{head[3]}I", head[4:4 + 4 * head[3]])


def read_idx(path: str) -> np.ndarray:
    """IDX file (gzipped when the name ends in .gz) -> read-only uint8 array, magic number and size checked"""
    try:
        with _open(path) as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path} ({e}); re-download it") from None
    dims = _idx_dims(data[:20], path)
    start, size = 4 + 4 * len(dims), math.prod(dims)
    if len(data) - start != size:
        raise DataError(f"{path} holds {len(data) - start} data bytes but its header {dims} needs {size}; "
                        f"re-download it")
    return np.frombuffer(data, np.uint8, size, start).reshape(dims)


def _idx_locate(name, root):
    """the four IDX paths (each raw or .gz), in root itself or in torchvision's layout under it"""
    title, sub, where = _IDX_SETS[name]
    if root:
        root = os.path.expanduser(str(root))
        for d in (root, os.path.join(root, sub)):
            paths = [next(filter(os.path.isfile, (os.path.join(d, f), os.path.join(d, f + ".gz"))), None)
                     for f in _IDX_FILES]
            if all(paths):
                return paths
    files = ", ".join(f + "[.gz]" for f in _IDX_FILES)
    raise _missing(title, files, root, f" or in {os.path.join(root, sub)}" if root else "", where)


def _idx_check_shapes(paths, shapes):
    for img, lab, si, sl in ((*paths[:2], *shapes[:2]), (*paths[2:], *shapes[2:])):
        if len(si) != 3 or tuple(si[1:]) != (28, 28):
            raise DataError(f"{img}: expected N×28×28 images but its header says {tuple(si)}; is it the right file?")
        if tuple(sl) != (si[0],):
            raise DataError(f"{lab}: expected {si[0]} labels to match {img} but its header says {tuple(sl)}; "
                            f"re-download both")


def _check_idx(name, root):
    paths = _idx_locate(name, root)
    shapes = []
    for p in paths:
        try:
            with _open(p) as f:
                head = f.read(20)  # the header only: 4 bytes + 4 per dim
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"cannot read {p} ({e}); re-download it") from None
        dims = _idx_dims(head, p)
        if not p.endswith(".gz") and os.path.getsize(p) != 4 + 4 * len(dims) + math.prod(dims):
            raise DataError(f"{p} has {os.path.getsize(p)} bytes, which does not match its header {dims}; "
                            f"re-download it")
        shapes.append(dims)
    _idx_check_shapes(paths, shapes)


def _read_idx_set(name, root):
    paths = _idx_locate(name, root)
    x, y, xt, yt = (read_idx(p) for p in paths)
    _idx_check_shapes(paths, [a.shape for a in (x, y, xt, yt)])
    _check_labels(y, 10, paths[1])
    _check_labels(yt, 10, paths[3])
    return x[:, None], y.astype(np.int64), xt[:, None], yt.astype(np.int64)


# -----------------------------------------------------------------------------
# CIFAR-10 and CIFAR-100: binary version, or the python version through a locked-down unpickler

class _Cifar(NamedTuple):
    title: str
    n_classes: int
    header: int  # label bytes before each 3072-byte image in the binary version; the fine label is the last
    bin_dir: str
    py_dir: str
    files: tuple  # python version names; the binary version adds .bin; the last one is the test set
    label_key: bytes

    def hint(self):
        names = "{" + ",".join(self.files) + "}"
        return f"{self.bin_dir}/{names}.bin or {self.py_dir}/{names}"


_CIFAR = {
    "cifar10": _Cifar("CIFAR-10", 10, 1, "cifar-10-batches-bin", "cifar-10-batches-py",
                      (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"), b"labels"),
    "cifar100": _Cifar("CIFAR-100", 100, 2, "cifar-100-binary", "cifar-100-python", ("train", "test"), b"fine_labels"),
}
_CIFAR_WHERE = "download the binary or python version from www.cs.toronto.edu/~kriz/cifar.html and extract it there"

_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy's array rebuilder, whichever module holds it in this version
_PICKLE_ALLOWED = {  # all that a CIFAR python batch references: a dict of bytes, lists and one uint8 array
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _SafeUnpickler(pickle.Unpickler):
    """Refuses every global but numpy's array pieces, so a crafted file cannot call os.system, eval, ..."""

    def __init__(self, f, path):
        super().__init__(f, encoding="bytes")
        self.path = path

    def find_class(self, module, name):
        if (module, name) in _PICKLE_ALLOWED:
            return _PICKLE_ALLOWED[module, name]
        raise DataError(f"refusing to load {self.path}: it references {module}.{name}, which a CIFAR batch never "
                        f"does; use the files from the official archive, or its binary version")


def _cifar_locate(name, root):
    """('bin' or 'py', paths): the binary version first, each in its usual subfolder or in root itself"""
    spec = _CIFAR[name]
    if root:
        root = os.path.expanduser(str(root))
        for kind, sub, ext in (("bin", spec.bin_dir, ".bin"), ("py", spec.py_dir, "")):
            for d in (os.path.join(root, sub), root):
                paths = [os.path.join(d, f + ext) for f in spec.files]
                if all(map(os.path.isfile, paths)):
                    return kind, paths
    alt = f" (the files may also sit directly in {root})" if root else ""
    raise _missing(spec.title, spec.hint(), root, alt, _CIFAR_WHERE)


def _cifar_read_bin(path, spec):
    record = spec.header + 3072
    raw = np.fromfile(path, np.uint8)
    if raw.size == 0 or raw.size % record:
        raise DataError(f"{path} has {raw.size} bytes, not a whole number of {record}-byte {spec.title} records; "
                        f"re-download it")
    raw = raw.reshape(-1, record)
    return raw[:, spec.header:].reshape(-1, 3, 32, 32), raw[:, spec.header - 1].astype(np.int64)


def _cifar_read_py(path, spec):
    try:
        with open(path, "rb") as f:
            d = _SafeUnpickler(f, path).load()
        data, labels = d[b"data"], np.asarray(d[spec.label_key], dtype=np.int64)
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and labels.ndim == 1
                and data.shape == (len(labels), 3072)):
            raise ValueError(f"b'data' should be a uint8 array of shape ({len(labels)}, 3072)")
    except DataError:
        raise
    except Exception as e:  # untrusted bytes can fail in any way; all of them mean "not a CIFAR batch"
        raise DataError(f"cannot read {path} as a {spec.title} python batch ({type(e).__name__}: {e}); "
                        f"re-download it or use the binary version") from None
    return data.reshape(-1, 3, 32, 32), labels


def _check_cifar(name, root):
    spec = _CIFAR[name]
    kind, paths = _cifar_locate(name, root)
    for p in paths:
        size, record = os.path.getsize(p), spec.header + 3072
        if kind == "bin" and (size == 0 or size % record):
            raise DataError(f"{p} has {size} bytes, not a whole number of {record}-byte {spec.title} records; "
                            f"re-download it")
        if kind == "py":
            with open(p, "rb") as f:
                if f.read(1) != pickle.PROTO:
                    raise DataError(f"{p} is not a pickle file; re-download {spec.title}'s python version")


def _read_cifar(name, root):
    spec = _CIFAR[name]
    kind, paths = _cifar_locate(name, root)
    read = _cifar_read_bin if kind == "bin" else _cifar_read_py
    parts = [read(p, spec) for p in paths]
    for p, (_, y) in zip(paths, parts):
        _check_labels(y, spec.n_classes, p)
    xt, yt = parts.pop()  # the last file is the test set
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts]), xt, yt


# -----------------------------------------------------------------------------
# the registry and the public entry points

def read_raw(name: str, root: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) of a file-based image set as stored: uint8 N×C×H×W, int64 labels"""
    if name in _IDX_SETS:
        return _read_idx_set(name, root)
    if name in _CIFAR:
        return _read_cifar(name, root)
    raise DataError(f"read_raw reads the image sets {', '.join(sorted([*_IDX_SETS, *_CIFAR]))}, not '{name}'")


def _load_images(name, root, seed, val_frac, test_frac):
    x, y, xt, yt = read_raw(name, root)
    n_classes = _CIFAR[name].n_classes if name in _CIFAR else 10
    return _from_fixed(name, x, y, xt, yt, n_classes, seed, val_frac, scale=255.0)


@dataclass(frozen=True)
class Dataset:
    """A registry entry: its loader, its cheap preflight, and what its format fixes without the data."""
    load: Callable[..., Splits]                       # loader(root, seed, val_frac, test_frac)
    check: Callable[[str | None], None] | None = None  # preflight(root): headers, not data; None: nothing to check
    example: tuple | None = None                      # (one example's shape, classes); npz: from its headers
    needs_root: bool = False                          # read from the user's files: data_root


DATASETS: dict[str, Dataset] = {
    "digits": Dataset(_load_digits, example=((1, 8, 8), 10)),
    "mnist1d": Dataset(_load_mnist1d, _check_mnist1d, ((1, 40), 10)),
    "npz": Dataset(_load_npz, _check_npz, needs_root=True),
    **{name: Dataset(partial(_load_images, name), partial(_check_idx, name), ((1, 28, 28), 10), True)
       for name in _IDX_SETS},
    **{name: Dataset(partial(_load_images, name), partial(_check_cifar, name), ((3, 32, 32), spec.n_classes), True)
       for name, spec in _CIFAR.items()},
}


def dataset_names() -> list[str]:
    return sorted(DATASETS)


def _entry(name) -> Dataset:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(dataset_names())}")
    return DATASETS[name]


def check_dataset(name: str, root: str | None = None) -> None:
    """Raise DataError for an unknown name or missing/malformed files; reads headers, not the data."""
    entry = _entry(name)
    if entry.check is not None:
        entry.check(root)


def example_shape(name: str, root: str | None) -> tuple | None:
    """(one example's shape, classes) without reading any data: enough to build the model and check
    layer names as you type. An npz's come from its .npy headers, with 2 classes standing in (the
    class count changes no layer name); None where the file cannot say (its check says why)."""
    entry = DATASETS.get(name)
    if entry is None:
        return None
    if entry.example is not None or name != "npz":
        return entry.example
    path = os.path.expanduser(root) if root else ""
    try:
        meta = _npz_headers(path) if path and os.path.isfile(path) else {}
    except DataError:
        return None
    x = meta.get("X_train") or meta.get("X")
    return (tuple(x[0][1:]), 2) if x and len(x[0]) > 1 else None


def load_dataset(name: str, root: str | None = None, seed: int = 0, val_frac: float = 0.15,
                 test_frac: float = 0.2) -> Splits:
    """Seeded, standardized splits; the same (name, root, seed, fractions) always gives identical tensors."""
    loader = _entry(name).load
    if not (0 < val_frac < 1 and 0 < test_frac < 1 and val_frac + test_frac < 1):
        raise DataError(f"val_frac={val_frac} and test_frac={test_frac} must each lie between 0 and 1 "
                        f"and sum to less than 1")
    return loader(root, seed, val_frac, test_frac)
