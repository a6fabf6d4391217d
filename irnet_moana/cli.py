"""Argument handling shared by every pipeline script: a setting name or --config, --set, --run-dir."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from .config import ConfigError, load_config, setting_names
from .io import CorruptFileError, DatasetError
from .training import TrainingError


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The setting (by name or file), ``--set`` overrides and ``--run-dir``."""
    parser.add_argument("setting", nargs="?", default=None,
                        help=f"setting name: {', '.join(setting_names())} (irnet_moana/configs/<name>.yaml)")
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="a setting file of your own instead of a setting name")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set cam.lr=0.05 (repeatable)")
    parser.add_argument("--run-dir", default=None, help="run directory (default: the setting's run_dir)")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default in (None, []) else super()._get_help_string(action)


def stage_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    add_config_arguments(parser)
    return parser


def config_source(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The setting name or file the user chose; exactly one of the two, else a usage error listing the settings."""
    if args.setting is None and args.config is None:
        parser.error(f"which setting? give its name ({', '.join(setting_names())}) or --config FILE")
    if args.setting is not None and args.config is not None:
        parser.error("give a setting name or --config FILE, not both")
    return args.setting if args.setting is not None else args.config


def load(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    """The configuration the arguments describe, with ``--run-dir`` applied."""
    cfg = load_config(config_source(parser, args), args.overrides)
    if args.run_dir:
        cfg["run_dir"] = args.run_dir
    return cfg


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> tuple[dict, argparse.Namespace]:
    args = parser.parse_args(argv)
    return load(parser, args), args


def main_guard(main: Callable[[Sequence[str] | None], object]) -> None:
    """Run a pipeline's main; expected user errors print one clear line instead of a traceback."""
    try:
        main(None)
    except (ConfigError, DatasetError, CorruptFileError, TrainingError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to continue where it stopped", file=sys.stderr)
        sys.exit(130)
