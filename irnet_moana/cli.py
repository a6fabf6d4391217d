"""Argument handling shared by every pipeline script: --config, --set, --run-dir."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from .config import ConfigError, load_config


def stage_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", default="pipelines/configs/voc12.yaml",
                        help="setting file (pipelines/configs/*.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set cam.lr=0.05 (repeatable)")
    parser.add_argument("--run-dir", default=None, help="run directory (default: the config's run_dir)")
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> tuple[dict, argparse.Namespace]:
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if args.run_dir:
        cfg["run_dir"] = args.run_dir
    return cfg, args


def main_guard(main: Callable[[Sequence[str] | None], object]) -> None:
    """Run a pipeline's main; expected user errors print one clear line instead of a traceback."""
    from .data.voc import DatasetError
    from .io import CorruptFileError
    from .training import TrainingError

    try:
        main(None)
    except (ConfigError, DatasetError, CorruptFileError, TrainingError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to continue where it stopped", file=sys.stderr)
        sys.exit(130)
