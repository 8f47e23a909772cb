"""Datasets the book trains on, with verified sources and a bundled subset.

``load_dataset`` returns an :class:`ImageDataset` and says which source it
used. Fashion-MNIST (Xiao, Rasul and Vollgraf 2017, arXiv:1708.07747; MIT
licence, (c) 2017 Zalando SE) is looked for, in order, in the Keras cache,
in Debian's ``dataset-fashion-mnist`` files, in the subset bundled under
``data/``, and last downloaded through Keras. Every copy is checked against
the SHA-256 of the original arrays, so a corrupt or different file is never
used silently.

Used in chapters 3, 4, 5 and 9.
"""

from __future__ import annotations

import gzip
import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bigmodel_utils.data.files import DataUnavailableError, data_dir, keras_cache_dir
from bigmodel_utils.validation import check_choice, check_int, check_number

DATASETS = ("fashion_mnist", "digits", "cifar10")
"""Names accepted by :func:`load_dataset`."""

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
CLASS_NAMES_ZH = dict(zip(
    FASHION_MNIST_CLASSES + CIFAR10_CLASSES,
    ("T 恤/上衣", "裤子", "套衫", "连衣裙", "外套", "凉鞋", "衬衫", "运动鞋", "包", "短靴",
     "飞机", "汽车", "鸟", "猫", "鹿", "狗", "青蛙", "马", "船", "卡车"),
))
"""Chinese names of the classes (those of d2l-zh for Fashion-MNIST), for the Chinese edition's prose."""

# The four upstream IDX files and the SHA-256 of their decoded arrays (the
# payload after the IDX header). Hashing the arrays rather than the .gz files
# accepts any faithful copy: Debian recompressed the files, Keras did not.
FASHION_MNIST_FILES = {
    "x_train": ("train-images-idx3-ubyte.gz", "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012"),
    "y_train": ("train-labels-idx1-ubyte.gz", "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7"),
    "x_test": ("t10k-images-idx3-ubyte.gz", "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a"),
    "y_test": ("t10k-labels-idx1-ubyte.gz", "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9"),
}
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

# The bundled subset is the first SUBSET_TRAIN_PER_CLASS training images and
# the first SUBSET_TEST_PER_CLASS test images of each class, in file order.
# No random generator is involved, so the same subset is drawn from the full
# set anywhere (Colab installs the package without data/ and rebuilds it).
SUBSET_TRAIN_PER_CLASS = 1800
SUBSET_TEST_PER_CLASS = 200
SUBSET_FILE = "fashion_mnist_subset.npz"
SUBSET_SHA256 = {
    "x_train": "d0087ea12d7760d913489303e8a3168949753bb852ae4aaffae11e14cf61537c",
    "y_train": "d22e830579bf9f6cb0a725a9a513b95179edb58c720219eb3882525a60c097fc",
    "x_test": "96315b1732ab731e68b8def3c284f34b605f7deb7a61e683c7d786265c827c83",
    "y_test": "b2095bc797d1201e84da76c94012c02d0e6f07af0938df4e00120a3b42d1aa4c",
}

MAX_IMAGE_SIZE = 1024
"""The largest square image size, in pixels, that :func:`prepare_images` and the input pipelines accept."""


@dataclass
class ImageDataset:
    """Images as uint8 arrays of shape (N, H, W) or (N, H, W, C), labels as int64 (N,).

    ``source`` says where the arrays came from; ``fallback`` is a sentence
    when the loader had to use something other than what was asked for.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str
    subset: bool
    fallback: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __repr__(self) -> str:
        return (
            f"ImageDataset({self.name!r}, train={self.x_train.shape}, test={self.x_test.shape}, "
            f"subset={self.subset}, source={self.source!r})"
        )


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _read_idx(path: Path) -> np.ndarray:
    """Read one gzipped IDX file (the format MNIST and Fashion-MNIST ship in)."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _verified(arrays: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    for key, (_, expected) in FASHION_MNIST_FILES.items():
        if _sha256(arrays[key]) != expected:
            raise DataUnavailableError(f"Fashion-MNIST {key} from {where} does not match the original (SHA-256)")
    return arrays


def _read_fashion_mnist_folder(folder: Path) -> dict[str, np.ndarray]:
    arrays = {key: _read_idx(folder / filename) for key, (filename, _) in FASHION_MNIST_FILES.items()}
    return _verified(arrays, str(folder))


def _download_fashion_mnist() -> dict[str, np.ndarray]:
    import keras

    (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    return _verified(arrays, "the Keras download")


def _full_fashion_mnist(allow_download: bool) -> tuple[dict[str, np.ndarray], str]:
    """Return the full arrays and a sentence naming their source, trying each source in turn."""
    tried = []
    candidates = [
        (keras_cache_dir() / "fashion-mnist", "Keras cache"),
        (DEBIAN_FASHION_MNIST_DIR, "Debian package dataset-fashion-mnist"),
    ]
    for folder, label in candidates:
        if all((folder / name).is_file() for name, _ in FASHION_MNIST_FILES.values()):
            try:
                return _read_fashion_mnist_folder(folder), f"full Fashion-MNIST from the {label} ({folder})"
            except (OSError, ValueError, DataUnavailableError) as error:
                tried.append(f"{label}: {error}")
        else:
            tried.append(f"{label}: not found in {folder}")
    if allow_download:
        try:
            return _download_fashion_mnist(), "full Fashion-MNIST downloaded by Keras (SHA-256 verified)"
        except Exception as error:  # no network, blocked host, or a changed file
            tried.append(f"download: {type(error).__name__}: {error}")
    raise DataUnavailableError("full Fashion-MNIST is not available; tried " + "; ".join(tried))


def stratified_head(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Return the sorted indices of the first ``per_class`` examples of every class, in file order."""
    labels = np.asarray(labels)
    picks = [np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]
    short = [int(c) for c, p in zip(np.unique(labels), picks) if len(p) < per_class]
    if short:
        raise ValueError(f"per_class={per_class} is more than classes {short} have")
    return np.sort(np.concatenate(picks))


def make_fashion_mnist_subset(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Cut the book's stratified subset out of the full Fashion-MNIST arrays."""
    train = stratified_head(arrays["y_train"], SUBSET_TRAIN_PER_CLASS)
    test = stratified_head(arrays["y_test"], SUBSET_TEST_PER_CLASS)
    return {
        "x_train": arrays["x_train"][train], "y_train": arrays["y_train"][train],
        "x_test": arrays["x_test"][test], "y_test": arrays["y_test"][test],
    }


def _bundled_subset() -> dict[str, np.ndarray] | None:
    path = data_dir() / SUBSET_FILE
    if not path.is_file():
        return None
    with np.load(path) as stored:
        arrays = {key: stored[key] for key in SUBSET_SHA256}
    for key, expected in SUBSET_SHA256.items():
        if _sha256(arrays[key]) != expected:
            raise DataUnavailableError(f"{path} is damaged: its {key} does not match the recorded SHA-256")
    return arrays


def load_fashion_mnist(
    subset: bool = True,
    num_train: int | None = None,
    num_test: int | None = None,
    allow_download: bool = True,
) -> ImageDataset:
    """Load Fashion-MNIST as uint8 images (N, 28, 28) and int64 labels.

    ``subset=True`` gives the book's stratified subset (1,800 training and 200
    test images per class), the same arrays on every machine. ``subset=False``
    gives the full 60,000 + 10,000 images, or, when no source of the full set
    can be read, the subset with a printed notice. ``num_train`` and
    ``num_test`` then keep the first images of each split (file order is
    already shuffled, so the classes stay close to balanced).
    """
    fallback = None
    if subset:
        arrays, source = _bundled_subset(), f"bundled Fashion-MNIST subset ({data_dir() / SUBSET_FILE})"
        if arrays is None:
            full, full_source = _full_fashion_mnist(allow_download)
            arrays, source = make_fashion_mnist_subset(full), f"Fashion-MNIST subset cut from the {full_source}"
    else:
        try:
            arrays, source = _full_fashion_mnist(allow_download)
        except DataUnavailableError as error:
            arrays = _bundled_subset()
            if arrays is None:
                raise
            source = f"bundled Fashion-MNIST subset ({data_dir() / SUBSET_FILE})"
            fallback = f"FALLBACK: the full set was requested but {error}; using the bundled subset instead."
            print(fallback)
    available_train, available_test = len(arrays["y_train"]), len(arrays["y_test"])
    n_train = available_train if num_train is None else check_int("num_train", num_train, 1, available_train)
    n_test = available_test if num_test is None else check_int("num_test", num_test, 1, available_test)
    return ImageDataset(
        name="fashion_mnist",
        x_train=arrays["x_train"][:n_train], y_train=arrays["y_train"][:n_train].astype(np.int64),
        x_test=arrays["x_test"][:n_test], y_test=arrays["y_test"][:n_test].astype(np.int64),
        class_names=FASHION_MNIST_CLASSES, source=source, subset=subset or fallback is not None,
        fallback=fallback,
    )


def load_digits_dataset(test_fraction: float = 0.2, seed: int = 0) -> ImageDataset:
    """Load scikit-learn's 8x8 digits (1,797 images, shipped in the wheel) as uint8 images 0-255."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    check_number("test_fraction", test_fraction, 0, 1, include_minimum=False, include_maximum=False)
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target.astype(np.int64), test_size=test_fraction, random_state=seed,
        stratify=digits.target,
    )
    return ImageDataset("digits", x_train, y_train, x_test, y_test,
                        tuple(str(d) for d in range(10)), "scikit-learn load_digits (bundled in the wheel)", False)


def load_cifar10() -> ImageDataset:
    """Download CIFAR-10 through Keras (hash-checked by Keras); needs the network. Used in chapter 4 (full)."""
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as error:
        raise DataUnavailableError(f"CIFAR-10 could not be downloaded: {type(error).__name__}: {error}") from error
    return ImageDataset("cifar10", x_train, y_train.ravel().astype(np.int64), x_test,
                        y_test.ravel().astype(np.int64), CIFAR10_CLASSES, "CIFAR-10 downloaded by Keras", False)


def load_dataset(name: str, profile: str = "quick", **options) -> ImageDataset:
    """Load a dataset by name for a run profile.

    ``name`` is one of :data:`DATASETS`. For Fashion-MNIST, ``smoke`` and
    ``quick`` use the bundled subset and ``full`` the full set; ``options``
    pass on to the loader (for example ``num_train``), and an option the
    loader does not take is refused with the list of those it does.
    """
    check_choice("dataset", name, DATASETS)
    check_choice("profile", profile, ("smoke", "quick", "full"))
    loader = {"fashion_mnist": load_fashion_mnist, "digits": load_digits_dataset, "cifar10": load_cifar10}[name]
    accepted = [p for p in inspect.signature(loader).parameters if p != "subset"]
    for option, value in options.items():
        if option not in accepted:
            raise ValueError(f"load_dataset({name!r}) takes no option {option} (got {option}={value!r}); "
                             f"it accepts {', '.join(accepted) or 'none'}")
    if name == "fashion_mnist":
        return load_fashion_mnist(subset=profile != "full", **options)
    return loader(**options)


def prepare_images(images: np.ndarray, image_size: int | None = None, channels: int | None = None) -> np.ndarray:
    """Scale uint8 images to float32 in [0, 1], add a channel axis, resize and repeat channels.

    The plain NumPy path, for any Keras backend: returns (N, S, S, C) float32.
    """
    if image_size is not None:
        check_int("image_size", image_size, minimum=1, maximum=MAX_IMAGE_SIZE)
    check_choice("channels", channels, (None, 1, 3))
    x = np.asarray(images, dtype=np.float32) / 255.0
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W) or (N, H, W, C), got {np.shape(images)}")
    if image_size is not None and x.shape[1:3] != (image_size, image_size):
        import keras

        x = keras.ops.convert_to_numpy(keras.ops.image.resize(x, (image_size, image_size)))
    if channels is not None and x.shape[-1] != channels:
        x = np.repeat(x, channels, axis=-1) if x.shape[-1] == 1 else x.mean(axis=-1, keepdims=True)
    return x.astype(np.float32)
