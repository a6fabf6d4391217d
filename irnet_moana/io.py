"""Atomic, pickle-free reading and writing of every stage output.

Every writer goes through a temporary file in the destination folder followed
by ``os.replace`` so that a killed process never leaves a half-written output
under the final name; every reader validates what it reads so that a file
corrupted by something else is detected and redone rather than trusted.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple

import numpy as np
from PIL import Image

IGNORE = 255


def voc_palette() -> np.ndarray:
    """The standard PASCAL VOC colour map as a (256, 3) uint8 array."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        c, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette[index] = (r, g, b)
    return palette


class DatasetError(RuntimeError):
    """The dataset on disk does not have the layout or content a stage needs."""


class CorruptFileError(RuntimeError):
    """A file exists but cannot be read completely (truncated, wrong format)."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` on success.

    The temporary name keeps the final suffix so libraries that infer the
    format from the extension (PIL, numpy) still work. On any exception the
    temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def remove_stale_temps(folder: str | os.PathLike, targets: set[str] | None = None) -> list[Path]:
    """Delete the temporary files that killed ``atomic_path`` writes left in ``folder``.

    A SIGKILL skips ``atomic_path``'s clean-up, so its ``.<name>.<random>....tmp``
    file stays behind. Only temporaries of the file names in ``targets`` are
    removed (all of them when ``targets`` is None), so a process can clean up
    after itself without touching files that another rank is writing.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        name = entry.name
        if not (name.startswith(".") and name.endswith(".tmp") and entry.is_file()):
            continue
        # the target's name is what lies between the leading dot and one of the later dots
        if targets is not None and not any(name[1:i] in targets for i, ch in enumerate(name) if ch == "." and i > 1):
            continue
        entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CorruptFileError(f"{path}: not valid JSON ({exc}); delete it and rerun the stage that writes it") from exc


# np.savez stamps each member with the current time; a fixed stamp makes the
# same arrays give the same bytes, so reruns and sharded runs can be compared.
_NPZ_TIME = (1980, 1, 1, 0, 0, 0)


def save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], compress: bool = False) -> None:
    """Write arrays to ``path`` (.npz, readable by ``np.load``) atomically; no pickle, reproducible bytes."""
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", compression=method) as archive:
        for name, value in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=_NPZ_TIME)
            member.compress_type = method
            with archive.open(member, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asarray(value), allow_pickle=False)
    write_bytes(path, buffer.getvalue())


def load_npz(path: str | os.PathLike, keys: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Read an .npz fully (never with pickle), checking that ``keys`` are present.

    Raises CorruptFileError for a truncated or non-npz file so callers can
    redo it instead of trusting it.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise CorruptFileError(f"{path}: unreadable .npz ({exc})") from exc
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise CorruptFileError(f"{path}: missing arrays {missing}")
    return arrays


def save_label_png(path: str | os.PathLike, label: np.ndarray) -> None:
    """Write a (H, W) uint8 label map as a VOC-palette PNG, atomically."""
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"{path}: a label map must be 2-D, got shape {label.shape}")
    image = Image.fromarray(label.astype(np.uint8), mode="P")
    image.putpalette(voc_palette().reshape(-1).tolist())
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def load_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a label PNG as its raw indices (palette or greyscale), uint8 (H, W)."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in ("P", "L"):
                raise CorruptFileError(
                    f"{path}: label PNG has mode {image.mode}; expected a palette ('P') or greyscale ('L') index image")
            return np.array(image, dtype=np.uint8)
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError) as exc:
        raise CorruptFileError(f"{path}: unreadable PNG ({exc})") from exc


class Instances(NamedTuple):
    """Instance masks of one image: (K, H, W) bool masks, their 1-based class labels and scores."""

    masks: np.ndarray
    labels: np.ndarray
    scores: np.ndarray


def instance_id_map(masks: np.ndarray) -> np.ndarray:
    """(H, W) uint8 map of non-overlapping (K, H, W) masks: k + 1 on mask k, 0 elsewhere (K < 255)."""
    ids = np.zeros(masks.shape[1:], np.uint8)
    for k, mask in enumerate(masks):
        ids[mask] = k + 1
    return ids


def save_instances(stem: str | os.PathLike, instances: Instances) -> None:
    """``<stem>.png`` and ``<stem>.json``: non-overlapping instances, each atomically.

    The PNG has VOC SegmentationObject's layout (instance k where the value is
    k, 0 for none, VOC palette); the JSON lists ``{"id", "label", "score"}``
    per instance and is written last, so its presence marks a complete pair.
    """
    masks = np.asarray(instances.masks, dtype=bool)
    if masks.ndim != 3 or not len(masks) == len(instances.labels) == len(instances.scores):
        raise ValueError(f"{stem}: expected (K, H, W) masks with K labels and K scores")
    if len(masks) >= IGNORE:
        raise ValueError(f"{stem}: {len(masks)} instances do not fit an 8-bit instance PNG (at most {IGNORE - 1})")
    if masks.sum(0).max(initial=0) > 1:
        raise ValueError(f"{stem}: instance masks overlap; the instance PNG holds one instance per pixel")
    stem = Path(stem)
    save_label_png(stem.with_suffix(".png"), instance_id_map(masks))
    records = [{"id": k + 1, "label": int(label), "score": float(score)}
               for k, (label, score) in enumerate(zip(instances.labels, instances.scores))]
    write_json(stem.with_suffix(".json"), {"instances": records})


def load_instances(stem: str | os.PathLike) -> Instances:
    """The instances :func:`save_instances` wrote; a PNG and JSON that disagree raise CorruptFileError."""
    stem = Path(stem)
    records = read_json(stem.with_suffix(".json"))["instances"]
    ids = load_label_png(stem.with_suffix(".png"))
    if ids.max(initial=0) > len(records) or [r["id"] for r in records] != list(range(1, len(records) + 1)):
        raise CorruptFileError(f"{stem}.png and {stem}.json list different instances; delete both and rerun "
                               f"the stage that wrote them")
    masks = ids[None] == np.arange(1, len(records) + 1)[:, None, None]
    return Instances(masks, np.array([r["label"] for r in records], dtype=np.int64),
                     np.array([r["score"] for r in records], dtype=np.float64))


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an RGB image as uint8 (H, W, 3); a truncated or corrupt file raises CorruptFileError."""
    try:
        with Image.open(path) as image:
            image.load()
            return np.array(image.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError) as exc:
        raise CorruptFileError(f"{path}: corrupt or truncated image ({exc})") from exc


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image from its header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError) as exc:
        raise CorruptFileError(f"{path}: not a readable image ({exc})") from exc


def output_is_valid(path: str | os.PathLike) -> bool:
    """Whether a finished stage output can be trusted (exists and reads back)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        if path.suffix == ".npz":
            load_npz(path)
        elif path.suffix == ".png":
            load_label_png(path)
        elif path.suffix == ".json":
            read_json(path)
        elif path.suffix == ".npy":
            np.load(path, allow_pickle=False)
        else:
            return path.stat().st_size > 0
    except (CorruptFileError, ValueError, OSError):
        return False
    return True
