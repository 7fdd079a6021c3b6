"""Tests for pdiff_core.data: splits, preprocessing, file formats and every error path.

All data files are tiny fakes written here; nothing is downloaded.
"""

import builtins
import collections
import gzip
import os
import pickle
import random
import re
import struct
from collections import Counter

import numpy as np
import pytest
import torch

from pdiff_core import data
from pdiff_core.data import DataError, check_dataset, dataset_names, load_dataset, read_idx, read_raw

RNG = np.random.default_rng(1234)


# -----------------------------------------------------------------------------
# helpers

def tensors(s):
    return [s.x_train, s.y_train, s.x_val, s.y_val, s.x_test, s.y_test]


def assert_same_splits(a, b):
    for ta, tb in zip(tensors(a), tensors(b)):
        assert torch.equal(ta, tb)


def rows(x, y):
    """multiset of (label, example) keys, to compare splits regardless of order"""
    x = np.ascontiguousarray(x).reshape(len(x), -1)
    return Counter(bytes([int(l)]) + r.tobytes() for l, r in zip(y, x))


def assert_matches_raw(s, x_train, y_train, x_test, y_test):
    """s is exactly raw data under one per-channel affine map: test in file order, train+val = raw train"""
    assert torch.equal(s.y_test, torch.as_tensor(y_test, dtype=torch.int64))  # fixed test set keeps its order
    xt, rt = s.x_test.double().numpy(), x_test.astype(np.float64)
    trval = torch.cat([s.x_train, s.x_val]).double().numpy()
    back = np.empty_like(trval)
    for c in range(xt.shape[1]):
        a, b = np.polyfit(rt[:, c].ravel(), xt[:, c].ravel(), 1)
        assert a > 0
        np.testing.assert_allclose(a * rt[:, c] + b, xt[:, c], atol=1e-4)  # pixel-exact up to the affine map
        back[:, c] = (trval[:, c] - b) / a
    np.testing.assert_allclose(back, np.round(back), atol=1e-3)
    got = np.round(back).astype(x_train.dtype)
    assert rows(got, torch.cat([s.y_train, s.y_val]).numpy()) == rows(x_train, y_train)


def assert_standardized(s):
    """train split has mean 0 / std 1 per channel: statistics come from train, not val or test"""
    x = s.x_train.double()
    dims = [0, *range(2, x.dim())] if x.dim() > 2 else [0, 1]
    assert torch.allclose(x.mean(dims), torch.zeros(1, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(x.std(dims, correction=0), torch.ones(1, dtype=torch.float64), atol=1e-4)
    assert abs(s.x_val.double().mean().item()) > 1e-6  # val is not standardized on its own


def write_idx(path, arr):
    raw = b"\0\0\x08" + bytes([arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()
    with (gzip.open if str(path).endswith(".gz") else open)(path, "wb") as f:
        f.write(raw)


def fake_mnist(folder, gz=(True, False, True, False), n_train=80, n_test=20):
    os.makedirs(folder, exist_ok=True)
    x = RNG.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    y = (np.arange(n_train) % 10).astype(np.uint8)
    xt = RNG.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    yt = (np.arange(n_test) * 7 % 10).astype(np.uint8)
    for name, arr, z in zip(data._IDX_FILES, (x, y, xt, yt), gz):
        write_idx(os.path.join(folder, name + (".gz" if z else "")), arr)
    return x, y, xt, yt


def fake_cifar_bin(root, n_classes, per_file=20):
    """CIFAR binary records; CIFAR-100 gets a coarse label that differs from the fine one"""
    spec = data._CIFAR[f"cifar{n_classes}"]
    folder = root / spec.bin_dir
    folder.mkdir(parents=True)
    n_train = 100 if n_classes == 100 else per_file
    xs, ys = [], []
    for i, fname in enumerate(f + ".bin" for f in spec.files):
        n = per_file if fname.startswith("test") else n_train
        x = RNG.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = ((np.arange(n) + i) % n_classes).astype(np.uint8)
        head = [y] if n_classes == 10 else [(n_classes - 1 - y) % 20, y]  # coarse, fine
        (folder / fname).write_bytes(np.column_stack([*head, x]).astype(np.uint8).tobytes())
        xs.append(x.reshape(-1, 3, 32, 32))
        ys.append(y.astype(np.int64))
    return np.concatenate(xs[:-1]), np.concatenate(ys[:-1]), xs[-1], ys[-1]


class Py2Pickler(pickle._Pickler):
    """writes what Python 2's cPickle wrote for the real CIFAR files: str as BINSTRING, numpy.core module"""
    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        b = obj if isinstance(obj, bytes) else obj.encode("latin1")
        self.write(pickle.BINSTRING + struct.pack("<i", len(b)) + b)
        self.memoize(obj)

    dispatch[bytes] = dispatch[str] = save_py2_str

    def save_global(self, obj, name=None):
        if obj is data._RECONSTRUCT:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def fake_cifar_py(root, n_classes, py2=False, per_file=20):
    spec = data._CIFAR[f"cifar{n_classes}"]
    folder = root / spec.py_dir
    folder.mkdir(parents=True)
    xs, ys = [], []
    for i, fname in enumerate(spec.files):
        n = 100 if (n_classes == 100 and fname == "train") else per_file
        x = RNG.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = [int(v) for v in (np.arange(n) + i) % n_classes]
        d = {b"batch_label": b"fake batch", spec.label_key: y, b"data": x, b"filenames": [b"img.png"] * n}
        if n_classes == 100:
            d[b"coarse_labels"] = [v // 5 for v in y]
        with open(folder / fname, "wb") as f:
            (Py2Pickler(f, protocol=2) if py2 else pickle.Pickler(f)).dump(d)
        xs.append(x.reshape(-1, 3, 32, 32))
        ys.append(np.array(y))
    return np.concatenate(xs[:-1]), np.concatenate(ys[:-1]), xs[-1], ys[-1]


class Evil:
    """unpickling this runs its payload"""

    def __init__(self, how, marker):
        self.how, self.marker = how, str(marker)

    def __reduce__(self):
        if self.how == "system":
            return os.system, (f"touch '{self.marker}'",)
        return builtins.eval, (f"open({self.marker!r}, 'w').close()",)


# -----------------------------------------------------------------------------
# registry and arguments

def test_registry_names():
    assert dataset_names() == sorted(data.DATASETS)
    assert {"digits", "mnist1d", "npz", "mnist", "fashion_mnist", "cifar10", "cifar100"} <= set(dataset_names())


@pytest.mark.parametrize("call", [lambda: load_dataset("foo"), lambda: check_dataset("foo", None)])
def test_unknown_name_lists_choices(call):
    with pytest.raises(DataError) as e:
        call()
    msg = str(e.value)
    assert "unknown dataset 'foo'" in msg and "\n" not in msg
    assert msg.endswith(", ".join(dataset_names()))


@pytest.mark.parametrize("val,test", [(0, 0.2), (0.15, 0), (0.5, 0.5), (1.2, 0.1), (-0.1, 0.2)])
def test_bad_fractions(val, test):
    with pytest.raises(DataError, match="val_frac"):
        load_dataset("digits", val_frac=val, test_frac=test)


def test_data_error_is_value_error():
    assert issubclass(DataError, ValueError)


# -----------------------------------------------------------------------------
# digits

def digits_raw():
    from sklearn.datasets import load_digits
    d = load_digits()
    return d.data.reshape(-1, 1, 8, 8), d.target


def test_digits_shapes_and_types():
    s = load_dataset("digits")
    assert (s.name, s.input_shape, s.n_classes) == ("digits", (1, 8, 8), 10)
    n_test, n_val = int(np.ceil(0.2 * 1797)), int(np.ceil(0.15 / 0.8 * int(1797 - np.ceil(0.2 * 1797))))
    assert (len(s.y_test), len(s.y_val), len(s.y_train)) == (n_test, n_val, 1797 - n_test - n_val)
    for x, y in [(s.x_train, s.y_train), (s.x_val, s.y_val), (s.x_test, s.y_test)]:
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape[1:] == (1, 8, 8) and len(x) == len(y)
    assert set(s.y_train.tolist()) == set(range(10))
    assert_standardized(s)


def test_digits_splits_partition_the_data():
    """every example lands in exactly one split, pixel-exact (recover pixel levels 0..16 from the affine map)"""
    s = load_dataset("digits", seed=3)
    x = torch.cat([s.x_train, s.x_val, s.x_test]).double().numpy()
    levels = np.unique(x)
    raw = (x - levels[0]) / (levels[1] - levels[0])  # pixel 0 is the minimum, pixel 1 the next level
    np.testing.assert_allclose(raw, np.round(raw), atol=1e-3)
    X, y = digits_raw()
    got = rows(np.round(raw).astype(np.uint8), torch.cat([s.y_train, s.y_val, s.y_test]).numpy())
    assert got == rows(X.astype(np.uint8), y)


def test_digits_stratified():
    s = load_dataset("digits")
    _, y = digits_raw()
    for part, frac in [(s.y_test, 0.2), (s.y_val, 0.15)]:
        counts = np.bincount(part.numpy(), minlength=10)
        assert np.all(np.abs(counts - frac * np.bincount(y)) <= 1.5)


def test_digits_deterministic_and_seeded():
    a, b = load_dataset("digits", seed=5), load_dataset("digits", seed=5)
    assert_same_splits(a, b)
    c = load_dataset("digits", seed=6)
    assert not torch.equal(a.y_test, c.y_test) or not torch.equal(a.x_test, c.x_test)
    assert not torch.equal(a.y_val, c.y_val)


def test_digits_fractions():
    s = load_dataset("digits", val_frac=0.1, test_frac=0.3)
    assert len(s.y_test) == int(np.ceil(0.3 * 1797))
    assert abs(len(s.y_val) - 0.1 * 1797) <= 2


# -----------------------------------------------------------------------------
# MNIST-1D

@pytest.mark.slow
def test_mnist1d_shapes_determinism_and_global_rng():
    np.random.seed(7)
    random.seed(7)
    before_np, before_py = np.random.get_state()[1].copy(), random.getstate()
    data._mnist1d_arrays.cache_clear()
    a = load_dataset("mnist1d", seed=0)
    assert np.array_equal(np.random.get_state()[1], before_np) and random.getstate() == before_py  # not reseeded
    assert (a.input_shape, a.n_classes) == ((1, 40), 10)
    assert (len(a.y_train), len(a.y_val), len(a.y_test)) == (3400, 600, 1000)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    assert_standardized(a)
    data._mnist1d_arrays.cache_clear()  # regenerate: determinism must not rest on the cache
    assert_same_splits(a, load_dataset("mnist1d", seed=0))
    c = load_dataset("mnist1d", seed=1)
    assert torch.equal(a.y_test, c.y_test)  # the fixed test part is the same data for every seed
    assert not torch.equal(a.y_val, c.y_val)  # the seed picks a different val carve
    check_dataset("mnist1d", None)


# -----------------------------------------------------------------------------
# npz

def save_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_npz_pool_layouts(tmp_path):
    X = RNG.integers(0, 10, (100, 6)).astype(np.float64)
    y = np.arange(100) % 3
    path = save_npz(tmp_path / "d.npz", X=X, y=y)
    check_dataset("npz", path)
    s = load_dataset("npz", path, seed=0)
    assert (s.input_shape, s.n_classes) == ((6,), 3)
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (65, 15, 20)
    assert abs(s.x_train.double().mean().item()) < 1e-5 and abs(s.x_train.double().std(correction=0).item() - 1) < 1e-4
    assert Counter(torch.cat([s.y_train, s.y_val, s.y_test]).tolist()) == Counter(y.tolist())
    assert_same_splits(s, load_dataset("npz", path, seed=0))
    assert not torch.equal(s.y_test, load_dataset("npz", path, seed=1).y_test)
    for shape in [(100, 2, 5), (100, 3, 4, 4)]:
        p = save_npz(tmp_path / f"d{len(shape)}.npz", X=RNG.random(shape), y=y)
        assert load_dataset("npz", p).input_shape == shape[1:]


def test_npz_split_layout_keeps_test(tmp_path):
    x = RNG.integers(0, 256, (80, 2, 10), dtype=np.uint8)
    xt = RNG.integers(0, 256, (15, 2, 10), dtype=np.uint8)
    y, yt = np.arange(80) % 4, np.arange(15) % 4
    # float labels that are whole numbers are accepted
    path = save_npz(tmp_path / "s.npz", X_train=x, y_train=y.astype(np.float32), X_test=xt, y_test=yt)
    s = load_dataset("npz", path, seed=2)
    assert (s.input_shape, s.n_classes, len(s.y_val), len(s.y_train)) == ((2, 10), 4, 12, 68)
    assert_matches_raw(s, x, y, xt, yt)
    assert_standardized(s)


def npz_cases():
    X, y = RNG.random((60, 4)), np.arange(60) % 3
    objs = np.empty(60, dtype=object)
    objs[:] = [[1.0]] * 60
    nan = X.copy()
    nan[3, 1] = np.nan
    inf = X.copy()
    inf[5, 0] = np.inf
    # (id, arrays, message fragment, caught by the cheap check_dataset too)
    return [
        ("no-y", dict(X=X), r"lacks y \(it has: X\)", True),
        ("partial-split", dict(X_train=X, y_train=y, X_test=X), "lacks y_test", True),
        ("object-X", dict(X=objs, y=y), "Python objects", True),
        ("string-X", dict(X=np.array(["a"] * 60), y=y), "X holds dtype <U1", True),
        ("string-y", dict(X=X, y=np.array(["a"] * 60)), "y holds dtype", True),
        ("complex-X", dict(X=X.astype(complex), y=y), "X holds dtype complex", True),
        ("float-y", dict(X=X, y=y + 0.5), r"non-integer labels such as \[0.5", True),
        ("nan-y", dict(X=X, y=np.where(y == 0, np.nan, y)), "non-integer labels", True),
        ("negative-y", dict(X=X, y=y - 1), r"negative values \[-1\]", True),
        ("gap-y", dict(X=X, y=np.where(y == 1, 3, y)), r"\[1\] never occur", True),
        ("huge-label", dict(X=X, y=np.where(y == 1, 10**12, y)), r"\[1, 3, 4, 5", True),
        ("one-class", dict(X=X, y=np.zeros(60, int)), "at least 2 classes", True),
        ("lengths", dict(X=X, y=y[:50]), "X has 60 examples but y has 50 labels", True),
        ("rank-1-X", dict(X=X[:, 0], y=y), r"X has shape \(60,\)", True),
        ("rank-5-X", dict(X=X.reshape(60, 1, 1, 2, 2), y=y), r"X has shape \(60, 1, 1, 2, 2\)", True),
        ("rank-2-y", dict(X=X, y=y[:, None]), r"y has shape \(60, 1\)", True),
        ("no-features", dict(X=X[:, :0], y=y), r"X has shape \(60, 0\), so its examples hold no values", True),
        ("no-channels", dict(X=X[:, :0].reshape(60, 0, 2, 2), y=y), "hold no values", True),
        ("test-only-class", dict(X_train=X, y_train=y % 2, X_test=X[:20], y_test=y[:20]),
         r"y_test has classes \[2\] that y_train never has", True),
        ("feature-mismatch", dict(X_train=X, y_train=y, X_test=X[:20, :3], y_test=y[:20]), "must match", True),
        ("test-lengths", dict(X_train=X, y_train=y, X_test=X[:20], y_test=y[:19]), "X_test has 20 examples", True),
        ("too-few", dict(X=X[:20], y=y[:20]), "too few", True),
        ("too-few-test", dict(X_train=X, y_train=y, X_test=X[:5], y_test=y[:5]), "X_test has 5 examples", True),
        ("nan-X", dict(X=nan, y=y), "X contains NaN or inf", False),
        ("inf-X", dict(X=inf, y=y), "X contains NaN or inf", False),
        ("too-few-to-split", dict(X=X[:35], y=y[:35]), "too few examples to split", False),
        # finite in float64, but the variance (or the values) overflow float32: inputs were silently all 0 or NaN
        ("huge-X", dict(X=np.tile(X, (2, 1)) * 1e20, y=np.tile(y, 2)), "too large to standardize in float32", False),
        ("beyond-float32-X", dict(X=np.tile(X, (2, 1)) * 1e300, y=np.tile(y, 2)), "too large to standardize in float32", False),
    ]


@pytest.mark.parametrize("arrays,match,cheap", [c[1:] for c in npz_cases()], ids=[c[0] for c in npz_cases()])
def test_npz_errors(tmp_path, arrays, match, cheap):
    path = save_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=match) as e:
        load_dataset("npz", path)
    assert "\n" not in str(e.value)
    if "to split" not in match and "float32" not in match:  # these messages name the dataset and sizes instead
        assert path in str(e.value)
    if cheap:
        with pytest.raises(DataError, match=match):
            check_dataset("npz", path)
    else:
        check_dataset("npz", path)  # passes: only loading reads X


def test_npz_missing_and_not_npz(tmp_path):
    for call in (lambda p: load_dataset("npz", p), lambda p: check_dataset("npz", p)):
        with pytest.raises(DataError, match="needs the path of a .npz file"):
            call(None)
        with pytest.raises(DataError, match=re.escape(f"npz file not found: {tmp_path / 'nope.npz'}")):
            call(str(tmp_path / "nope.npz"))
    np.save(tmp_path / "a.npy", np.zeros(3))
    (tmp_path / "p.npz").write_bytes(pickle.dumps({"X": 1}))
    for p in (tmp_path / "a.npy", tmp_path / "p.npz"):
        with pytest.raises(DataError, match="cannot read .* as a .npz archive"):
            check_dataset("npz", str(p))
        with pytest.raises(DataError, match="cannot read .* as a .npz archive"):
            load_dataset("npz", str(p))


def test_npz_object_array_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    objs = np.empty(60, dtype=object)
    objs[:] = [Evil("eval", marker)] * 60
    path = save_npz(tmp_path / "evil.npz", X=RNG.random((60, 2)), y=objs)
    for call in (load_dataset, check_dataset):
        with pytest.raises(DataError, match="Python objects"):
            call("npz", path)
    assert not marker.exists()


# -----------------------------------------------------------------------------
# MNIST / Fashion-MNIST (IDX)

@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_pixel_exact(tmp_path, suffix):
    arr = RNG.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / f"img{suffix}", arr)
    got = read_idx(str(tmp_path / f"img{suffix}"))
    assert got.dtype == np.uint8 and np.array_equal(got, arr)
    lab = np.arange(7, dtype=np.uint8)
    write_idx(tmp_path / f"lab{suffix}", lab)
    assert np.array_equal(read_idx(str(tmp_path / f"lab{suffix}")), lab)


def test_read_idx_rejects_bad_files(tmp_path):
    arr = RNG.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "ok", arr)
    good = (tmp_path / "ok").read_bytes()
    bad = {
        "magic": b"\0\0\x0d\x03" + good[4:],  # float data, not unsigned bytes
        "zero": b"\x01" + good[1:],
        "short": good[:-1],
        "long": good + b"\0",
        "empty": b"",
    }
    for name, content in bad.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=re.escape(str(tmp_path / name))):
            read_idx(str(tmp_path / name))
    (tmp_path / "x.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read"):
        read_idx(str(tmp_path / "x.gz"))


@pytest.mark.parametrize("name,sub", [("mnist", ""), ("mnist", "MNIST/raw"), ("fashion_mnist", "FashionMNIST/raw")])
def test_mnist_layouts_load_exactly(tmp_path, name, sub):
    raw = fake_mnist(tmp_path / sub)
    check_dataset(name, str(tmp_path))
    x, y, xt, yt = read_raw(name, str(tmp_path))
    assert x.shape == (80, 1, 28, 28) and y.dtype == np.int64
    for got, want in zip((x[:, 0], y, xt[:, 0], yt), raw):
        assert np.array_equal(got, want)
    s = load_dataset(name, str(tmp_path), seed=1)
    assert (s.name, s.input_shape, s.n_classes) == (name, (1, 28, 28), 10)
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (68, 12, 20)
    assert_matches_raw(s, x, y, xt, yt)
    assert_standardized(s)
    assert_same_splits(s, load_dataset(name, str(tmp_path), seed=1))


def test_mnist_missing_folder_and_files(tmp_path):
    for root in (tmp_path / "nowhere", tmp_path):
        for call in (lambda: load_dataset("mnist", str(root)), lambda: check_dataset("mnist", str(root))):
            with pytest.raises(DataError) as e:
                call()
            msg = str(e.value)
            assert msg.startswith("MNIST files not found") and str(root) in msg and "\n" not in msg
            assert all(f + "[.gz]" in msg for f in data._IDX_FILES) and "MNIST/raw" in msg
            assert "data_root" in msg
    fake_mnist(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    with pytest.raises(DataError, match="files not found"):
        check_dataset("mnist", str(tmp_path))
    with pytest.raises(DataError, match="no data folder given"):
        check_dataset("fashion_mnist", None)


def test_mnist_malformed_files(tmp_path):
    fake_mnist(tmp_path)
    lab = tmp_path / "t10k-labels-idx1-ubyte"
    lab.write_bytes(lab.read_bytes()[:-3])  # truncated: cheap size check catches it
    for call in (check_dataset, load_dataset):
        with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
            call("mnist", str(tmp_path))
    write_idx(lab, np.arange(19, dtype=np.uint8))  # 19 labels for 20 images
    for call in (check_dataset, load_dataset):
        with pytest.raises(DataError, match="expected 20 labels"):
            call("mnist", str(tmp_path))
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((80, 27, 28), np.uint8))
    write_idx(lab, np.arange(20, dtype=np.uint8) % 10)
    for call in (check_dataset, load_dataset):
        with pytest.raises(DataError, match="28×28"):
            call("mnist", str(tmp_path))
    fake_mnist(tmp_path)
    write_idx(lab, np.full(20, 11, np.uint8))
    with pytest.raises(DataError, match="labels outside 0..9"):
        load_dataset("mnist", str(tmp_path))


# -----------------------------------------------------------------------------
# CIFAR

@pytest.mark.parametrize("n_classes", [10, 100])
def test_cifar_binary(tmp_path, n_classes):
    raw = fake_cifar_bin(tmp_path, n_classes)
    name = f"cifar{n_classes}"
    check_dataset(name, str(tmp_path))
    got = read_raw(name, str(tmp_path))
    for g, w in zip(got, raw):
        assert np.array_equal(g, w)  # CIFAR-100: the fine label, not the coarse one
    s = load_dataset(name, str(tmp_path))
    assert (s.input_shape, s.n_classes, len(s.y_test)) == ((3, 32, 32), n_classes, 20)
    assert_matches_raw(s, *raw)
    assert_standardized(s)


def test_cifar_binary_files_directly_in_root(tmp_path):
    raw = fake_cifar_bin(tmp_path, 10)
    for f in (tmp_path / "cifar-10-batches-bin").iterdir():
        f.rename(tmp_path / f.name)
    assert np.array_equal(read_raw("cifar10", str(tmp_path))[2], raw[2])


def test_cifar_binary_malformed(tmp_path):
    fake_cifar_bin(tmp_path, 10)
    f = tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin"
    f.write_bytes(f.read_bytes()[:-1])
    for call in (check_dataset, load_dataset):
        with pytest.raises(DataError, match="data_batch_3.bin has .* not a whole number of 3073-byte"):
            call("cifar10", str(tmp_path))
    os.remove(f)
    with pytest.raises(DataError, match="CIFAR-10 files not found"):
        check_dataset("cifar10", str(tmp_path))


@pytest.mark.parametrize("n_classes,py2", [(10, False), (10, True), (100, False), (100, True)])
def test_cifar_python_pickles(tmp_path, n_classes, py2):
    raw = fake_cifar_py(tmp_path, n_classes, py2=py2)
    name = f"cifar{n_classes}"
    check_dataset(name, str(tmp_path))
    for g, w in zip(read_raw(name, str(tmp_path)), raw):
        assert np.array_equal(g, w)
    s = load_dataset(name, str(tmp_path))
    assert (s.input_shape, s.n_classes) == ((3, 32, 32), n_classes)
    assert_matches_raw(s, *raw)


def test_py2_pickle_really_uses_numpy_core(tmp_path):
    """guard for the test above: its files reference numpy.core.multiarray, as the real ones do"""
    fake_cifar_py(tmp_path, 10, py2=True)
    assert b"numpy.core.multiarray\n_reconstruct" in (tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes()


@pytest.mark.parametrize("how", ["system", "eval"])
def test_malicious_pickle_refused(tmp_path, how):
    # the payload is live: a plain pickle.loads would run it
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(Evil(how, probe)))
    assert probe.exists()

    fake_cifar_py(tmp_path, 10)
    marker = tmp_path / "pwned"
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(pickle.dumps({b"labels": [0], b"data": Evil(how, marker)}))
    refused = re.escape(f"refusing to load {batch}: it references ") + r"(posix|os|__builtin__|builtins)\.(system|eval)"
    with pytest.raises(DataError, match=refused):
        load_dataset("cifar10", str(tmp_path))
    assert not marker.exists()
    with pytest.raises(DataError, match="refusing"):
        read_raw("cifar10", str(tmp_path))
    assert not marker.exists()


def test_pickle_allowlist_is_exact(tmp_path):
    """harmless but unexpected globals are refused too: an allowlist, not a blocklist"""
    fake_cifar_py(tmp_path, 100)
    f = tmp_path / "cifar-100-python" / "test"
    d = collections.OrderedDict({b"data": np.zeros((20, 3072), np.uint8), b"fine_labels": list(range(20))})
    f.write_bytes(pickle.dumps(d))
    with pytest.raises(DataError, match="collections.OrderedDict"):
        load_dataset("cifar100", str(tmp_path))
    f.write_bytes(pickle.dumps({b"data": np.zeros((20, 3072), np.uint8), b"fine_labels": list(range(20))}, protocol=5))
    with pytest.raises(DataError, match="_frombuffer"):
        load_dataset("cifar100", str(tmp_path))


@pytest.mark.parametrize("content,match", [
    (pickle.dumps([1, 2, 3]), "cannot read .* python batch"),
    (pickle.dumps({b"data": np.zeros((20, 3072), np.float32), b"labels": list(range(20))}), "uint8"),
    (pickle.dumps({b"data": np.zeros((20, 3072), np.uint8), b"labels": list(range(19))}), r"shape \(19, 3072\)"),
    (pickle.dumps({b"data": np.zeros((20, 3072), np.uint8)}), "KeyError"),
    (pickle.dumps({b"data": np.zeros((20, 3072), np.uint8), b"labels": [12] * 20}), "labels outside 0..9"),
    (pickle.dumps({b"data": np.zeros((20, 3072), np.uint8), b"labels": list(range(20))})[:-20], "cannot read"),
])
def test_cifar_python_malformed(tmp_path, content, match):
    fake_cifar_py(tmp_path, 10)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").write_bytes(content)
    with pytest.raises(DataError, match=match):
        load_dataset("cifar10", str(tmp_path))


def test_cifar_python_not_a_pickle_caught_cheaply(tmp_path):
    fake_cifar_py(tmp_path, 10)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"hello")
    with pytest.raises(DataError, match="test_batch is not a pickle file"):
        check_dataset("cifar10", str(tmp_path))


@pytest.mark.parametrize("name,title", [("cifar10", "CIFAR-10"), ("cifar100", "CIFAR-100")])
def test_cifar_missing(tmp_path, name, title):
    spec = data._CIFAR[name]
    for root in (str(tmp_path / "none"), str(tmp_path)):
        for call in (load_dataset, check_dataset):
            with pytest.raises(DataError) as e:
                call(name, root)
            msg = str(e.value)
            assert msg.startswith(f"{title} files not found") and root in msg and "\n" not in msg
            assert spec.bin_dir in msg and spec.py_dir in msg and "data_root" in msg


def test_check_dataset_is_cheap(tmp_path, monkeypatch):
    """the preflight validates headers without reading the image data"""
    fake_mnist(tmp_path)
    fake_cifar_bin(tmp_path, 10)
    fake_cifar_py(tmp_path, 100)
    monkeypatch.setattr(data, "read_idx", lambda p: pytest.fail("check_dataset read a whole IDX file"))
    monkeypatch.setattr(data, "_cifar_read_bin", lambda *a: pytest.fail("check_dataset read a CIFAR batch"))
    monkeypatch.setattr(data, "_cifar_read_py", lambda *a: pytest.fail("check_dataset unpickled a CIFAR batch"))
    for name in ("mnist", "cifar10", "cifar100"):
        check_dataset(name, str(tmp_path))


def test_read_raw_rejects_builtin_sets():
    with pytest.raises(DataError, match="read_raw reads the image sets"):
        read_raw("digits", None)
