"""``napari-litenext export``: a model as a BioImage Model Zoo package, an ONNX file or TorchScript."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run", "FORMATS"]

#: --format choices, and the file endings that choose them when --format is not given.
FORMATS = {"bioimageio": (".zip",), "onnx": (".onnx",), "torchscript": (".pt", ".ts", ".torchscript")}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``export`` subcommand."""
    p = subparsers.add_parser(
        "export", help="export a model (BioImage Model Zoo package, ONNX, TorchScript)",
        description="Export a model to run elsewhere: a BioImage Model Zoo package (.zip: bioimage.io, "
                    "deepImageJ, ilastik; napari-litenext reads it back), one ONNX file carrying the "
                    "model's settings (ONNX Runtime, no torch), or a TorchScript module.")
    p.add_argument("model", metavar="MODEL", help="bundled model name, checkpoint file or package")
    p.add_argument("output", metavar="OUT", type=Path, help="file to write (.zip, .onnx or .pt)")
    p.add_argument("--format", choices=sorted(FORMATS), default=None,
                   help="what to write (default: from OUT's ending: .zip bioimageio, .onnx onnx, .pt torchscript)")
    p.add_argument("--author", action="append", default=None, metavar="NAME",
                   help="an author of the model (repeat for several; bioimageio only)")
    p.add_argument("--license", default="BSD-3-Clause", metavar="SPDX",
                   help="licence of the package, an SPDX identifier (default: BSD-3-Clause; bioimageio only)")
    p.add_argument("--cite", action="append", default=[], metavar="TEXT=DOI",
                   help="an extra citation, e.g. 'My data set (2024)=10.5281/zenodo.123' (bioimageio only)")
    p.add_argument("--tag", action="append", default=[], metavar="TAG", help="an extra tag (bioimageio only)")
    p.add_argument("--test-image", type=Path, default=None, metavar="PATH",
                   help="image for the package's test tensors and cover (default: a synthetic one; bioimageio only)")
    p.add_argument("--test", action="store_true",
                   help="run the BioImage Model Zoo's test (bioimageio test) on the package after writing it")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Export; 0 on success, 1 when ``--test`` finds the package failing the zoo's test."""
    from . import CliError

    fmt = args.format or _format_from_name(args.output)
    out: Path = args.output
    if out.exists() and not args.overwrite:
        raise CliError(f"{out} exists; pass --overwrite to replace it")
    if fmt != "bioimageio" and (args.author or args.cite or args.tag or args.test_image or args.test):
        raise CliError("--author, --cite, --tag, --test-image and --test apply to --format bioimageio only")
    if fmt == "bioimageio":
        from ..exchange.bioimageio import export_bioimageio, zoo_test

        export_bioimageio(args.model, out, test_image=_test_image(args.test_image), authors=args.author,
                          license=args.license, cite=[_citation(c) for c in args.cite], tags=args.tag,
                          overwrite=args.overwrite)
    elif fmt == "onnx":
        from ..exchange.onnx import export_onnx

        export_onnx(args.model, out, overwrite=args.overwrite)
    else:
        from ..exchange.torchscript import export_torchscript

        export_torchscript(args.model, out, overwrite=args.overwrite)
    if not args.quiet:
        print(f"wrote {out} ({fmt}, {out.stat().st_size / 2**20:.1f} MB)")
    if args.test:
        result = zoo_test(out)
        for failure in result["failures"]:
            print(f"  failed: {failure}")
        if not args.quiet or result["status"] != "passed":
            print(f"bioimageio test: {result['status']}")
        return 0 if result["status"] == "passed" else 1
    return 0


def _format_from_name(path: Path) -> str:
    from . import CliError

    name = path.name.lower()
    for fmt, endings in FORMATS.items():
        if name.endswith(endings):
            return fmt
    raise CliError(f"cannot tell the format from {path.name!r}: give --format "
                   f"({', '.join(sorted(FORMATS))}) or end OUT with .zip, .onnx or .pt")


def _citation(text: str) -> tuple[str, str]:
    from . import CliError

    cited, sep, ref = text.partition("=")
    if not sep or not cited.strip() or not ref.strip():
        raise CliError(f"--cite {text!r}: write it as TEXT=DOI or TEXT=URL, e.g. 'My data (2024)=10.5281/zenodo.123'")
    return cited.strip(), ref.strip()


def _test_image(path: Path | None):
    if path is None:
        return None
    from ..io.images import read_image

    return read_image(path)
