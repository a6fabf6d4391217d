"""Score any folder of PNG masks against a folder of VOC-style ground-truth masks."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from irnet_moana import io
from irnet_moana.cli import main_guard
from irnet_moana.data.voc import VOC_CLASSES, class_names, read_list
from irnet_moana.evaluation import score_mask_folder
from irnet_moana.metrics import format_iou_table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--pred", required=True, help="folder of predicted label PNGs (<id>.png)")
    parser.add_argument("--gt", required=True, help="folder of ground-truth label PNGs (<id>.png)")
    parser.add_argument("--list", default=None, help="file of image ids to score (default: every PNG in --gt)")
    parser.add_argument("--classes", default=None,
                        help="dataset root or classes.txt naming the foreground classes (default: VOC's 20)")
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.classes is None:
        names = list(VOC_CLASSES)
    else:
        classes = Path(args.classes)
        names = class_names(classes.parent if classes.is_file() else classes)
    stems = read_list(args.list) if args.list else None
    summary = score_mask_folder(args.pred, args.gt, ["background", *names], stems)
    print(format_iou_table(summary, f"{args.pred} vs {args.gt} ({summary['num_images']} images)"))
    if args.out:
        io.write_json(args.out, summary)
        print(f"wrote {args.out}")
    print(f"mIoU {summary['miou']:.1f}")
    return summary


if __name__ == "__main__":
    main_guard(main)
