"""Seed mIoU of the CAMs on data.eval_list with a constant background score (cam.bg_threshold, cam.sweep)."""
from __future__ import annotations

from typing import Sequence

from irnet_moana.cli import main_guard, parse, stage_parser
from irnet_moana.stages import eval_cams


def main(argv: Sequence[str] | None = None):
    parser = stage_parser(__doc__)
    cfg, args = parse(parser, argv)
    return eval_cams.run(cfg)


if __name__ == "__main__":
    main_guard(main)
