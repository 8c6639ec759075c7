import json
import os

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import napari_litenext.io.images as nl_io
import napari_litenext.network.registry as registry
from napari_litenext.network.checkpoint import save_checkpoint
from napari_litenext.cli import main
from napari_litenext.config import InferenceConfig, ModelCard
from napari_litenext.network.model import LiteNeXt


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    inference = InferenceConfig(mode="tile", tile_size=32, tile_overlap=0.25)
    digest = save_checkpoint(path, LiteNeXt(), inference, ModelCard(name="tiny"))
    return path, digest


@pytest.fixture
def images(tmp_path, rng):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (36, 44), dtype=np.uint8)).save(folder / "b.png")
    return folder


def error_lines(err):
    return [line for line in err.splitlines() if "error:" in line]


def test_predict_folder_writes_labels_with_metadata(images, tmp_path, checkpoint, capsys):
    path, digest = checkpoint
    out = tmp_path / "out"
    code = main(["predict", str(images), "-o", str(out), "--model", str(path), "-q", "--threshold", "0.4"])
    assert code == 0
    assert sorted(os.listdir(out)) == ["a_labels.tif", "b_labels.tif"]
    with tifffile.TiffFile(out / "a_labels.tif") as tif:
        labels = tif.asarray()
        meta = json.loads(tif.pages[0].description)
    assert labels.shape == (40, 48) and labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1}
    assert meta["model"] == "tiny" and meta["sha256"] == digest
    assert meta["threshold"] == 0.4 and meta["instances"] is False and meta["source"] == "a.png"
    assert capsys.readouterr().err == ""


def test_probabilities_overlay_instances(images, tmp_path, checkpoint):
    out = tmp_path / "out"
    code = main(["predict", str(images / "a.png"), "-o", str(out), "--model", str(checkpoint[0]), "-q",
                 "--instances", "--probabilities", "--overlay", "--min-size", "3"])
    assert code == 0
    assert sorted(os.listdir(out)) == ["a_labels.tif", "a_overlay.png", "a_prob.tif"]
    assert tifffile.imread(out / "a_labels.tif").dtype == np.int32
    prob = tifffile.imread(out / "a_prob.tif")
    assert prob.dtype == np.float32 and prob.shape == (40, 48) and 0 <= prob.min() and prob.max() <= 1
    overlay = np.asarray(Image.open(out / "a_overlay.png"))
    assert overlay.shape == (40, 48, 3) and overlay.dtype == np.uint8


def test_existing_outputs_are_listed_and_kept(images, tmp_path, checkpoint, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "b_labels.tif").write_bytes(b"precious")
    args = ["predict", str(images), "-o", str(out), "--model", str(checkpoint[0]), "-q"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "b_labels.tif" in err and "--overwrite" in err
    assert os.listdir(out) == ["b_labels.tif"]  # checked before any work: nothing written
    assert (out / "b_labels.tif").read_bytes() == b"precious"
    assert main(args + ["--overwrite"]) == 0
    assert tifffile.imread(out / "b_labels.tif").shape == (36, 44)


def test_corrupt_input_reported_and_others_done(images, tmp_path, checkpoint, capsys):
    (images / "c.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(images / "d.png")  # too small
    out = tmp_path / "out"
    code = main(["predict", str(images), "-o", str(out), "--model", str(checkpoint[0]), "-q"])
    assert code == 1
    assert sorted(os.listdir(out)) == ["a_labels.tif", "b_labels.tif"]
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 3
    assert "c.png" in lines[0] and "cannot read" in lines[0]
    assert "d.png" in lines[1] and "at least 16 x 16" in lines[1]
    assert "2 of 4 input(s) failed: c.png, d.png" in lines[2]


def test_failed_write_leaves_nothing_for_that_input(images, tmp_path, checkpoint, monkeypatch, capsys):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nl_io, "stage_png", disk_full)
    out = tmp_path / "out"
    code = main(["predict", str(images / "a.png"), "-o", str(out), "--model", str(checkpoint[0]), "-q",
                 "--overlay"])
    assert code == 1
    assert os.listdir(out) == []  # the labels file staged before the failure was never named, and removed
    line = error_lines(capsys.readouterr().err)[0]
    assert "no space left" in line and "a_overlay.png" in line


def test_default_model_needs_bundled_nuclei(images, tmp_path, checkpoint, monkeypatch, capsys):
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setattr(registry, "MODELS_DIR", folder)
    out = tmp_path / "out"
    assert main(["predict", str(images), "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--model" in err and "nuclei" in err
    (folder / "nuclei.pt").write_bytes(checkpoint[0].read_bytes())
    assert main(["predict", str(images / "a.png"), "-o", str(out), "-q"]) == 0
    assert os.listdir(out) == ["a_labels.tif"]


@pytest.mark.parametrize("extra,text", [
    (["--threshold", "1.5"], "--threshold"), (["--tile-size", "20"], "--tile-size"),
    (["--min-size", "-2"], "--min-size"), (["--device", "nonsense"], "device"),
    (["--object-size", "big"], "--object-size must be 'auto', 'off' (0) or"),
    (["--object-size", "auto"], "model 'tiny' does not record the object size it was trained at"),
])
def test_bad_options_one_line(images, tmp_path, checkpoint, capsys, extra, text):
    code = main(["predict", str(images), "-o", str(tmp_path / "o"), "--model", str(checkpoint[0]), "-q"] + extra)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and text in err and err.startswith("napari-litenext: error:")


def test_bad_model_and_missing_input_one_line(images, tmp_path, checkpoint, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    for args in (["--model", str(bad)], ["--model", "no-such-model"]):
        assert main(["predict", str(images), "-o", str(tmp_path / "o"), "-q"] + args) == 2
        assert capsys.readouterr().err.count("\n") == 1
    assert main(["predict", str(tmp_path / "nope.png"), "-o", str(tmp_path / "o"), "--model",
                 str(checkpoint[0])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.png (not found)" in err
    assert not (tmp_path / "o").exists()


def test_same_stem_twice_is_refused(images, tmp_path, checkpoint, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.png").write_bytes((images / "a.png").read_bytes())
    code = main(["predict", str(images / "a.png"), str(other / "a.png"), "-o", str(tmp_path / "o"),
                 "--model", str(checkpoint[0])])
    assert code == 2 and "a_labels.tif" in capsys.readouterr().err


def test_tiff_stack_with_axes(tmp_path, rng, checkpoint, capsys):
    stack = rng.integers(0, 4000, (3, 20, 24, 2), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", stack)
    out = tmp_path / "out"
    code = main(["predict", str(tmp_path / "s.tif"), "-o", str(out), "--model", str(checkpoint[0]), "-q",
                 "--axes", "ZYXC", "--channel", "1", "--overlay", "--instances"])
    assert code == 0
    labels = tifffile.imread(out / "s_labels.tif")
    assert labels.shape == (3, 20, 24) and labels.dtype == np.int32
    assert "no overlay for stack" in capsys.readouterr().err
    assert not (out / "s_overlay.png").exists()


def test_object_size_and_adaptive_options_reach_segment():
    from napari_litenext.cli import build_parser
    from napari_litenext.cli.predict import segment_options

    def options(*extra):
        return segment_options(build_parser().parse_args(["predict", "x.png", "-o", "out", *extra]))

    assert options()["object_size"] is None and options()["adaptive"] is None  # the model's
    assert options("--object-size", "auto", "--adaptive")["object_size"] == "auto"
    assert options("--object-size", "12.5")["object_size"] == "12.5"  # checked and converted by the config
    assert options("--no-adaptive")["adaptive"] is False and options("--adaptive")["adaptive"] is True


def test_object_size_rescales_and_keeps_the_image_shape(images, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "sized.pt"
    save_checkpoint(path, LiteNeXt(), InferenceConfig(mode="tile", tile_size=32, trained_object_size=16.0),
                    ModelCard(name="sized"))
    out = tmp_path / "out"
    code = main(["predict", str(images / "a.png"), "-o", str(out), "--model", str(path), "-q",
                 "--object-size", "32", "--adaptive"])
    assert code == 0
    with tifffile.TiffFile(out / "a_labels.tif") as tif:
        labels = tif.asarray()
        meta = json.loads(tif.pages[0].description)
    assert labels.shape == (40, 48)
    assert meta["object_size"] == 32.0 and meta["scale"] == 0.5 and meta["adaptive"] is True


def test_progress_bar_on_stderr(images, tmp_path, checkpoint, capsys):
    assert main(["predict", str(images), "-o", str(tmp_path / "o"), "--model", str(checkpoint[0])]) == 0
    err = capsys.readouterr().err
    assert "images" in err and "segmented 2 of 2" in err


def test_models_command(tmp_path, monkeypatch, checkpoint, capsys):
    monkeypatch.setattr(registry, "MODELS_DIR", tmp_path)
    assert main(["models"]) == 0
    assert "no bundled models" in capsys.readouterr().out
    (tmp_path / "nuclei.pt").write_bytes(checkpoint[0].read_bytes())
    (tmp_path / "nuclei.md").write_text("# nuclei\n\nNuclei in microscopy. More text.\n")
    assert main(["models"]) == 0
    assert capsys.readouterr().out.split() == ["nuclei", "Nuclei", "in", "microscopy."]
    assert main(["models", "nuclei"]) == 0
    assert capsys.readouterr().out.startswith("# nuclei")
    assert main(["models", "lesions"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bundled models: nuclei" in err


def test_low_memory_gives_the_same_labels_and_removes_its_work_folder(tmp_path, rng, checkpoint):
    stack = rng.integers(0, 4000, (3, 40, 52), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack", metadata={"axes": "ZYX"})
    runs = {}
    for flag in ("", "--low-memory"):
        out = tmp_path / f"out{flag}"
        args = ["predict", str(tmp_path / "s.tif"), "-o", str(out), "--model", str(checkpoint[0]), "-q",
                "--instances", "--probabilities"] + ([flag] if flag else [])
        assert main(args) == 0
        assert sorted(p.name for p in out.iterdir()) == ["s_labels.tif", "s_prob.tif"]  # no work folder left
        runs[flag] = [tifffile.imread(out / f"s_{kind}.tif") for kind in ("labels", "prob")]
    for normal, low in zip(runs[""], runs["--low-memory"]):
        np.testing.assert_array_equal(normal, low)


def test_inputs_over_the_size_limit_are_memory_mapped(tmp_path, rng, checkpoint, monkeypatch):
    import napari_litenext.cli.predict as cli_predict

    tifffile.imwrite(tmp_path / "s.tif", rng.integers(0, 255, (2, 32, 32), dtype=np.uint8), photometric="minisblack")
    seen = []
    real = nl_io.read_image_with_axes
    monkeypatch.setattr(nl_io, "read_image_with_axes", lambda p, memory_map=False: seen.append(memory_map)
                        or real(p, memory_map=memory_map))
    for limit in (1 << 30, 100):
        monkeypatch.setattr(cli_predict, "LOW_MEMORY_FILE_BYTES", limit)
        assert main(["predict", str(tmp_path / "s.tif"), "-o", str(tmp_path / f"out{limit}"), "--model",
                     str(checkpoint[0]), "-q"]) == 0
    assert seen == [False, True]


def test_low_memory_without_disk_space_fails_on_one_line_and_leaves_nothing(tmp_path, rng, checkpoint, disk_full,
                                                                            capsys):
    tifffile.imwrite(tmp_path / "s.tif", rng.integers(0, 255, (2, 32, 32), dtype=np.uint8), photometric="minisblack")
    out = tmp_path / "out"
    code = main(["predict", str(tmp_path / "s.tif"), "-o", str(out), "--model", str(checkpoint[0]), "-q",
                 "--low-memory"])
    assert code == 1
    lines = error_lines(capsys.readouterr().err)
    assert any("not enough free disk" in line for line in lines)
    assert list(out.iterdir()) == []
