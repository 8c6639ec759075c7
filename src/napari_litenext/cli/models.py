"""``napari-litenext models``: list the bundled models, or show one model's card."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``models`` subcommand."""
    p = subparsers.add_parser(
        "models", help="list bundled models",
        description="List the bundled models with a one-line summary, or print one model's card.")
    p.add_argument("name", nargs="?", help="show the full model card of this bundled model")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Print the list (or a card) on stdout; an unknown name is a one-line error."""
    from . import CliError
    from ..network.registry import MODELS_DIR, bundled_models, model_card_text, model_summary

    models = bundled_models()
    if args.name is not None:
        if args.name not in models:
            names = ", ".join(models) if models else "none installed"
            raise CliError(f"unknown model {args.name!r}; bundled models: {names}")
        print(model_card_text(args.name).rstrip() or f"{args.name}: (no model card)")
        return 0
    if not models:
        print(f"no bundled models are installed (looked in {MODELS_DIR}); pass a checkpoint file "
              "with --model PATH, e.g. one written by napari-litenext train")
        return 0
    width = max(len(n) for n in models)
    for name in models:
        print(f"{name:<{width}}  {model_summary(name)}")
    return 0
