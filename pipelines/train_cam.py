"""Train the CAM classifier (ResNet + optional MoANA) on image-level labels; writes <run_dir>/cam/model.pth."""
from __future__ import annotations

from typing import Sequence

from irnet_moana.cli import main_guard, parse, stage_parser
from irnet_moana.stages import train_cam


def main(argv: Sequence[str] | None = None):
    parser = stage_parser(__doc__)
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in <run_dir>/cam")
    cfg, args = parse(parser, argv)
    return train_cam.run(cfg, resume=args.resume)


if __name__ == "__main__":
    main_guard(main)
