"""Optional: train torchvision's Mask R-CNN on the instance pseudo labels (<run_dir>/instance_masks_coco.json),
predict maskrcnn.eval_list into <run_dir>/maskrcnn/pred and score them (<run_dir>/metrics/eval_maskrcnn.json)."""
from __future__ import annotations

from typing import Sequence

from irnet_moana.cli import main_guard, parse, stage_parser
from irnet_moana.stages import train_maskrcnn


def main(argv: Sequence[str] | None = None):
    parser = stage_parser(__doc__)
    parser.add_argument("--resume", action="store_true",
                        help="continue from the last checkpoint in <run_dir>/maskrcnn")
    cfg, args = parse(parser, argv)
    return train_maskrcnn.run(cfg, resume=args.resume)


if __name__ == "__main__":
    main_guard(main)
