"""Any image data: folder loading, ragged episode sampling (device and host), `data verify`."""
from __future__ import annotations

import contextlib
import functools
import gc
import io
import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from metajax.data.episodes import Episode, sample_episode
from metajax.data.errors import DataError
from metajax.data.folder import load_folder
from metajax.data.host_stream import (HostEpisodeStream, choose_placement, device_memory_bytes,
                                      host_batch, put_host_batch, split_nbytes)
from metajax.data.ragged import (RaggedImages, episode_indices, sample_ragged_episode,
                                 to_float32)

SPLIT_CODE = {"train": 0, "val": 1, "test": 2}


def _code(split: str, c: int, i: int) -> int:
    # A pixel value that says where an image came from (split, class, image); < 256.
    return 100 * SPLIT_CODE[split] + 10 * c + i


def make_folder(root, counts: dict[str, list[int]], *, size=(6, 5), rgb_in=(), sizes=None,
                name="c{c}"):
    """ROOT/{split}/<name>/{i}.png, constant images of value _code(split, c, i).

    ``name``: the class folder's name, formatted with ``split`` and ``c``.
    ``rgb_in``: (split, class, image) written as RGB (value in red, 0 elsewhere); ``sizes``:
    {(split, class, image): (H, W)} overriding ``size``.
    """
    for split, per_class in counts.items():
        for c, n in enumerate(per_class):
            folder = root / split / name.format(split=split, c=c)
            folder.mkdir(parents=True)
            for i in range(n):
                h, w = (sizes or {}).get((split, c, i), size)
                value = _code(split, c, i)
                if (split, c, i) in rgb_in:
                    pixels = np.zeros((h, w, 3), np.uint8)
                    pixels[..., 0] = value
                    Image.fromarray(pixels, "RGB").save(folder / f"{i}.png")
                else:
                    Image.fromarray(np.full((h, w), value, np.uint8), "L").save(folder / f"{i}.png")
    return root


SMALL = {"train": [3, 5, 2], "val": [2, 2], "test": [4, 1]}


def test_load_folder_ragged(tmp_path):
    root = make_folder(tmp_path, SMALL)
    (root / "train" / ".DS_Store").write_bytes(b"junk")           # hidden files are ignored
    (root / "train" / "c0" / ".thumb.png").write_bytes(b"junk")
    (root / "val" / ".ipynb_checkpoints").mkdir()
    # Upper-case extensions count; images are ordered by file name.
    Image.fromarray(np.full((6, 5), 99, np.uint8), "L").save(root / "test" / "c1" / "0a.PNG",
                                                             format="PNG")
    splits = load_folder(root)
    assert set(splits) == {"train", "val", "test"}
    train = splits["train"]
    assert isinstance(train, RaggedImages)
    assert train.images.dtype == np.uint8 and train.images.shape == (10, 6, 5, 1)
    assert train.names == ("c0", "c1", "c2")
    assert train.counts.dtype == np.int32 and train.offsets.dtype == np.int32
    np.testing.assert_array_equal(train.counts, [3, 5, 2])
    np.testing.assert_array_equal(train.offsets, [0, 3, 8])
    for c, n in enumerate(SMALL["train"]):
        got = train.class_images(c)[:, 0, 0, 0]
        np.testing.assert_array_equal(got, [_code("train", c, i) for i in range(n)])
    assert splits["val"].names == ("c0", "c1")
    np.testing.assert_array_equal(splits["test"].counts, [4, 2])
    np.testing.assert_array_equal(splits["test"].class_images(1)[:, 0, 0, 0],
                                  [_code("test", 1, 0), 99])  # "0.png" < "0a.PNG"


def test_gray_kept_only_when_all_gray(tmp_path):
    root = make_folder(tmp_path, SMALL, rgb_in={("test", 0, 2)})
    splits = load_folder(root)
    for data in splits.values():
        assert data.images.shape[-1] == 3
    gray = splits["train"].images[0]  # replicated into the 3 channels
    assert (gray == _code("train", 0, 0)).all()
    rgb = splits["test"].class_images(0)[2]
    assert (rgb[..., 0] == _code("test", 0, 2)).all() and (rgb[..., 1:] == 0).all()


def test_image_modes(tmp_path):
    root = make_folder(tmp_path, {"train": [1, 1], "val": [1, 1], "test": [1, 1]})
    Image.fromarray(np.full((6, 5), 65535, np.uint16)).save(root / "train" / "c0" / "w16.png")
    Image.fromarray(np.ones((6, 5), bool)).save(root / "train" / "c1" / "bits.png")  # mode 1
    gray = load_folder(root)
    assert gray["train"].images.shape == (4, 6, 5, 1)
    assert gray["train"].class_images(0)[1].max() == 255 == gray["train"].class_images(1)[1].min()
    rgba = np.zeros((6, 5, 4), np.uint8)
    rgba[..., 2], rgba[..., 3] = 200, 7
    Image.fromarray(rgba, "RGBA").save(root / "val" / "c0" / "alpha.png")
    Image.fromarray(np.full((6, 5, 3), 128, np.uint8), "RGB").save(root / "val" / "c1" / "x.JPEG",
                                                                   quality=95)
    mixed = load_folder(root)
    assert mixed["val"].images.shape == (4, 6, 5, 3)
    np.testing.assert_array_equal(mixed["val"].class_images(0)[1][0, 0], [0, 0, 200])
    assert np.abs(mixed["val"].class_images(1)[1].astype(int) - 128).max() <= 2


def test_mixed_sizes_need_image_size(tmp_path):
    root = make_folder(tmp_path, SMALL, sizes={("val", 1, 0): (9, 7)})
    with pytest.raises(DataError, match="--image-size N") as err:
        load_folder(root)
    assert "val/c1/0.png" in str(err.value) and "train/c0/0.png" in str(err.value)
    splits = load_folder(root, image_size=8)
    assert all(d.images.shape[1:] == (8, 8, 1) for d in splits.values())
    # Resizing a constant image keeps it (nearly) constant: the right image is in the right row.
    resized = splits["val"].class_images(1)[0].astype(int)
    assert np.abs(resized - _code("val", 1, 0)).max() <= 1
    tall = load_folder(root, image_size=(8, 4))
    assert tall["train"].images.shape[1:] == (8, 4, 1)
    with pytest.raises(DataError, match="image_size"):
        load_folder(root, image_size=0)


@pytest.mark.parametrize("case", ["no_root", "no_split", "empty_class", "text_file", "corrupt",
                                  "stray_file", "nested"])
def test_folder_errors_name_path_and_fix(tmp_path, case):
    root = make_folder(tmp_path / "data", SMALL)
    if case == "no_root":
        root, needle, fix = tmp_path / "nowhere", "nowhere", "--data-dir"
    elif case == "no_split":
        for p in sorted((root / "val").rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        (root / "val").rmdir()
        needle, fix = "val/", "moving whole class folders"
    elif case == "empty_class":
        (root / "test" / "empty").mkdir()
        needle, fix = "test/empty", "add .png"
    elif case == "text_file":
        (root / "train" / "c1" / "notes.txt").write_text("hello")
        needle, fix = "train/c1/notes.txt", "delete or move it"
    elif case == "corrupt":
        (root / "train" / "c2" / "bad.jpg").write_bytes(b"not a jpeg at all")
        needle, fix = "train/c2/bad.jpg", "replace it"
    elif case == "stray_file":
        (root / "val" / "readme.md").write_text("x")
        needle, fix = "val/readme.md", "class folder"
    else:
        (root / "val" / "c0" / "more").mkdir()
        needle, fix = "val/c0/more", "class folder"
    with pytest.raises(DataError) as err:
        load_folder(root)
    assert needle in str(err.value) and fix in str(err.value)


def test_truncated_image_names_file(tmp_path):
    root = make_folder(tmp_path, SMALL, size=(40, 40))
    path = root / "train" / "c1" / "2.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="train/c1/2.png"):
        load_folder(root)


def test_episode_spec_names_short_classes(tmp_path):
    splits = load_folder(make_folder(tmp_path, SMALL))
    splits["train"].check_episode_spec(ways=3, shots=1, queries=1)
    with pytest.raises(DataError) as err:
        splits["train"].check_episode_spec(ways=2, shots=2, queries=1, split="train")
    message = str(err.value)
    assert "c2 (2)" in message and "c0" not in message and "c1" not in message
    assert "--shots" in message and "--query" in message and "add images" in message
    with pytest.raises(DataError, match="--ways 4 is larger than the 3 classes"):
        splits["train"].check_episode_spec(ways=4, shots=1, queries=1)
    with pytest.raises(DataError, match="c2"):  # also when sampling with concrete counts
        sample_ragged_episode(jax.random.PRNGKey(0), splits["train"], ways=2, shots=2, queries=1)


# ------------------------------------------------------------------------------------- sampling

COUNTS = np.array([7, 3, 12, 5, 4, 30, 3], np.int32)
OFFSETS = np.concatenate([[0], np.cumsum(COUNTS)[:-1]]).astype(np.int32)


def _ragged(channels=1, hw=(4, 3)) -> RaggedImages:
    n = int(COUNTS.sum())
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, *hw, channels), dtype=np.uint8)
    return RaggedImages(images, OFFSETS, COUNTS, tuple(f"k{c}" for c in range(len(COUNTS))))


@functools.partial(jax.jit, static_argnames=("ways", "shots", "queries"))
def _indices_batch(keys, offsets, counts, *, ways, shots, queries):
    fn = functools.partial(episode_indices, ways=ways, shots=shots, queries=queries)
    return jax.vmap(fn, in_axes=(0, None, None))(keys, offsets, counts)


def test_episode_indices_properties():
    ways, shots, queries = 4, 2, 1
    keys = jax.random.split(jax.random.PRNGKey(1), 3000)
    s_idx, s_y, q_idx, q_y = map(np.asarray, _indices_batch(
        keys, OFFSETS, COUNTS, ways=ways, shots=shots, queries=queries))
    assert s_idx.shape == s_y.shape == (3000, ways * shots)
    assert q_idx.shape == q_y.shape == (3000, ways * queries)
    assert all(a.dtype == np.int32 for a in (s_idx, s_y, q_idx, q_y))
    np.testing.assert_array_equal(s_y, np.broadcast_to(np.repeat(np.arange(ways), shots),
                                                       s_y.shape))
    np.testing.assert_array_equal(q_y, np.broadcast_to(np.repeat(np.arange(ways), queries),
                                                       q_y.shape))
    s_cls = np.searchsorted(OFFSETS, s_idx, side="right") - 1
    q_cls = np.searchsorted(OFFSETS, q_idx, side="right") - 1
    # Every label's examples come from one class, support and query alike.
    per_label = s_cls.reshape(-1, ways, shots)
    assert (per_label == per_label[:, :, :1]).all()
    assert (q_cls.reshape(-1, ways, queries) == per_label[:, :, :1]).all()
    for t in range(len(keys)):
        assert len(set(per_label[t, :, 0])) == ways  # distinct classes
        rows = np.concatenate([s_idx[t], q_idx[t]])
        assert len(set(rows)) == rows.size  # distinct examples; support and query disjoint
    assert ((s_idx >= 0) & (s_idx < COUNTS.sum())).all()
    # Within the class (the class found above contains the row, so it is within its count).
    assert (s_idx < OFFSETS[s_cls] + COUNTS[s_cls]).all()
    assert (q_idx < OFFSETS[q_cls] + COUNTS[q_cls]).all()
    # Uniform: every class drawn ~ ways/7 of the tasks, every example of a class as often.
    class_freq = np.bincount(per_label[:, :, 0].ravel(), minlength=7) / len(keys)
    np.testing.assert_allclose(class_freq, ways / 7, atol=0.05)
    rows = np.concatenate([s_idx.ravel(), q_idx.ravel()])
    hits = np.bincount(rows, minlength=int(COUNTS.sum()))
    for c in range(7):
        share = hits[OFFSETS[c]:OFFSETS[c] + COUNTS[c]]
        expected = class_freq[c] * len(keys) * (shots + queries) / COUNTS[c]
        np.testing.assert_allclose(share, expected, rtol=0.25)
    # The first draw of a class (the first support example) is uniform over its examples too.
    first = s_idx.reshape(-1, ways, shots)[:, :, 0][per_label[:, :, 0] == 2] - OFFSETS[2]
    np.testing.assert_allclose(np.bincount(first, minlength=12) / first.size, 1 / 12, atol=0.04)


def test_long_draws_use_the_loop():
    # shots + queries > 32 takes the fori_loop path; still distinct and within the class.
    counts = np.array([40, 50, 64], np.int32)
    offsets = np.array([0, 40, 90], np.int32)
    keys = jax.random.split(jax.random.PRNGKey(2), 20)
    s_idx, _, q_idx, _ = map(np.asarray, _indices_batch(keys, offsets, counts, ways=2, shots=5,
                                                        queries=35))
    for t in range(20):
        rows = np.concatenate([s_idx[t], q_idx[t]])
        assert len(set(rows)) == 80
        cls = np.searchsorted(offsets, rows, side="right") - 1
        assert (rows < offsets[cls] + counts[cls]).all()


def test_jit_equals_no_jit():
    key = jax.random.PRNGKey(3)
    eager = episode_indices(key, jnp.asarray(OFFSETS), jnp.asarray(COUNTS), ways=3, shots=2,
                            queries=1)
    jitted = jax.jit(functools.partial(episode_indices, ways=3, shots=2, queries=1))(
        key, OFFSETS, COUNTS)
    for a, b in zip(eager, jitted):
        np.testing.assert_array_equal(a, b)
    data = _ragged()
    e1 = sample_ragged_episode(key, data, ways=3, shots=2, queries=1)
    e2 = jax.jit(functools.partial(sample_ragged_episode, ways=3, shots=2, queries=1))(key, data)
    for a, b in zip(jax.tree.leaves(e1), jax.tree.leaves(e2)):
        np.testing.assert_array_equal(a, b)


@functools.partial(jax.jit, static_argnames=("ways", "shots", "queries"))
def _device_batch(data, keys, *, ways, shots, queries):
    fn = functools.partial(sample_ragged_episode, ways=ways, shots=shots, queries=queries)
    return jax.vmap(fn, in_axes=(0, None))(keys, data)


def test_device_sampler_equals_host_batch():
    data = _ragged(channels=3)
    keys = jax.random.split(jax.random.PRNGKey(4), 6)
    size = dict(ways=5, shots=1, queries=2)
    on_device = _device_batch(jax.device_put(data), keys, **size)
    on_host = host_batch(data, keys, **size)
    assert isinstance(on_device, Episode) and isinstance(on_host, Episode)
    assert on_host.support[0].shape == (6, 5, 4, 3, 3)
    assert on_host.query[0].shape == (6, 10, 4, 3, 3)
    for d, h in zip(jax.tree.leaves(on_device), jax.tree.leaves(on_host)):
        assert np.asarray(d).dtype == h.dtype
        np.testing.assert_array_equal(np.asarray(d), h)
    # The stream's per-step work (uint8 put, scaled on the device) gives the same arrays.
    put = put_host_batch(data, keys, **size)
    for p, h in zip(jax.tree.leaves(put), jax.tree.leaves(on_host)):
        assert isinstance(p, jax.Array)
        np.testing.assert_array_equal(np.asarray(p), h)
    # The episode is the images of its indices: labels and rows line up.
    s_idx = np.asarray(_indices_batch(keys, OFFSETS, COUNTS, **size)[0])
    np.testing.assert_array_equal(on_host.support[0], to_float32(data.images[s_idx]))
    assert 0.0 <= on_host.support[0].min() and on_host.support[0].max() <= 1.0


def test_uint8_conversion_matches_backend_and_sample_episode():
    # All 256 values: the ragged sampler's scaling, jitted on the default backend, equals numpy's
    # on the host and what sample_episode gives under jit (XLA turns its / 255 into this product).
    values = np.arange(256, dtype=np.uint8)
    host = to_float32(values)
    assert host.dtype == np.float32 and host[0] == 0 and host[255] == 1
    np.testing.assert_array_equal(np.asarray(jax.jit(to_float32)(values)), host)
    dense = values.reshape(2, 128, 1, 1, 1)
    episode = jax.jit(functools.partial(sample_episode, ways=2, shots=127, queries=1))(
        jax.random.PRNGKey(0), dense)
    got = np.concatenate([np.ravel(episode.support[0]), np.ravel(episode.query[0])])
    drawn = np.round(got * 255).astype(np.uint8)
    np.testing.assert_array_equal(got, to_float32(drawn))


def test_dense_split_still_works():
    dense = np.random.default_rng(0).integers(0, 256, (6, 5, 4, 4, 1), dtype=np.uint8)
    key = jax.random.PRNGKey(5)
    episode = sample_episode(key, dense, ways=3, shots=2, queries=3)
    assert episode.support[0].shape == (6, 4, 4, 1) and episode.query[0].shape == (9, 4, 4, 1)
    ragged = RaggedImages.from_dense(dense)
    np.testing.assert_array_equal(ragged.counts, [5] * 6)
    np.testing.assert_array_equal(ragged.class_images(4), dense[4])
    other = sample_ragged_episode(key, ragged, ways=3, shots=2, queries=3)
    for a, b in zip(jax.tree.leaves(episode), jax.tree.leaves(other)):
        assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_array_equal(episode.support[1], other.support[1])


def test_ragged_pytree_leaves_are_arrays():
    data = _ragged()
    leaves = jax.tree.leaves(data)
    assert len(leaves) == 3 and all(isinstance(x, np.ndarray) for x in leaves)
    placed = jax.device_put(data)
    assert placed.names == data.names and isinstance(placed.images, jax.Array)
    arrays = _device_batch(data.device_arrays(), jax.random.split(jax.random.PRNGKey(0), 2),
                           ways=2, shots=1, queries=1)
    named = _device_batch(data, jax.random.split(jax.random.PRNGKey(0), 2), ways=2, shots=1,
                          queries=1)
    for a, b in zip(jax.tree.leaves(arrays), jax.tree.leaves(named)):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------- host stream

def _keys_for_step(step):
    return jax.random.split(jax.random.fold_in(jax.random.PRNGKey(7), step), 3)


def test_stream_yields_host_batches_in_step_order():
    data = _ragged()
    size = dict(ways=3, shots=2, queries=1)
    with HostEpisodeStream(data, **size, keys_for_step=_keys_for_step, start_step=5,
                           prefetch=2, sharding=jax.devices()[0]) as stream:
        items = [next(stream) for _ in range(4)]
        thread = stream._thread
    assert not thread.is_alive()
    assert [step for step, _ in items] == [6, 7, 8, 9]
    for step, tasks in items:
        assert isinstance(tasks, Episode)
        assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(tasks))
        expected = host_batch(data, _keys_for_step(step), **size)
        for got, want in zip(jax.tree.leaves(tasks), jax.tree.leaves(expected)):
            np.testing.assert_array_equal(np.asarray(got), want)
        device = _device_batch(data, _keys_for_step(step), **size)
        for got, want in zip(jax.tree.leaves(tasks), jax.tree.leaves(device)):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert stream.batches == 4 and stream.wait_seconds >= 0
    with pytest.raises(StopIteration):
        next(stream)


def test_stream_reraises_thread_errors():
    def keys_for_step(step):
        if step == 3:
            raise ValueError("no keys for step 3")
        return _keys_for_step(step)

    stream = HostEpisodeStream(_ragged(), ways=2, shots=1, queries=1,
                               keys_for_step=keys_for_step, start_step=0, prefetch=1)
    assert stream.next()[0] == 1 and stream.next()[0] == 2
    with pytest.raises(ValueError, match="no keys for step 3"):
        stream.next()
    with pytest.raises(ValueError, match="no keys for step 3"):  # and stays failed
        stream.next()
    stream.close()
    assert not stream._thread.is_alive()


def test_dropped_stream_stops_its_thread():
    stream = HostEpisodeStream(_ragged(), ways=2, shots=1, queries=1,
                               keys_for_step=_keys_for_step, start_step=0, prefetch=1)
    next(stream)
    thread = stream._thread
    del stream
    gc.collect()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_stream_checks_spec_up_front():
    with pytest.raises(DataError, match="k1 \\(3\\)"):
        HostEpisodeStream(_ragged(), ways=2, shots=3, queries=1, keys_for_step=_keys_for_step,
                          start_step=0)


def test_placement_rule():
    class FakeDevice:
        def __init__(self, stats):
            self.stats = stats

        def memory_stats(self):
            return self.stats

    gpu = FakeDevice({"bytes_limit": 1000, "bytes_in_use": 0})
    assert choose_placement(501, gpu) == "host" and choose_placement(500, gpu) == "device"
    assert choose_placement(900, gpu, fraction=0.95) == "device"
    ram, source = device_memory_bytes(FakeDevice(None))
    assert source == "physical RAM" and ram > 2**28
    assert choose_placement(ram // 4, FakeDevice(None)) == "device"
    assert choose_placement(ram, jax.devices("cpu")[0]) == "host"
    data = _ragged()
    assert split_nbytes(data) == data.images.nbytes + 4 * 2 * len(COUNTS)
    assert split_nbytes({"a": data, "b": data.images}) == split_nbytes(data) + data.images.nbytes
    with pytest.raises(DataError):
        choose_placement(1, gpu, fraction=0)


# ------------------------------------------------------------------------------- data verify

def _verify(*argv) -> tuple[int, dict | None, str]:
    from metajax.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["data", "verify", *map(str, argv)])
    return code, (json.loads(out.getvalue()) if code == 0 else None), err.getvalue()


def test_data_verify_folder(tmp_path):
    disjoint = "{split}-c{c}"
    root = make_folder(tmp_path / "d", SMALL, name=disjoint)
    code, summary, err = _verify("--dataset", "folder", "--data-dir", root)
    assert code == 0, err
    assert summary["ok"] is True and summary["dataset"] == "folder"
    assert summary["image_shape"] == [6, 5, 1]
    assert summary["splits"]["train"] == {"classes": 3, "images": 10, "min_images_per_class": 2,
                                          "max_images_per_class": 5}
    assert summary["splits"]["test"]["images"] == 5

    mixed = make_folder(tmp_path / "m", SMALL, sizes={("train", 2, 1): (3, 3)}, name=disjoint)
    code, _, err = _verify("--dataset", "folder", "--data-dir", mixed)
    assert code == 2 and "--image-size N" in err and "train/train-c2/1.png" in err
    code, summary, err = _verify("--dataset", "folder", "--data-dir", mixed, "--image-size", 7)
    assert code == 0, err
    assert summary["image_shape"] == [7, 7, 1] and summary["resized_to"] == [7, 7]

    # The same class folder name in two splits, or the same image in two splits, is a leak.
    (root / "test" / "test-c0").rename(root / "test" / "c9")
    (root / "val" / "val-c1").rename(root / "val" / "c9")
    code, _, err = _verify("--dataset", "folder", "--data-dir", root)
    assert code == 2 and "c9" in err and "disjoint" in err
    (root / "val" / "c9").rename(root / "val" / "val-c1")
    dup = root / "test" / "test-c1" / "z.png"
    dup.write_bytes((root / "train" / "train-c0" / "0.png").read_bytes())
    code, _, err = _verify("--dataset", "folder", "--data-dir", root)
    assert code == 2 and "test/test-c1/z.png" in err and "train/train-c0/0.png" in err

    code, _, err = _verify("--dataset", "cifar-fs", "--data-dir", tmp_path, "--image-size", 32)
    assert code == 2 and "--image-size applies to --dataset folder only" in err


def test_host_data_benchmark_smoke():
    # The benchmark runs end to end on a tiny workload (figures are never asserted).
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "host_data.py"
    out = subprocess.run(
        [sys.executable, str(script), "--steps", "4", "--warmup", "1", "--rounds", "2",
         "--classes", "8", "--min-count", "3", "--max-count", "6", "--image-size", "8",
         "--query", "2", "--width", "32", "--matmuls", "1"],
        capture_output=True, text=True, timeout=300, check=True).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["benchmark"] == "host_data" and summary["steps"] == 4
    assert set(summary["modes"]) == {"compute", "device", "host-sync", "host-stream"}
    assert summary["modes"]["host-stream"]["blocked_s_per_step"] >= 0
