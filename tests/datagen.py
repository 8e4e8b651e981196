"""Small on-disk datasets in the real layouts, for tests (built in tmp folders, never committed).

- ``write_cifar100``: the CIFAR-100 python layout (``cifar-100-python/{train,test,meta}``,
  Python pickles of the real structure), with few images per class whose pixels encode
  (fine class, index) so that tests can tell where every image went.
- ``write_miniimagenet_subset``: a MiniImageNet folder of symbolic links to a few real images
  and matching split csv files.
"""
from __future__ import annotations

import csv
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np

# The 20 CIFAR-100 superclasses and their fine classes (the dataset's published table).
CIFAR100_SUPERCLASSES = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}
FINE_NAMES = sorted(f for fines in CIFAR100_SUPERCLASSES.values() for f in fines)
COARSE_NAMES = sorted(CIFAR100_SUPERCLASSES)
COARSE_OF = {f: COARSE_NAMES.index(c) for c, fines in CIFAR100_SUPERCLASSES.items() for f in fines}


def cifar_image(fine: int, index: int) -> np.ndarray:
    """The 32x32x3 test image of example ``index`` of class ``fine``: its pixels say which."""
    image = np.full((32, 32, 3), 50, np.uint8)
    image[0, 0] = (fine, index, 7)
    image[1:, :, 1] = (fine * 2 + index) % 256  # makes every image distinct in bulk too
    return image


def write_cifar100(folder: Path, *, train_per_class: int = 5, test_per_class: int = 1,
                   tarball: bool = False) -> Path:
    """Writes CIFAR-100 in its python layout; returns the folder holding ``cifar-100-python``.

    Like the real files, ``data`` rows are channel-first (3072 = 3 x 32 x 32) and the test
    file's images of a class follow the train file's (``index`` continues counting).
    """
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "cifar-100-python"
    target.mkdir(exist_ok=True)
    for name, per_class, offset in (("train", train_per_class, 0),
                                    ("test", test_per_class, train_per_class)):
        rows, fine, coarse = [], [], []
        # Interleave classes as the real files do (they are not sorted by class).
        for i in range(per_class):
            for f in range(100):
                rows.append(cifar_image(f, offset + i).transpose(2, 0, 1).reshape(-1))
                fine.append(f)
                coarse.append(COARSE_OF[FINE_NAMES[f]])
        part = {"filenames": [f"img_{n}.png" for n in range(len(rows))], "batch_label": name,
                "fine_labels": fine, "coarse_labels": coarse, "data": np.stack(rows)}
        # Protocol 2, as the real files (written by Python 2) use.
        (target / name).write_bytes(pickle.dumps(part, protocol=2))
    meta = {"fine_label_names": FINE_NAMES, "coarse_label_names": COARSE_NAMES}
    (target / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    if tarball:
        with tarfile.open(folder / "cifar-100-python.tar.gz", "w:gz") as tf:
            tf.add(target, arcname="cifar-100-python")
        for name in ("train", "test", "meta"):
            (target / name).unlink()
        target.rmdir()
    return folder


def write_miniimagenet_subset(source: Path, folder: Path, *, classes: int = 5,
                              per_class: int = 6) -> Path:
    """A MiniImageNet folder with the first ``classes`` classes of every split and the first
    ``per_class`` images of each, as symbolic links to the real images."""
    (folder / "images").mkdir(parents=True)
    for split in ("train", "val", "test"):
        with open(source / f"{split}.csv", newline="") as fh:
            rows = list(csv.reader(fh))[1:]
        chosen: dict[str, list[str]] = {}
        for name, label in rows:
            if label not in chosen and len(chosen) == classes:
                continue
            if len(chosen.setdefault(label, [])) < per_class:
                chosen[label].append(name)
        with open(folder / f"{split}.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["filename", "label"])
            for label, names in chosen.items():
                for name in names:
                    writer.writerow([name, label])
                    os.symlink(source / "images" / name, folder / "images" / name)
    return folder


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def write_csv(path: Path, rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
