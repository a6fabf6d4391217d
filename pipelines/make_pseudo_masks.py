"""Random walk of the stride-4 CAMs over IRNet's boundary affinities; writes <run_dir>/pseudo_masks/<id>.png (resumable)."""
from __future__ import annotations

from typing import Sequence

from irnet_moana.cli import main_guard, parse, stage_parser
from irnet_moana.stages import make_pseudo_masks


def main(argv: Sequence[str] | None = None):
    parser = stage_parser(__doc__)
    cfg, args = parse(parser, argv)
    return make_pseudo_masks.run(cfg)


if __name__ == "__main__":
    main_guard(main)
