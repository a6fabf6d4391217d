"""Export a folder of instance pseudo labels (<id>.png + <id>.json) as a COCO annotations.json
for Mask R-CNN training (torchvision CocoDetection, detectron2 register_coco_instances)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from irnet_moana.cli import main_guard
from irnet_moana.coco_export import export_coco
from irnet_moana.data.voc import VOC_CLASSES, DatasetError, class_names, read_list


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--instances", required=True, help="folder of instance pseudo labels (<id>.png + <id>.json)")
    parser.add_argument("--out", required=True, help="COCO annotations file to write")
    parser.add_argument("--list", default=None, help="file of image ids to export (default: every <id>.json in --instances)")
    parser.add_argument("--classes", default=None,
                        help="dataset root or classes.txt naming the foreground classes (default: VOC's 20)")
    parser.add_argument("--min-score", type=float, default=0.0,
                        help="leave out instances scoring at or below this (IRNet scores 0 the fragments)")
    parser.add_argument("--image-dir", default="JPEGImages",
                        help="folder (under the dataset root) the images' file names are relative to")
    return parser


def default_stems(instance_dir: Path, out_path: Path) -> list[str]:
    """Every <id>.json in the folder, sorted; the output itself is skipped when it is written there."""
    if not instance_dir.is_dir():
        raise DatasetError(f"instance folder {instance_dir} does not exist; "
                           "run `python pipelines/make_instance_masks.py` first")
    out = out_path.resolve()
    # hidden names are other tools' files (and atomic writes' temporaries), never an image's instances
    return sorted(p.stem for p in instance_dir.glob("*.json")
                  if not p.name.startswith(".") and p.resolve() != out)


def main(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    instance_dir, out_path = Path(args.instances), Path(args.out)
    if args.classes is None:
        names = list(VOC_CLASSES)
    else:
        classes = Path(args.classes)
        names = class_names(classes.parent if classes.is_file() else classes)
    stems = read_list(args.list) if args.list else default_stems(instance_dir, out_path)
    summary = export_coco(instance_dir, stems, names, out_path, image_dir_name=args.image_dir,
                          min_score=args.min_score)
    print(f"wrote {summary['path']}")
    counts = ", ".join(f"{name} {n}" for name, n in summary["per_category"].items() if n)
    print(f"{summary['images']} images ({summary['images_without_annotations']} without annotations), "
          f"{summary['annotations']} annotations ({summary['left_out_low_score']} at or below score "
          f"{args.min_score} left out){': ' + counts if counts else ''}")
    return summary


if __name__ == "__main__":
    main_guard(main)
