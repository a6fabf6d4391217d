"""Evaluate DeepLab v2 on deeplab.eval_list: single scale, multi-scale + flip and (deeplab.crf) dense CRF.

Writes palette PNGs to <run_dir>/deeplab/pred_{ss,msf,msf_crf}/ (existing ones are kept, so a rerun resumes)
and per-class IoU and mIoU of each setting to <run_dir>/metrics/eval_deeplab.json.
"""
from __future__ import annotations

from typing import Sequence

from deeplab import evaluate
from irnet_moana.cli import main_guard, parse, stage_parser


def main(argv: Sequence[str] | None = None):
    parser = stage_parser(__doc__)
    cfg, args = parse(parser, argv)
    return evaluate.run(cfg)


if __name__ == "__main__":
    main_guard(main)
