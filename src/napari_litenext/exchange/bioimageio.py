"""Export a LiteNeXt as a BioImage Model Zoo package (format 0.5), and run the zoo's own test on one.

The package (a zip) holds:

* ``weights.pt`` (pytorch_state_dict) with ``litenext_architecture.py``, the network source that
  imports only torch; ``weights_torchscript.pt`` and ``weights.onnx`` converted from them;
* ``test_input.npy`` (raw values, 1 x 3 x H x W) and ``test_output.npy`` (1 x 1 x H x W
  probabilities), made with napari-litenext's own normalisation and network;
* ``cover.png`` from the test tensors, ``README.md`` (the model card and the steps around the
  network the format cannot express);
* in ``rdf.yaml``: pre-processing that reproduces the model's normalisation, sigmoid
  post-processing, axes (batch, channel, y, x with y and x 16 + 16 n), citations (the LiteNeXt
  paper, the training data), the licence, and under ``config.napari_litenext`` the settings with
  which ``load_model`` rebuilds the model exactly.

Descriptions are built and checked with bioimageio.spec, pinned (docs/install.md): its checks
and the format version it writes change between releases.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, SettingsError
from ..io.files import atomic_write
from . import testdata
from ._source import SETTINGS_KEY, refuse_existing, require, resolve_model, settings_digest, settings_metadata
from .package import DIGEST_KEY

__all__ = ["WEIGHT_FORMATS", "PAPER_CITATION", "export_bioimageio", "zoo_test", "data_citations"]

#: Weight formats a package holds, the first being the one the others are converted from.
WEIGHT_FORMATS = ("pytorch_state_dict", "torchscript", "onnx")
INPUT_ID, OUTPUT_ID = "raw", "probability"
PAPER_CITATION = ("Tran, Tran, Nguyen, Vu, Pham: LiteNeXt: A Novel Lightweight ConvMixer-based Model with "
                  "Self-embedding Representation Parallel for Medical Image Segmentation. Biomedical Signal "
                  "Processing and Control (2025); arXiv 2405.15779", "10.48550/arXiv.2405.15779")
# Data sets the bundled models were trained on, recognised in a card's training-data text.
_KNOWN_DATA = (
    (("bbbc038", "data science bowl"),
     "Caicedo et al.: Nucleus segmentation across imaging experiments: the 2018 Data Science Bowl. "
     "Nature Methods 16, 1247-1253 (2019) (BBBC038)", "10.1038/s41592-019-0612-7"),
    (("ph2",), "Mendonca et al.: PH2 - A dermoscopic image database for research and benchmarking. "
     "35th Annual International Conference of the IEEE EMBS, 5437-5440 (2013)", "10.1109/EMBC.2013.6610779"),
)
_DOI = re.compile(r"\b(10\.\d{4,9}/[^\s;,)]+)")
# Tags by words of the model card (the zoo asks for a modality and a content tag).
_TAG_WORDS = {"nucle": "nuclei", "fluoresc": "fluorescence-light-microscopy",
              "brightfield": "transmission-light-microscopy",
              "cell": "cells", "tissue": "tissue"}
_FILES = {"pytorch_state_dict": "weights.pt", "architecture": "litenext_architecture.py",
          "torchscript": "weights_torchscript.pt", "onnx": "weights.onnx", "test_input": "test_input.npy",
          "test_output": "test_output.npy", "sample_input": "sample_input.tif",
          "sample_output": "sample_output.tif", "cover": "cover.png", "documentation": "README.md"}


def data_citations(data_text: str) -> list[tuple[str, str]]:
    """(text, DOI) citations of the training data described in a model card's ``data`` field.

    DOIs written in the text are cited as they are; the data sets of the bundled models (BBBC038 /
    DSB 2018, PH2) are recognised by name.
    """
    found = [(f"Training data: {data_text[:200]}", doi.rstrip(".")) for doi in _DOI.findall(data_text)]
    lower = data_text.lower()
    found += [(text, doi) for words, text, doi in _KNOWN_DATA if any(w in lower for w in words)]
    return found


def export_bioimageio(model_or_source: Any, out_zip: str | os.PathLike, *, test_image: np.ndarray | None = None,
                      authors: Sequence[str] | None = None, license: str = "BSD-3-Clause",
                      cite: Sequence[tuple[str, str]] = (), tags: Sequence[str] = (),
                      overwrite: bool = False) -> Path:
    """Write a BioImage Model Zoo package (format 0.5) of a LiteNeXt.

    Args:
        model_or_source: a LiteNeXt (``load_model``, training), a bundled model name, or a
            checkpoint or package path.
        out_zip: the ``.zip`` to write (atomically).
        test_image: raw H x W or H x W x 3 image (uint8, uint16 or float) for the test tensors and
            the cover; resized to the model's input size (resize mode) or cropped to at most 256
            pixels (tile mode). None: a synthetic stand-in (``testdata.synthetic_image``).
        authors: names of the model's authors; default: "napari-litenext developers" for bundled
            models, else "unknown (set with --author)".
        license: SPDX licence identifier of the package.
        cite: extra (text, DOI or URL) citations; the LiteNeXt paper and the training data
            recognised in the card are always cited. URLs are checked online when validated.
        tags: extra tags.
        overwrite: replace an existing ``out_zip``.

    Returns:
        ``out_zip`` as a Path.

    Raises:
        FileExistsError: ``out_zip`` exists and ``overwrite`` is False.
        CheckpointError: ``model_or_source`` cannot be loaded.
        SettingsError: bioimageio.spec finds the description invalid, e.g. an unknown licence or a
            malformed DOI (the message names the fields).
        InputError: ``test_image`` is unusable.
        MissingDependencyError: bioimageio.spec or onnx is not installed.
    """
    require("bioimageio.spec", "write BioImage Model Zoo packages")
    require("onnx", "write the ONNX weights of a package")
    path = refuse_existing(out_zip, overwrite)
    _check_license_and_citations(license, cite)
    model = resolve_model(model_or_source)
    if authors is None:
        from ..network.registry import bundled_models

        bundled = isinstance(model_or_source, str) and model_or_source in bundled_models()
        authors = ["napari-litenext developers" if bundled else "unknown (set with --author)"]
    with tempfile.TemporaryDirectory(prefix="litenext-bioimageio-") as tmp:
        files = _write_files(model, Path(tmp), test_image)
        descr = _describe(model, files, list(authors), license, list(cite), list(tags))
        from bioimageio.spec import save_bioimageio_package

        return atomic_write(path, lambda part: save_bioimageio_package(descr, output_path=Path(part)),
                            overwrite=overwrite)


def _write_files(model: Any, folder: Path, test_image: np.ndarray | None) -> dict[str, Any]:
    """Write the package's files into ``folder``; returns their paths and facts the description needs."""
    import torch

    from .. import __version__
    from .architecture import architecture_source
    from .onnx import onnx_bytes
    from .readme import package_readme
    from .torchscript import save_torchscript, trace

    inference = model.inference
    if test_image is None:
        edge = inference.input_size if inference.mode == "resize" else 256
        test_image = testdata.synthetic_image(inference, edge)
    raw = testdata.make_test_input(test_image, inference, model.config.in_channels)
    network_input = testdata.normalise(raw, inference)
    with torch.no_grad():
        probabilities = torch.sigmoid(model(torch.from_numpy(network_input))).numpy()

    paths = {key: folder / name for key, name in _FILES.items()}
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, paths["pytorch_state_dict"])
    paths["architecture"].write_text(architecture_source(), encoding="utf-8")
    save_torchscript(trace(model), paths["torchscript"])
    paths["onnx"].write_bytes(onnx_bytes(model))
    np.save(paths["test_input"], raw)
    np.save(paths["test_output"], probabilities.astype(np.float32))
    # The same tensors as TIFF: what the zoo's website and tools show as samples.
    import tifffile

    tifffile.imwrite(paths["sample_input"], raw, photometric="minisblack")
    tifffile.imwrite(paths["sample_output"], probabilities.astype(np.float32), photometric="minisblack")
    from PIL import Image

    Image.fromarray(testdata.cover_image(network_input[0], probabilities[0, 0], inference.threshold)).save(
        paths["cover"])
    dtype = str(raw.dtype)
    described = {"pytorch_state_dict": "weights (state dict) for the network in `litenext_architecture.py`",
                 "architecture": "the network's source; needs only torch",
                 "torchscript": "traced TorchScript module", "onnx": "ONNX graph (opset 17) with the "
                 "settings in its metadata", "test_input": "raw test image", "test_output": "its probabilities",
                 "sample_input": "the test image as TIFF", "sample_output": "its probabilities as TIFF",
                 "cover": "test image and its mask"}
    readme = package_readme(model, dtype, __version__, {what: _FILES[key] for key, what in described.items()})
    paths["documentation"].write_text(readme, encoding="utf-8")
    return {"paths": paths, "dtype": dtype}


def _preprocessing(inference: Any, dtype: str) -> list:
    from bioimageio.spec.model import v0_5

    steps: list = [v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="float32"))]
    axes = [v0_5.AxisId("channel"), v0_5.AxisId("y"), v0_5.AxisId("x")]
    if inference.normalisation == "dtype":
        if testdata.DTYPE_GAIN[dtype] != 1.0:
            steps.append(v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearKwargs(gain=testdata.DTYPE_GAIN[dtype])))
    else:
        low, high = (0.0, 100.0) if inference.normalisation == "minmax" else inference.percentiles
        steps.append(v0_5.ScaleRangeDescr(kwargs=v0_5.ScaleRangeKwargs(
            axes=axes, min_percentile=low, max_percentile=high, eps=testdata.SCALE_RANGE_EPS)))
    steps.append(v0_5.ClipDescr(kwargs=v0_5.ClipKwargs(min=0.0, max=1.0)))
    if inference.invert:
        steps.append(v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearKwargs(gain=-1.0, offset=1.0)))
    steps.append(v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="float32")))
    return steps


def _describe(model: Any, files: dict[str, Any], authors: list[str], license: str,
              cite: list[tuple[str, str]], tags: list[str]):
    import torch
    from bioimageio.spec import ValidationContext
    from bioimageio.spec.model import v0_5

    from .architecture import ARCHITECTURE_CALLABLE, architecture_kwargs
    from .onnx import OPSET

    paths, dtype = files["paths"], files["dtype"]
    card, inference, channels = model.card, model.inference, model.config.in_channels
    size = v0_5.ParameterizedSize(min=16, step=16)
    names = ["red", "green", "blue"] if channels == 3 else [f"channel{i}" for i in range(channels)]
    inputs = [v0_5.InputTensorDescr(
        id=v0_5.TensorId(INPUT_ID),
        description=f"raw {dtype} image; grey images repeated into all {channels} channels",
        axes=[v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=names),
              v0_5.SpaceInputAxis(id=v0_5.AxisId("y"), size=size),
              v0_5.SpaceInputAxis(id=v0_5.AxisId("x"), size=size)],
        test_tensor=v0_5.FileDescr(source=paths["test_input"]),
        sample_tensor=v0_5.FileDescr(source=paths["sample_input"]),
        data=v0_5.IntervalOrRatioDataDescr(type=dtype),
        preprocessing=_preprocessing(inference, dtype))]
    outputs = [v0_5.OutputTensorDescr(
        id=v0_5.TensorId(OUTPUT_ID),
        description=f"foreground probability; mask: probability > {inference.threshold:g}",
        axes=[v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=["foreground"]),
              v0_5.SpaceOutputAxis(id=v0_5.AxisId("y"), size=v0_5.SizeReference(
                  tensor_id=v0_5.TensorId(INPUT_ID), axis_id=v0_5.AxisId("y"))),
              v0_5.SpaceOutputAxis(id=v0_5.AxisId("x"), size=v0_5.SizeReference(
                  tensor_id=v0_5.TensorId(INPUT_ID), axis_id=v0_5.AxisId("x")))],
        test_tensor=v0_5.FileDescr(source=paths["test_output"]),
        sample_tensor=v0_5.FileDescr(source=paths["sample_output"]),
        data=v0_5.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
        postprocessing=[v0_5.SigmoidDescr(), v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="float32"))])]
    torch_version = v0_5.Version(torch.__version__.split("+")[0])
    state_weights = v0_5.PytorchStateDictWeightsDescr(
        source=paths["pytorch_state_dict"], pytorch_version=torch_version,
        architecture=v0_5.ArchitectureFromFileDescr(
            source=paths["architecture"], callable=v0_5.Identifier(ARCHITECTURE_CALLABLE),
            kwargs=architecture_kwargs(model.config)))
    weights = v0_5.WeightsDescr(
        pytorch_state_dict=state_weights,
        torchscript=v0_5.TorchscriptWeightsDescr(source=paths["torchscript"], pytorch_version=torch_version,
                                                 parent="pytorch_state_dict"),
        onnx=v0_5.OnnxWeightsDescr(source=paths["onnx"], opset_version=OPSET, parent="pytorch_state_dict"))
    citations = [PAPER_CITATION, *data_citations(card.data), *cite]
    words = " ".join([card.name, card.description, card.data]).lower()
    all_tags = ["2d", "pytorch", "onnx", "semantic-segmentation", "litenext", "napari-litenext",
                *sorted({tag for word, tag in _TAG_WORDS.items() if word in words}), *tags]
    settings = settings_metadata(model)
    settings[DIGEST_KEY] = settings_digest(settings, paths["pytorch_state_dict"].read_bytes())
    config = v0_5.Config(bioimageio=v0_5.BioimageioConfig(
        architecture_type="LiteNeXt", model_parameter_count=model.num_parameters(),
        task="binary segmentation"), **{SETTINGS_KEY: settings})
    with ValidationContext(perform_io_checks=True, log_warnings=False):
        try:
            return v0_5.ModelDescr(
                name=_name(card.name), description=_description(card.description),
                authors=[v0_5.Author(name=a.replace("/", "-")) for a in authors],
                cite=[_cite_entry(text, ref) for text, ref in citations],
                license=license, tags=list(dict.fromkeys(all_tags)),
                documentation=v0_5.FileDescr(source=paths["documentation"]),
                covers=[v0_5.FileDescr(source=paths["cover"])],
                inputs=inputs, outputs=outputs, weights=weights, config=config)
        except ValueError as exc:  # pydantic.ValidationError: one line per invalid field
            raise SettingsError(f"the package description is invalid: {_errors(exc)}; fix the value named "
                                "(or report a napari-litenext bug if it is not one you gave)") from None


def _check_license_and_citations(license: str, cite: Sequence[tuple[str, str]]) -> None:
    """Refuse a licence or DOI the description would reject, before the export's work (offline)."""
    from bioimageio.spec import ValidationContext
    from bioimageio.spec.model import v0_5

    try:
        v0_5.LicenseId(license)
    except ValueError:
        raise SettingsError(f"licence {license!r} is not an SPDX identifier; use one such as CC-BY-4.0, MIT or "
                            "BSD-3-Clause (https://spdx.org/licenses)") from None
    with ValidationContext(perform_io_checks=False):
        for text, ref in cite:
            try:
                _cite_entry(text, ref)
            except ValueError:
                raise SettingsError(f"citation {text!r}: {ref!r} is neither a DOI (10.NNNN/...) nor an "
                                    "http(s) URL") from None


def _cite_entry(text: str, ref: str):
    from bioimageio.spec.model import v0_5

    if "://" in ref:
        return v0_5.CiteEntry(text=text, url=v0_5.HttpUrl(ref))
    return v0_5.CiteEntry(text=text, doi=v0_5.Doi(ref))


def _name(name: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9_+\- ()]", "-", name).strip() or "untitled"
    return f"LiteNeXt {clean}"[:128]


def _description(text: str) -> str:
    text = " ".join(text.split()) or "LiteNeXt binary segmentation model exported by napari-litenext."
    return text if len(text) <= 500 else text[:497] + "..."


def _errors(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {str(e.get('msg'))[:200]}" for e in errors()[:5])
    return str(exc).splitlines()[0]


def zoo_test(package: str | os.PathLike, weight_format: str | None = None) -> dict[str, Any]:
    """Run bioimageio.core's model test (what ``bioimageio test`` runs) on a package, offline.

    Args:
        package: the package (``.zip`` or ``rdf.yaml``).
        weight_format: one of ``WEIGHT_FORMATS``; None tests every format in the package.

    Returns:
        ``{"status": "passed" | "failed", "failures": [one line per failed check],
        "passed": [the names of the checks that passed]}``.

    Raises:
        MissingDependencyError: bioimageio.core is not installed.
    """
    require("bioimageio.core", "test BioImage Model Zoo packages")
    from bioimageio.core import test_model

    if not Path(package).is_file():
        raise InputError(f"package not found: {package}; give an existing .zip or rdf.yaml file")
    summary = test_model(str(package), weight_format=weight_format, devices=["cpu"])
    failures = [f"{d.name}: {e.msg.splitlines()[0] if e.msg else ''}" for d in summary.details
                if d.status == "failed" for e in (d.errors or [None]) if e is not None]
    failures += [d.name for d in summary.details if d.status == "failed" and not d.errors]
    # The summary says "valid-format" (not "failed") when the description is valid but a test failed.
    passed = summary.status == "passed" and not failures
    return {"status": "passed" if passed else "failed", "failures": failures,
            "passed": [d.name for d in summary.details if d.status == "passed"]}
