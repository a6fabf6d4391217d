"""Run a setting end to end (what `bash run_all.sh <setting>` calls), resuming where it stopped.

Settings: demo, demo-wsol, voc12, voc12-moana, cub, ilsvrc (irnet_moana/configs/<name>.yaml).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from irnet_moana.cli import main_guard
from irnet_moana.pipeline import SETTINGS, MissingRequirements, run_setting


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("setting", choices=sorted(SETTINGS))
    parser.add_argument("--from", dest="start", metavar="STAGE", help="start at this stage")
    parser.add_argument("--only", metavar="STAGE", help="run only this stage")
    parser.add_argument("--force", action="append", default=[], metavar="STAGE",
                        help="delete this stage's outputs and redo it (repeatable)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (repeatable), e.g. --set cam.epochs=2")
    parser.add_argument("--run-dir", default=None, help="run directory (default: runs/<setting>)")
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    try:
        return run_setting(args.setting, args.overrides, args.run_dir, args.start, args.only, tuple(args.force))
    except MissingRequirements as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main_guard(main)
