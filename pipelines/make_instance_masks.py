"""IRNet's instance masks from its displacement field and boundary map; writes <run_dir>/instance_masks/<id>.{png,json}, the semantic-component baseline in <run_dir>/instance_baseline/ and a COCO export (resumable)."""
from __future__ import annotations

from typing import Sequence

from irnet_moana.cli import main_guard, parse, stage_parser
from irnet_moana.stages import make_instance_masks


def main(argv: Sequence[str] | None = None):
    parser = stage_parser(__doc__)
    cfg, args = parse(parser, argv)
    return make_instance_masks.run(cfg)


if __name__ == "__main__":
    main_guard(main)
