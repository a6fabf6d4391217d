"""SBD's class masks as VOC palette PNGs, the extra masks of the train_aug split.

benchmark.tgz unpacks to benchmark_RELEASE/dataset/{cls/*.mat, img/*.jpg,
train.txt, val.txt}; each cls/<id>.mat holds a MATLAB struct ``GTcls`` whose
``Segmentation`` field is the (H, W) class map, 0..20 and no 255 border.
SBD's 11,355 images were taken from VOC 2011's trainval set, which VOC 2012
keeps, so VOC 2012's JPEGImages already holds every one of them: only the
masks are converted, no image is copied.
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import scipy.io
from tqdm import tqdm

from .. import io
from .voc import VOC_CLASSES, DatasetError, aug_mask_dir, check_mask, read_list


def sbd_dataset_dir(sbd_root: Path) -> Path:
    """The folder holding cls/, img/ and the lists: benchmark_RELEASE/dataset, or sbd_root itself if it is that."""
    sbd_root = Path(sbd_root)
    return sbd_root if (sbd_root / "cls").is_dir() else sbd_root / "dataset"


def sbd_lists(sbd_root: Path) -> tuple[list[str], list[str]]:
    """SBD's own train and val image ids (8,498 and 2,857 in the release)."""
    dataset = sbd_dataset_dir(sbd_root)
    return read_list(dataset / "train.txt"), read_list(dataset / "val.txt")


def read_sbd_mask(path: Path) -> np.ndarray:
    """The class map of one cls/<id>.mat as uint8 (H, W); a DatasetError names a file that is not one."""
    path = Path(path)
    try:
        contents = scipy.io.loadmat(path, struct_as_record=False, squeeze_me=True)
    except (scipy.io.matlab.MatReadError, ValueError, OSError) as exc:
        raise DatasetError(f"{path}: not a readable MATLAB file ({exc}); restore it from benchmark.tgz") from exc
    struct = contents.get("GTcls")
    segmentation = getattr(struct, "Segmentation", None)
    if segmentation is None:
        found = sorted(k for k in contents if not k.startswith("__"))
        raise DatasetError(
            f"{path}: expected a struct 'GTcls' with a field 'Segmentation' (an SBD cls/*.mat file), "
            f"found variables {found}")
    mask = np.asarray(segmentation)
    if mask.ndim != 2 or not np.issubdtype(mask.dtype, np.integer):
        raise DatasetError(
            f"{path}: GTcls.Segmentation should be a 2-D integer class map, got {mask.dtype} of shape {mask.shape}")
    check_mask(mask, len(VOC_CLASSES), path)
    return mask.astype(np.uint8)


def _convert_one(job: tuple[Path, Path]) -> None:
    mat, png = job
    io.save_label_png(png, read_sbd_mask(mat))


def convert_sbd(sbd_root: Path, voc_root: Path, workers: int = 0, progress: bool = True) -> int:
    """Write every SBD mask as voc_root/SegmentationClassAug/<id>.png; return how many were written.

    Masks whose PNG already exists and reads back are skipped, so an
    interrupted conversion resumes. ``workers`` > 0 converts in that many
    processes.
    """
    cls_dir = sbd_dataset_dir(sbd_root) / "cls"
    if not cls_dir.is_dir():
        raise DatasetError(
            f"{cls_dir} does not exist; sbd_root should be the benchmark_RELEASE folder unpacked from benchmark.tgz")
    mats = sorted(cls_dir.glob("*.mat"))
    if not mats:
        raise DatasetError(f"{cls_dir} holds no .mat file; unpack benchmark.tgz again")
    out_dir = aug_mask_dir(voc_root)
    jobs = [(mat, out_dir / f"{mat.stem}.png") for mat in mats]
    jobs = [job for job in jobs if not io.output_is_valid(job[1])]
    with tqdm(total=len(jobs), desc="SBD masks", unit="mask", disable=not progress) as bar:
        if workers > 0:
            with ProcessPoolExecutor(workers) as pool:
                for _ in pool.map(_convert_one, jobs, chunksize=64):
                    bar.update()
        else:
            for job in jobs:
                _convert_one(job)
                bar.update()
    return len(jobs)
