"""What every package CLI shares: run the chosen sub-command and turn expected errors into ``error: ...``.

Imports nothing heavy, so a CLI's ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["run_command"]


def run_command(
    ap: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
    errors: tuple[type[BaseException], ...] = (FileNotFoundError, ValueError),
    prefix: str = "error",
) -> int:
    """Parses ``argv`` and calls the sub-command's ``func(args)``.

    Args:
        ap: the parser; every sub-parser sets ``func`` with ``set_defaults``.
        argv: the arguments (default: ``sys.argv[1:]``).
        errors: exceptions that are the user's to fix: printed as ``<prefix>: <message>`` on stderr, exit code 2.
        prefix: the start of that line.

    Returns:
        The sub-command's exit code.
    """
    args = ap.parse_args(argv)
    try:
        return int(args.func(args))
    except errors as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        return 2
