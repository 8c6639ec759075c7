"""Reading a BioImage Model Zoo package written by ``export_bioimageio`` back into a LiteNeXt.

Needs only PyYAML and torch, not bioimageio.core: the package's ``rdf.yaml`` names the weight
files with their SHA-256, and its ``config.napari_litenext`` holds the settings that rebuild the
model exactly (network shape, inference settings, card, checkpoint digest). A package is a
``.zip`` or an unpacked folder given by its ``rdf.yaml`` / ``bioimageio.yaml``.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ._source import SETTINGS_KEY, require, settings_digest, settings_from_metadata

__all__ = ["DIGEST_KEY", "MAX_FILE_BYTES", "RDF_NAMES", "is_package_path", "read_rdf", "read_package_file",
           "read_package"]

#: Key of ``settings_digest`` among a package's settings.
DIGEST_KEY = "settings_sha256"
#: Largest file read from a package: the weights of the largest network napari-litenext builds
#: take under 1 GB; a zip entry claiming more is refused before it is decompressed.
MAX_FILE_BYTES = 2 << 30
#: File names of a package's description, newest first.
RDF_NAMES = ("bioimageio.yaml", "rdf.yaml")


def is_package_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a package: a ``.zip`` file or a ``*.yaml`` / ``*.yml`` description."""
    return Path(path).suffix.lower() in (".zip", ".yaml", ".yml")


class _Package:
    """The files of a zipped or unpacked package, by their names in ``rdf.yaml``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise CheckpointError(f"package not found: {path}; give an existing .zip or rdf.yaml file")
        if path.suffix.lower() == ".zip":
            try:
                self._zip: zipfile.ZipFile | None = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError):
                raise CheckpointError(f"{path} is not a readable zip file (truncated or corrupt); "
                                      "download or export the package again") from None
            names = set(self._zip.namelist())
            rdf_name = next((n for n in RDF_NAMES if n in names), None)
            if rdf_name is None:
                raise CheckpointError(f"{path} has no {' or '.join(RDF_NAMES)}: it is not a BioImage Model "
                                      "Zoo package")
            text = self._read(rdf_name)
        else:
            self._zip = None
            text = self._read(path.name)
        require("yaml", "read BioImage Model Zoo packages")
        import yaml

        try:
            self.rdf = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CheckpointError(f"{path}: the package description is not valid YAML "
                                  f"({str(exc).splitlines()[0]}); export the package again") from None
        if not isinstance(self.rdf, dict) or self.rdf.get("type") != "model":
            raise CheckpointError(f"{path} does not describe a model (BioImage Model Zoo 'type: model')")

    def read(self, source: Any, sha256: Any) -> bytes:
        """The bytes of file ``source`` (relative to the description), checked against ``sha256``."""
        name = str(source)
        if "://" in name:
            raise CheckpointError(f"{self.path} points to remote weights ({name}); download the whole "
                                  "package (a .zip) and load that")
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise CheckpointError(f"{self.path} names a file outside the package ({name}); a package's "
                                  "files must lie inside it: export it again")
        try:
            data = self._read(name)
        except (KeyError, OSError, zipfile.BadZipFile):
            raise CheckpointError(f"{self.path}: the package lacks its file {name}; download or export "
                                  "it again") from None
        if sha256 and hashlib.sha256(data).hexdigest() != str(sha256):
            raise CheckpointError(f"{self.path}: {name} fails its SHA-256 check (the file was modified or "
                                  "damaged); download or export the package again")
        return data

    def _read(self, name: str) -> bytes:
        """A file's bytes, refusing one that claims more than ``MAX_FILE_BYTES`` before reading it."""
        size = self._zip.getinfo(name).file_size if self._zip is not None else (self.path.parent / name).stat().st_size
        if size > MAX_FILE_BYTES:
            raise CheckpointError(f"{self.path}: {name} holds more than {MAX_FILE_BYTES / 2**30:g} GiB, more than "
                                  "any LiteNeXt needs; the package is damaged or not one")
        return self._zip.read(name) if self._zip is not None else (self.path.parent / name).read_bytes()

    def weights(self, weight_format: str) -> bytes:
        formats = self.rdf.get("weights") if isinstance(self.rdf.get("weights"), dict) else {}
        entry = formats.get(weight_format)
        if not isinstance(entry, dict) or "source" not in entry:
            have = ", ".join(sorted(map(str, formats))) or "none"
            raise CheckpointError(f"{self.path} has no {weight_format} weights (it has: {have}); "
                                  "export it again with napari-litenext export")
        return self.read(entry["source"], entry.get("sha256"))

    def settings(self) -> dict:
        config = self.rdf.get("config")
        return config.get(SETTINGS_KEY) if isinstance(config, dict) else None


def read_rdf(path: str | os.PathLike) -> dict:
    """The parsed description (``rdf.yaml``) of a package.

    Raises:
        CheckpointError: the package is missing, unreadable or not a model.
    """
    return _Package(Path(path)).rdf


def read_package_file(path: str | os.PathLike, weight_format: str) -> bytes:
    """The checked bytes of a package's weights in ``weight_format``.

    Args:
        path: the package (``.zip`` or description file).
        weight_format: ``"pytorch_state_dict"``, ``"torchscript"`` or ``"onnx"``.

    Raises:
        CheckpointError: the package is unusable or lacks those weights, or they fail their SHA-256.
    """
    return _Package(Path(path)).weights(weight_format)


def read_package(path: str | os.PathLike):
    """The ``Checkpoint`` (``network.checkpoint``) in a package written by ``export_bioimageio``.

    Args:
        path: the package: a ``.zip``, or the ``rdf.yaml`` / ``bioimageio.yaml`` of an unpacked one.

    Returns:
        ``Checkpoint``; ``.build_model()`` gives the LiteNeXt with the exported inference
        settings, card and checkpoint digest.

    Raises:
        CheckpointError: the package is missing or damaged, was not written by napari-litenext
            (no ``config.napari_litenext``), or its settings or weights were changed after export.
    """
    import torch

    from ..network.checkpoint import Checkpoint
    from ..network.checkpoint_guard import check_archive, check_model_config, check_weights

    package = _Package(Path(path))
    meta = package.settings()
    config, inference, card, sha256 = settings_from_metadata(meta, path)
    data = package.weights("pytorch_state_dict")
    if meta.get(DIGEST_KEY) != settings_digest(meta, data):
        raise CheckpointError(f"{path}: the settings and weights fail their SHA-256 check: the package was "
                              "modified after export (edit settings with napari-litenext instead); export it again")
    # A package is as untrusted as a checkpoint: the same checks before anything is built.
    check_model_config(config.to_dict(), Path(path))
    check_archive(Path(path), len(data), data)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # torch's zip reader and the safe unpickler raise many types
        raise CheckpointError(f"{path}: the pytorch_state_dict weights are not a readable state dict; "
                              "export the package again") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: the pytorch_state_dict weights hold a {type(state).__name__}, "
                              "not a state dict; export the package again")
    check_weights(state, config, Path(path), len(data))
    # The checkpoint's digest, kept as the model's identity (recorded with every prediction).
    return Checkpoint(config, inference, card, state, {}, sha256)
