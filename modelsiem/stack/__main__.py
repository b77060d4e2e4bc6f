"""``python -m modelsiem.stack up|down|status``: the stack without the CLI,
for debugging this package on its own."""

from __future__ import annotations

import argparse
import sys

from ..settings import Settings
from . import StackError, down, status, up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelsiem.stack")
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    settings = Settings()
    try:
        if args.command == "up":
            up(settings)
        elif args.command == "down":
            down(settings)
        else:
            for name, state in status(settings).items():
                print(f"{name}: {state}")
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
