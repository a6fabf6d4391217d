"""Multi-scale + flip CAMs for every image of data.train_list; writes <run_dir>/cams/<id>.npz (resumable)."""
from __future__ import annotations

from typing import Sequence

from irnet_moana.cli import main_guard, parse, stage_parser
from irnet_moana.stages import make_cams


def main(argv: Sequence[str] | None = None):
    parser = stage_parser(__doc__)
    cfg, args = parse(parser, argv)
    return make_cams.run(cfg)


if __name__ == "__main__":
    main_guard(main)
