"""``photomend`` command line: one sub-command per module in :mod:`engine.commands`.

Each command module exposes ``register(subparsers)`` (adds its parser and sets ``func``)
and keeps heavy imports (torch, open_clip) inside its ``run`` function so ``--help`` is fast.
Exit status: 0 success, 1 partial failure, 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = ("synth", "detect", "train", "eval", "restore", "bench", "selftest")


class UsageError(Exception):
    """A problem with the user's arguments or inputs: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="photomend", description="Restore photos with one or several degradations.")
    parser.add_argument("--version", action="version", version="photomend 0.1.0")
    parser.add_argument("--self-test", action="store_true", help="restore a bundled sample and check the output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"engine.commands.{name}")
        except ModuleNotFoundError as exc:  # a command not written yet must not break the others
            if exc.name != f"engine.commands.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.self_test:
        from engine.commands.selftest import run_self_test

        return run_self_test()
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"photomend {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("photomend: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
