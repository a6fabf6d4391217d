"""Train the final segmentation network (deeplab.arch: DeepLab v2 or an smp architecture) on deeplab.train_list
with pseudo masks (or --labels DIR); writes <run_dir>/deeplab/model.pth."""
from __future__ import annotations

from typing import Sequence

from deeplab import train
from irnet_moana.cli import main_guard, parse, stage_parser


def main(argv: Sequence[str] | None = None):
    parser = stage_parser(__doc__)
    parser.add_argument("--labels", default=None, metavar="DIR",
                        help="folder of label PNGs <id>.png (default: deeplab.labels, or <run_dir>/pseudo_masks "
                             "when that is empty); e.g. the dataset's SegmentationClass for a fully supervised run")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in <run_dir>/deeplab")
    cfg, args = parse(parser, argv)
    return train.run(cfg, labels=args.labels, resume=args.resume)


if __name__ == "__main__":
    main_guard(main)
