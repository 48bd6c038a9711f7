"""The ``crysgen`` command: thin wrappers over tested library functions.

One module per subcommand group (``data``, ``codec``, ``sample``, ``train``, ``evaluate``,
``relax``, ``compare``, ``predict``, ``model``), each with ``register(subparsers)`` and its
``_cmd_*`` handlers; the options they share are in ``options``. Handlers import what they need
when they run, so that ``crysgen --help`` starts fast.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence

from crysgen.cli import codec, compare, data, evaluate, model, predict, relax, sample, train
from crysgen.errors import CrysgenError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``crysgen`` command."""
    from crysgen import __version__

    parser = argparse.ArgumentParser(
        prog="crysgen", description="Generative models of inorganic crystal structures."
    )
    parser.add_argument("--version", action="version", version=f"crysgen {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    # the order of --help
    for command in (data, codec, sample, train, evaluate, relax, compare, predict, model):
        command.register(sub)
    return parser


@contextlib.contextmanager
def _quiet_spglib() -> Iterator[None]:
    """Silence spglib's C-level warnings for the command, unless the user set SPGLIB_WARNING.

    spglib prints lines such as "ssm_get_exact_positions failed" for every noisy cell; they are
    not errors. The variable is set here, for the command and its worker processes, and not at
    ``import crysgen``, so a program that imports the library keeps its environment.
    """
    if "SPGLIB_WARNING" in os.environ:
        yield
        return
    os.environ["SPGLIB_WARNING"] = "OFF"
    try:
        yield
    finally:
        os.environ.pop("SPGLIB_WARNING", None)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``crysgen`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with _quiet_spglib():
            return int(args.func(args))
    except CrysgenError as exc:
        print(f"crysgen: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("crysgen: interrupted", file=sys.stderr)
        return 130
