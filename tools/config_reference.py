"""Write docs/configuration.md, the configuration reference, from the schema in irnet_moana/config.py.

    python tools/config_reference.py           # (re)write the file
    python tools/config_reference.py --check   # exit 1 if the file is out of date
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from irnet_moana.config import reference_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only compare: exit 1 if docs/configuration.md differs from the schema")
    args = parser.parse_args(argv)
    text = reference_markdown()
    if args.check:
        if DOC.is_file() and DOC.read_text() == text:
            print(f"{DOC} is up to date")
            return 0
        print(f"{DOC} is out of date: run python tools/config_reference.py", file=sys.stderr)
        return 1
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
