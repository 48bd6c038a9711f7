"""Options shared by the subcommands: positive integers, the CrysTens layout, the run options.

The type functions keep their names: argparse quotes them in its errors
("argument -n: invalid _positive_int value: 'x'").
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crysgen.crystal_set import CrystalSet
    from crysgen.representations.crystens.layout import CrysTensLayout
    from crysgen.training.config import Settings


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _sites(text: str) -> int | str:
    return "auto" if text == "auto" else _positive_int(text)


def _add_layout_options(p: argparse.ArgumentParser) -> None:
    """--sites and --element-code: the CrysTens layout (representations.crystens.layout)."""
    p.add_argument("--sites", type=_sites, default=None,
                   help="CrysTens site rows S (tensor side 12 + S, +10 with element codes), or "
                        "'auto': the data's largest crystal (default: the config's, else the paper's 52)")
    p.add_argument("--element-code", action=argparse.BooleanOptionalAction, default=None,
                   help="header rows with each site's element code (period + group one-hot), "
                        "decoded by snapping to the nearest element (default: the config's, else off)")


def _layout(args: argparse.Namespace, crystals: Callable[[], CrystalSet],
            current: CrysTensLayout | None = None) -> CrysTensLayout:
    """The CrysTens layout: --sites/--element-code over ``current`` (default: the paper's).

    ``crystals`` gives the data, read only for ``--sites auto``.
    """
    from crysgen.representations.crystens.layout import CrysTensLayout

    current = current or CrysTensLayout()
    code = current.element_code if args.element_code is None else args.element_code
    if args.sites == "auto":
        return CrysTensLayout.fitting(crystals().num_sites, element_code=code)
    return CrysTensLayout(sites=current.sites if args.sites is None else args.sites, element_code=code)


def _add_run_options(p: argparse.ArgumentParser, steps_help: str = "override optim.max_steps") -> None:
    """The options every `crysgen train` model kind shares: length, devices, resume, quiet."""
    p.add_argument("--max-steps", type=_positive_int, default=None, help=steps_help)
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this wall time")
    p.add_argument("--devices", type=_positive_int, default=1, help="GPUs (DDP when > 1)")
    p.add_argument("--resume", action="store_true", help="continue RUN_DIR/checkpoints/last.ckpt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_set_option(p)


def _add_set_option(p: argparse.ArgumentParser,
                    example: str = "--set optim.lr=1e-4 --set 'unet.block_out_channels=[32,64,128,128]'",
                    ) -> None:
    """``--set KEY=VALUE`` (repeatable): one config setting of a new run over ``--config``."""
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"set one config setting of a new run over --config (repeatable; the value "
                        f"is YAML), e.g. {example}")


def _with_set(args: argparse.Namespace, config: Settings | None,
              default: Callable[[], Settings]) -> Settings | None:
    """A new run's config with ``--set`` applied (over ``default()`` when no config was built).

    Raises:
        CrysgenError: for ``--set`` with ``--resume`` (a resumed run keeps its saved config) or a
            setting the config does not have.
    """
    from crysgen.errors import CrysgenError
    from crysgen.training.config import parse_overrides, with_overrides

    if not args.set:
        return config
    if args.resume:
        raise CrysgenError("--set changes a new run's config; a resumed run keeps its own "
                           "(RUN_DIR/config.yaml)")
    return with_overrides(config if config is not None else default(), parse_overrides(args.set))
