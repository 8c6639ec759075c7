"""The ``napari-litenext`` command line.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` and ``run(args) -> int``.
User mistakes raise ``CliError`` (or one of the package's input errors) and are printed as one
line, ``napari-litenext: error: ...``, with exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import LiteNeXtError

__all__ = ["main", "CliError"]

SUBCOMMANDS = ("predict", "train", "evaluate", "models", "export")


class CliError(LiteNeXtError):
    """A user mistake on the command line; the message says how to fix it."""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (subcommand modules are imported here, torch is not)."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="napari-litenext",
        description="LiteNeXt segmentation: predict, train, evaluate, list bundled models.")
    parser.add_argument("--version", action="version", version=f"napari-litenext {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("napari-litenext: interrupted; nothing partial was kept", file=sys.stderr)
        return 130
    except Exception as exc:
        if not _is_user_error(exc):
            raise
        print(f"napari-litenext: error: {_as_flags(exc)}", file=sys.stderr)
        return 2


def _as_flags(exc: Exception) -> str:
    """The message, with a leading setting name written as its option (``min_size`` -> ``--min-size``)."""
    from ..config import InferenceConfig
    from ..errors import SettingsError

    text = str(exc)
    first, _, rest = text.partition(" ")
    if isinstance(exc, SettingsError) and first in InferenceConfig.__dataclass_fields__:
        return f"--{first.replace('_', '-')} {rest}"
    return text


def _is_user_error(exc: Exception) -> bool:
    # FileNotFoundError: argparse paths and files that vanished between listing and reading.
    return isinstance(exc, (LiteNeXtError, FileNotFoundError))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
