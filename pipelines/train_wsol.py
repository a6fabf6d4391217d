"""Train the WSOL classifier (ResNet, layer3/layer4 at stride 1, optional MoANA); writes <run_dir>/wsol/model.pth."""
from __future__ import annotations

from typing import Sequence

from irnet_moana.cli import main_guard, parse, stage_parser
from irnet_moana.stages import train_wsol


def main(argv: Sequence[str] | None = None):
    parser = stage_parser(__doc__)
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in <run_dir>/wsol")
    cfg, args = parse(parser, argv)
    return train_wsol.run(cfg, resume=args.resume)


if __name__ == "__main__":
    main_guard(main)
