"""Score instance masks (make_instance_masks' <id>.png + <id>.json) against VOC SegmentationObject: mAP^r."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from irnet_moana import io
from irnet_moana.cli import main_guard
from irnet_moana.data.voc import DatasetError, class_names, read_list
from irnet_moana.instance_eval import (IOU_THRESHOLDS, TOUCHING_GAP, default_stems, format_ap_table, format_map_line,
                                       score_instance_folder, touching_same_class_stems)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--pred", required=True, help="folder of predicted instances (<id>.png + <id>.json)")
    parser.add_argument("--gt", required=True,
                        help="dataset root holding SegmentationObject/ and SegmentationClass/ (<id>.png)")
    parser.add_argument("--list", default=None, help="file of image ids to score (default: every <id>.json in --pred)")
    parser.add_argument("--classes", default=None,
                        help="dataset root or classes.txt naming the foreground classes "
                             "(default: --gt's classes.txt, else VOC's 20)")
    parser.add_argument("--iou", type=float, nargs="+", default=list(IOU_THRESHOLDS),
                        help="IoU thresholds a prediction must reach to count")
    parser.add_argument("--touching", action="store_true",
                        help="score only the images where two instances of one class touch (ground-truth pixels "
                             f"within {TOUCHING_GAP:g} px across the void band)")
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    classes = Path(args.classes) if args.classes else Path(args.gt)
    names = class_names(classes.parent if classes.is_file() else classes)
    stems = read_list(args.list) if args.list else None
    if args.touching:
        listed = stems if stems is not None else default_stems(args.pred)
        stems = touching_same_class_stems(args.gt, listed)
        if not stems:
            raise DatasetError(f"none of the {len(listed)} images has touching instances of one class in {args.gt}; "
                               "drop --touching")
    summary = score_instance_folder(args.pred, args.gt, stems, names, args.iou)
    print(format_ap_table(summary, f"{args.pred} vs {args.gt} ({summary['num_images']} images), AP in %"))
    if args.out:
        io.write_json(args.out, summary)
        print(f"wrote {args.out}")
    print(format_map_line(summary))
    return summary


if __name__ == "__main__":
    main_guard(main)
