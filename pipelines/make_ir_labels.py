"""Confident relation labels from the high-res CAMs with dense CRF; writes <run_dir>/ir_labels/<id>.png (resumable, process pool)."""
from __future__ import annotations

from typing import Sequence

from irnet_moana.cli import main_guard, parse, stage_parser
from irnet_moana.stages import make_ir_labels


def main(argv: Sequence[str] | None = None):
    parser = stage_parser(__doc__)
    cfg, args = parse(parser, argv)
    return make_ir_labels.run(cfg)


if __name__ == "__main__":
    main_guard(main)
