"""Reading images and masks, writing results: numpy only, no torch.

Images come back as stored (dtype kept, colour channels last) so that normalisation can follow the
model's settings; TIFF stacks keep all their planes. Every write is atomic (temporary file in the
destination folder, then rename) and refuses to replace an existing file unless asked, so an
interrupted run never leaves a half-written file or destroys a user's data.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageReadError, InputError
from .files import StagedFile, atomic_write, stage_file
from .reader_warnings import reading

__all__ = ["ImageReadError", "IMAGE_SUFFIXES", "read_image", "read_image_with_axes", "read_mask", "check_mask",
           "map_tiff_series", "write_tiff", "write_png", "stage_tiff", "stage_png", "atomic_write", "list_images",
           "output_stem"]

#: File name endings read by ``read_image`` (lower case; ``.ome.tif`` is covered by ``.tif``).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_TIFF_SUFFIXES = (".tif", ".tiff")
# tifffile's axis letters -> ours; S ("samples", RGB stored interleaved) is a channel axis.
_TIFF_AXES = {"S": "C", "C": "C", "Z": "Z", "T": "T", "Y": "Y", "X": "X"}




def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a PNG, JPEG, BMP, TIFF or OME-TIFF image.

    Args:
        path: the file.

    Returns:
        The pixels as stored: H x W (grayscale), H x W x 3 / 4 (RGB / RGBA, channels last), or for
        TIFF any stack the file holds (first series, singleton axes removed). Palette images become
        RGB(A), 1-bit images uint8 0/255, grayscale+alpha grayscale.

    Raises:
        ImageReadError: the file is missing, not an image, truncated or corrupt.
    """
    return read_image_with_axes(path)[0]


def read_image_with_axes(path: str | os.PathLike, memory_map: bool = False) -> tuple[np.ndarray, str | None]:
    """Like ``read_image``, also returning the axes the file declares.

    Args:
        path: the file.
        memory_map: for an uncompressed TIFF, return a read-only ``numpy.memmap`` of its first
            series instead of reading it, so images larger than RAM can be segmented tile by tile.
            Other files (compressed or tiled TIFFs, PNG, ...) are read into memory as usual.

    Returns:
        (array, axes): ``axes`` uses the letters T, Z, C, Y, X (one per array dimension) when the
        file says what its axes are (TIFF/OME-TIFF/ImageJ metadata, or RGB samples), else ``None``
        (plain multi-page TIFFs, PNG, JPEG, BMP: let ``predict`` infer them).

    Raises:
        ImageReadError: as ``read_image``.
    """
    path = Path(path)
    with reading(path):  # names the file in the readers' warnings (reader_warnings)
        return _read_checked(path, memory_map)


def _read_checked(path: Path, memory_map: bool) -> tuple[np.ndarray, str | None]:
    if not path.exists():
        raise ImageReadError(f"{path}: file not found")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a folder, not an image file")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ImageReadError(f"{path}: unsupported file type {path.suffix or '(none)'!r}; "
                             f"use one of {', '.join(IMAGE_SUFFIXES)}")
    try:
        if suffix in _TIFF_SUFFIXES:
            array, axes = _read_tiff(path, memory_map)
        else:
            array, axes = _read_pil(path), None
    except ImageReadError:
        raise
    except MemoryError:
        raise ImageReadError(f"{path}: not enough memory to read this image") from None
    except Exception as exc:  # each library has its own exceptions for damaged files
        raise ImageReadError(f"{path}: cannot read image ({_first_line(exc)}); "
                             "is the file complete and really an image?") from None
    if array.size == 0 or array.ndim < 2:
        raise ImageReadError(f"{path}: holds no 2D image (shape {array.shape})")
    if array.dtype.kind not in "biuf":
        raise ImageReadError(f"{path}: pixel type {array.dtype} is not supported; save it as integer or float")
    return array, axes


_NATIVE_BYTEORDER = "<" if sys.byteorder == "little" else ">"


def map_tiff_series(tif: Any, series: Any) -> np.memmap | None:
    """A read-only memory map of a TIFF series (full resolution), or None when it cannot be mapped.

    Args:
        tif: an open ``tifffile.TiffFile``.
        series: one of its ``series``.

    Returns:
        The pixels with the series' shape, read from disk only where indexed; None when the series
        is compressed, tiled, split into several blocks, pyramidal or big-endian (callers then read
        it, so that arrays always have native byte order).
    """
    # tifffile sets dataoffset only for one contiguous uncompressed block.
    if series.dataoffset is None or len(series.levels) != 1 or tif.byteorder != _NATIVE_BYTEORDER:
        return None
    return np.memmap(tif.filehandle.path, dtype=series.dtype, mode="r", offset=series.dataoffset,
                     shape=series.shape)


def _read_tiff(path: Path, memory_map: bool = False) -> tuple[np.ndarray, str | None]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise ImageReadError(f"{path}: TIFF holds no image data")
        series = tif.series[0]
        axes = str(series.axes)
        try:
            mapped = map_tiff_series(tif, series) if memory_map else None
            array = mapped if mapped is not None else series.asarray()
        except ValueError as exc:
            # LZW and JPEG inside TIFF need the optional imagecodecs package; Pillow decodes them.
            if "imagecodecs" not in str(exc):
                raise
            return _read_pil_frames(path), None
    # tifffile keeps length-1 axes in some layouts; they mean nothing for segmentation.
    keep = [i for i, n in enumerate(array.shape) if n != 1]
    if len(keep) != array.ndim and len(keep) >= 2:
        axes = "".join(axes[i] for i in keep) if len(axes) == array.ndim else axes
        array = array.reshape([array.shape[i] for i in keep])
    if len(axes) != array.ndim or any(a not in _TIFF_AXES for a in axes):
        return array, None  # "Q"/"I" (unknown) axes: predict infers them
    mapped = "".join(_TIFF_AXES[a] for a in axes)
    if len(set(mapped)) != len(mapped):
        return array, None
    return array, mapped


def _read_pil(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img.load()  # decode now, so truncated files fail here and not later
        mode = img.mode
        if mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        elif mode == "1":
            img = img.convert("L")
        elif mode == "LA":
            img = img.getchannel("L")
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa"):
            img = img.convert("RGB")
        elif mode == "PA":
            img = img.convert("RGBA")
        array = np.asarray(img)
    if mode.startswith("I;16"):  # PIL reports 16-bit grayscale as I;16 with native-endian uint16
        array = array.astype(np.uint16, copy=False)
    return np.array(array, copy=True) if not array.flags.writeable else array


def _read_pil_frames(path: Path) -> np.ndarray:
    from PIL import Image, ImageSequence

    with Image.open(path) as img:
        frames = [np.asarray(frame.convert("RGB") if frame.mode in ("P", "CMYK", "YCbCr") else frame)
                  for frame in ImageSequence.Iterator(img)]
    if len(frames) == 1:
        return np.array(frames[0], copy=True)
    if len({(f.shape, f.dtype) for f in frames}) != 1:
        raise ImageReadError(f"{path}: pages differ in size or type; save each page as its own file")
    return np.stack(frames)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a ground-truth or label mask as a 2D array.

    Args:
        path: an image file (see ``read_image``); colour masks are reduced to their brightest
            channel, so a mask drawn in any colour on black counts as foreground.

    Returns:
        H x W array of the stored dtype (binary masks: nonzero is foreground; label images: ids).

    Raises:
        ImageReadError: unreadable file, or a stack rather than a single 2D mask.
    """
    array = read_image(path)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        array = array[:, :, :3].max(axis=2)
    if array.ndim != 2:
        raise ImageReadError(f"{path}: expected a 2D mask, got shape {array.shape}")
    return array


def check_mask(mask: np.ndarray, name: str = "mask", error: type[InputError] = InputError) -> np.ndarray:
    """A mask's values, checked the same way for training and for evaluation.

    Accepts bool, {0, 1}, {0, 255} and non-negative integer labels, also stored as floats with
    whole values; H x W x C masks whose channels are identical (masks saved as RGB) are reduced
    to one channel.

    Args:
        mask: the mask as read or painted.
        name: the file (or layer) named in messages.
        error: the error class to raise (``DataError`` for training, ``EvaluationError`` for scoring).

    Returns:
        H x W: the bool mask as given, or integer labels (whole floats converted; > 0 is foreground).

    Raises:
        error: not 2D, differing colour channels, NaN, infinite, fractional or negative values, or
            a non-numeric type; the message starts with ``name``.
    """
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[2] in (1, 3, 4):
        channels = mask[:, :, :3] if mask.shape[2] == 4 else mask
        if not (channels == channels[:, :, :1]).all():
            raise error(f"{name}: mask has differing colour channels; save it as a single-channel "
                        "binary or label image")
        mask = mask[:, :, 0]
    if mask.ndim != 2:
        raise error(f"{name}: mask must be 2D (H x W), got shape {mask.shape}")
    if mask.dtype == bool:
        return mask
    if np.issubdtype(mask.dtype, np.floating):
        if not np.isfinite(mask).all() or (mask != np.round(mask)).any():
            raise error(f"{name}: mask holds fractional or NaN values; give 0/1, 0/255 or integer labels")
    elif not np.issubdtype(mask.dtype, np.integer):
        raise error(f"{name}: mask has dtype {mask.dtype}; give 0/1, 0/255 or integer labels")
    if mask.size and mask.min() < 0:
        raise error(f"{name}: mask has negative values; give 0/1, 0/255 or non-negative integer labels")
    if np.issubdtype(mask.dtype, np.floating):
        return mask.astype(np.int64 if mask.size and mask.max() >= 2**31 else np.int32)
    return mask


def write_tiff(path: str | os.PathLike, array: np.ndarray, metadata: dict | None = None,
               overwrite: bool = False, compress: bool = True) -> Path:
    """Write ``array`` as a TIFF atomically (see ``atomic_write``).

    Args:
        path: destination file.
        array: 2D image, or a stack (leading axes become pages).
        metadata: JSON-serialisable dict stored as the TIFF ImageDescription (read it back with
            ``json.loads(tifffile.TiffFile(path).pages[0].description)``).
        overwrite: replace an existing file.
        compress: lossless zlib compression (label images shrink ~20x; float maps much less).

    Raises:
        FileExistsError: the file exists and ``overwrite`` is False.
        TypeError: ``metadata`` is not JSON-serialisable.
    """
    return atomic_write(path, _tiff_writer(array, metadata, compress), overwrite=overwrite)


def stage_tiff(path: str | os.PathLike, array: np.ndarray, metadata: dict | None = None,
               compress: bool = True) -> StagedFile:
    """Write a TIFF as ``write_tiff`` does, under a hidden temporary name: ``publish`` names it."""
    return stage_file(path, _tiff_writer(array, metadata, compress))


def _tiff_writer(array: np.ndarray, metadata: dict | None, compress: bool):
    import tifffile

    description = json.dumps(metadata, sort_keys=True) if metadata is not None else None
    array = np.asarray(array)

    def write(tmp: str) -> None:
        tifffile.imwrite(tmp, array, description=description, metadata=None,
                         compression="zlib" if compress else None,
                         photometric="minisblack", bigtiff=array.nbytes > 2**31)

    return write


def write_png(path: str | os.PathLike, array: np.ndarray, overwrite: bool = False,
              text: dict[str, str] | None = None) -> Path:
    """Write a uint8 H x W or H x W x 3/4 array as PNG atomically (see ``atomic_write``).

    ``text``: tEXt chunks (keyword -> text), read back with ``PIL.Image.open(path).text``.
    """
    return atomic_write(path, _png_writer(array, text), overwrite=overwrite)


def stage_png(path: str | os.PathLike, array: np.ndarray, text: dict[str, str] | None = None) -> StagedFile:
    """Write a PNG as ``write_png`` does, under a hidden temporary name: ``publish`` names it."""
    return stage_file(path, _png_writer(array, text))


def _png_writer(array: np.ndarray, text: dict[str, str] | None):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    image = Image.fromarray(np.ascontiguousarray(array))
    info = None
    if text:
        info = PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
    return lambda tmp: image.save(tmp, format="PNG", pnginfo=info)


def list_images(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files, glob patterns and folders into image files, in order, without duplicates.

    Args:
        inputs: file paths (any suffix: a wrong one fails when read), glob patterns (``*.png``,
            ``data/**/*.tif``), or folders (their image files, not recursive, hidden files skipped).

    Returns:
        The files, each once, in the order given (folder and glob matches sorted by name).

    Raises:
        ImageReadError: an input matches nothing: a missing file, an empty glob, a folder with no
            images. All such inputs are named in one message.
    """
    found: list[Path] = []
    problems: list[str] = []
    for item in inputs:
        text = os.path.expanduser(os.fspath(item))
        path = Path(text)
        if path.is_dir():
            files = sorted(p for p in path.iterdir()
                           if p.is_file() and not p.name.startswith(".") and _is_image_name(p))
            if not files:
                problems.append(f"{text} (folder with no {'/'.join(IMAGE_SUFFIXES)} files)")
            found.extend(files)
        elif path.is_file():
            found.append(path)
        elif glob.has_magic(text):
            files = sorted(Path(p) for p in glob.glob(text, recursive=True)
                           if os.path.isfile(p) and _is_image_name(Path(p)))
            if not files:
                problems.append(f"{text} (pattern matches no image files)")
            found.extend(files)
        else:
            problems.append(f"{text} (not found)")
    if problems:
        raise ImageReadError("no images for: " + "; ".join(problems))
    seen: set[Path] = set()
    unique = []
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def output_stem(path: str | os.PathLike) -> str:
    """The name part used for outputs: ``cells.ome.tif`` -> ``cells``, ``a.png`` -> ``a``."""
    name = Path(path).name
    lower = name.lower()
    for ending in (".ome.tiff", ".ome.tif"):
        if lower.endswith(ending):
            return name[: -len(ending)]
    return Path(name).stem


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
