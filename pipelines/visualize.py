"""Draw a run's figures: pipeline examples, MoANA attention, training curves (<run_dir>/figures/*.png).

Shows the first --num-images ids of data.eval_list (a fixed, reproducible
choice). Figures whose inputs do not exist yet are skipped, cells of stages
that have not run show "n/a"; rerun after later stages to complete them.
"""
from __future__ import annotations

from typing import Sequence

from irnet_moana.cli import main_guard, parse, stage_parser
from irnet_moana.stages import visualize


def main(argv: Sequence[str] | None = None):
    parser = stage_parser(__doc__)
    parser.add_argument("--num-images", type=int, default=visualize.NUM_IMAGES,
                        help="images shown (the first ones of data.eval_list)")
    cfg, args = parse(parser, argv)
    if args.num_images < 1:
        parser.error(f"--num-images must be at least 1, got {args.num_images}")
    return visualize.run(cfg, num_images=args.num_images)


if __name__ == "__main__":
    main_guard(main)
