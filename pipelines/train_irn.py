"""Train IRNet's boundary and displacement branches on the relation labels; writes <run_dir>/irn/model.pth."""
from __future__ import annotations

from typing import Sequence

from irnet_moana.cli import main_guard, parse, stage_parser
from irnet_moana.stages import train_irn


def main(argv: Sequence[str] | None = None):
    parser = stage_parser(__doc__)
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in <run_dir>/irn")
    cfg, args = parse(parser, argv)
    return train_irn.run(cfg, resume=args.resume)


if __name__ == "__main__":
    main_guard(main)
