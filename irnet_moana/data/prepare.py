"""Dataset preparation: check a layout, build the lists and labels once, or make the demo."""
from __future__ import annotations

from pathlib import Path

from .. import io
from .download import fetch_sbd, fetch_voc12
from .sbd import convert_sbd
from .sbd import sbd_lists as read_sbd_lists
from .voc import LIST_DIR, DatasetError, VOCData, build_train_aug, check_layout


def prepare_voc12(root: str | Path, sbd_root: str | Path | None = None, download: bool = False) -> dict:
    """Check (or download) VOC 2012 (+ SBD), convert SBD's masks, write train_aug.txt and the label cache.

    ``root`` is the VOC2012 folder (.../VOCdevkit/VOC2012). With ``download``
    the archives are fetched into the folder above VOCdevkit and extracted.
    """
    root = Path(root)
    if download:
        data_dir = root.parent.parent
        root = fetch_voc12(data_dir)
        sbd_root = fetch_sbd(data_dir)
    problems = check_layout(root)
    if problems:
        raise DatasetError("VOC 2012 layout incomplete:\n  " + "\n  ".join(problems) +
                           f"\nDownload it with `python pipelines/prepare_data.py voc12 --root {root} --download` "
                           "or point --root at an extracted VOCdevkit/VOC2012 folder")
    sbd_lists: tuple[list[str], ...] = ()
    converted = 0
    if sbd_root is not None:
        converted = convert_sbd(Path(sbd_root), root)
        sbd_lists = read_sbd_lists(Path(sbd_root))
    train_aug = build_train_aug(root, sbd_lists)
    io.write_text(root / LIST_DIR / "train_aug.txt", "\n".join(train_aug) + "\n")
    data = VOCData(root)
    splits = {name: data.split(name) for name in ("train", "val", "train_aug")}
    data.image_labels(sorted(set(splits["train_aug"]) | set(splits["val"])))
    summary = {"root": str(root), **{name: len(stems) for name, stems in splits.items()},
               "sbd_masks_converted": converted}
    if len(splits["train_aug"]) == len(splits["train"]):
        summary["warning"] = ("no SBD masks found: train_aug equals train. Pass --sbd PATH/benchmark_RELEASE "
                              "(or --download) to get the 10,582-image train_aug split")
    return summary
