"""Checkpoints: the authors' layout imports to the same logits, ours round-trips and is verified."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_litenext.network.checkpoint import (CheckpointError, atomic_write, convert_authors_state_dict,
                                        load_checkpoint, save_checkpoint)
from napari_litenext.config import InferenceConfig, ModelCard, ModelConfig
from napari_litenext.network.model import LiteNeXt
from reference_litenext import random_model

# Our module prefix -> the authors' (specification, section 7), written independently of
# checkpoint.py's parser so that the two check each other. Longest prefix wins.
_OURS_TO_AUTHORS = {
    "stem.conv.": "patches_parition.0.",
    "stem.norm.": "patches_parition.1.layernorm.",
    "bottleneck.conv1.conv.": "bottle_neck.0.in_layers.0.",
    "bottleneck.conv1.norm.": "bottle_neck.0.in_layers.1.layernorm.",
    "bottleneck.conv2.conv.": "bottle_neck.0.out_layers.0.",
    "bottleneck.conv2.norm.": "bottle_neck.0.out_layers.1.layernorm.",
    "fusion.score.": "attention.mlp.",
    "up.conv.": "rb4.conv1x1.",
    "up.norm.": "rb4.bn.layernorm.",
    "head.": "head.",
}
for _i in range(4):
    _block = f"stage{_i + 1}.{0 if _i == 0 else 1}."
    for _ours, _theirs in [("local.conv", "conv_local"), ("local.norm", "ln1.layernorm"),
                           ("depthwise.conv", "conv"), ("depthwise.norm", "ln3.layernorm"),
                           ("pointwise.conv", "conv1x1"), ("pointwise.norm", "ln2.layernorm")]:
        _OURS_TO_AUTHORS[f"stages.{_i}.blocks.0.{_ours}."] = _block + _theirs + "."
    if _i:
        _OURS_TO_AUTHORS[f"stages.{_i}.down.proj.conv."] = f"stage{_i + 1}.0.patches_merge.1."
        _OURS_TO_AUTHORS[f"stages.{_i}.down.proj.norm."] = f"stage{_i + 1}.0.patches_merge.2.layernorm."
for _j, _name in enumerate(["normfm1", "normfm2", "normfm3", "normfm4", "normfmDecode"]):
    for _ours, _theirs in [("value.conv", "norm.conv1x1"), ("value.norm", "norm.bn.layernorm"),
                           ("key_in", "mlp.0"), ("key_out", "mlp.2")]:
        _OURS_TO_AUTHORS[f"fusion.units.{_j}.{_ours}."] = f"attention.{_name}.{_theirs}."


def to_authors_layout(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        ours = max((p for p in _OURS_TO_AUTHORS if key.startswith(p)), key=len)
        out[prefix + _OURS_TO_AUTHORS[ours] + key[len(ours):]] = value.detach().clone().contiguous()
    return out


def logits(model: LiteNeXt, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x)


@pytest.fixture(scope="module")
def fixture_files(shared_dir: Path) -> dict[str, Path]:
    folder = shared_dir / "fixtures"
    files = {name: folder / f"authors_layout_{name}" for name in
             ("checkpoint.pt", "input.npy", "logits.npy", "keys.txt")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        pytest.skip(f"authors' fixture missing: {missing}")
    return files


# --- the authors' layout -------------------------------------------------------------------------

def test_authors_fixture_reproduces_their_logits(fixture_files):
    model = load_checkpoint(fixture_files["checkpoint.pt"]).build_model()
    x = torch.from_numpy(np.load(fixture_files["input.npy"]))
    expected = np.load(fixture_files["logits.npy"])
    assert x.shape == (2, 3, 96, 128) and expected.shape == (2, 1, 96, 128)
    out = logits(model, x).numpy()
    assert np.abs(out - expected).max() < 1e-5
    assert expected.std() > 0.01  # the comparison is informative


def test_fixture_key_list_matches_our_inverse_mapping(fixture_files):
    listed = {}
    for line in fixture_files["keys.txt"].read_text().splitlines():
        name, shape = line.split("\t")
        listed[name] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    ours = to_authors_layout(LiteNeXt().state_dict())
    assert len(listed) == 120
    assert {k: tuple(v.shape) for k, v in ours.items()} == listed


@pytest.mark.parametrize("prefix", ["", "module."])
@pytest.mark.parametrize("wrap", ["model_state_dict", "state_dict", None])
def test_fixture_with_and_without_module_prefix(fixture_files, tmp_path, prefix, wrap):
    raw = torch.load(fixture_files["checkpoint.pt"], map_location="cpu", weights_only=True)
    state = {prefix + k.removeprefix("module."): v for k, v in raw["model_state_dict"].items()}
    path = tmp_path / "rewritten.pt"
    torch.save({**raw, "model_state_dict": state} if wrap == "model_state_dict"
               else {wrap: state} if wrap else state, path)
    model = load_checkpoint(path).build_model()
    x = torch.from_numpy(np.load(fixture_files["input.npy"]))
    assert np.abs(logits(model, x).numpy() - np.load(fixture_files["logits.npy"])).max() < 1e-5


@pytest.mark.parametrize("prefix", ["", "module."])
def test_fabricated_authors_checkpoint_imports(tmp_path, prefix):
    # Needs no ../shared: a training-script style dict with optimiser state and our inverse mapping.
    source = random_model(seed=1)
    state = to_authors_layout(source.state_dict(), prefix)
    assert len(state) == 120
    path = tmp_path / "best_model.pt"
    torch.save({"model_state_dict": state, "epoch": 7, "test_measure_mean": 0.8,
                "optimizer_state_dict": {"state": {}, "param_groups": []}}, path)
    ckpt = load_checkpoint(path)
    assert ckpt.config == ModelConfig()
    assert ckpt.inference.mode == "resize" and ckpt.inference.input_size == 256
    assert ckpt.card.name == "best_model" and "authors" in ckpt.card.trained_by
    assert len(ckpt.sha256) == 64
    model = ckpt.build_model()
    assert not model.training and model.sha256 == ckpt.sha256
    x = torch.rand(2, 3, 48, 64)
    assert (logits(model, x) - logits(source, x)).abs().max().item() == 0.0
    assert convert_authors_state_dict(state).keys() == source.state_dict().keys()


def authors_state(seed: int = 2) -> dict[str, torch.Tensor]:
    return to_authors_layout(random_model(seed=seed).state_dict())


def test_missing_key_is_named(tmp_path):
    state = authors_state()
    del state["stage3.1.conv.weight"], state["rb4.bn.layernorm.bias"]
    torch.save({"model_state_dict": state}, tmp_path / "m.pt")
    expected = r"missing .*stages\.2\.blocks\.0\.depthwise\.conv\.weight"
    with pytest.raises(CheckpointError, match=expected) as err:
        load_checkpoint(tmp_path / "m.pt")
    assert "up.norm.bias" in str(err.value) and "\n" not in str(err.value)


def test_unexpected_key_is_named(tmp_path):
    state = authors_state()
    state["stage5.0.conv.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "u.pt")
    with pytest.raises(CheckpointError, match=r"unexpected stage5\.0\.conv\.weight"):
        load_checkpoint(tmp_path / "u.pt")


def test_wrong_shape_is_named(tmp_path):
    # A depthwise kernel of 3 is the commonest mismatch with the paper's 7.
    state = authors_state()
    state["stage1.0.conv.weight"] = torch.zeros(16, 1, 3, 3)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match=r"wrong shape stages\.0\.blocks\.0\.depthwise\.conv\.weight "
                                              r"\(16, 1, 3, 3\) != \(16, 1, 7, 7\)"):
        load_checkpoint(tmp_path / "w.pt")


def test_not_a_state_dict(tmp_path):
    torch.save({"epoch": 3, "note": "no weights"}, tmp_path / "n.pt")
    with pytest.raises(CheckpointError, match="state dict of tensors"):
        load_checkpoint(tmp_path / "n.pt")
    torch.save(torch.zeros(3), tmp_path / "t.pt")
    with pytest.raises(CheckpointError, match="holds a Tensor"):
        load_checkpoint(tmp_path / "t.pt")


class _Payload:
    """Unpickling this object would create a file: proof that code ran."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return open, (str(self.sentinel), "w")


def test_arbitrary_objects_are_refused_not_executed(tmp_path):
    sentinel = tmp_path / "code-ran.txt"
    path = tmp_path / "evil.pt"
    torch.save({"model_state_dict": authors_state(), "hook": _Payload(sentinel)}, path)
    with pytest.raises(CheckpointError, match="other than tensors"):
        load_checkpoint(path)
    assert not sentinel.exists()


# --- our format ----------------------------------------------------------------------------------

def our_checkpoint(tmp_path: Path, config: ModelConfig | None = None) -> tuple[LiteNeXt, Path, str]:
    model = random_model(seed=4, config=config)
    inference = InferenceConfig(normalisation="percentile", mode="tile", tile_size=128, threshold=0.4,
                                min_size=5, invert=True)
    card = ModelCard(name="nuclei", description="test", metrics={"dice": 0.91}, trained_by="tests")
    path = tmp_path / "ours.pt"
    digest = save_checkpoint(path, model, inference, card, extra={"epoch": 3, "history": [0.5, 0.4]})
    return model, path, digest


def test_round_trip(tmp_path):
    model, path, digest = our_checkpoint(tmp_path)
    ckpt = load_checkpoint(path)
    assert ckpt.sha256 == digest and len(digest) == 64
    assert ckpt.config == model.config
    assert ckpt.inference == InferenceConfig(normalisation="percentile", mode="tile", tile_size=128,
                                             threshold=0.4, min_size=5, invert=True)
    assert ckpt.card.name == "nuclei" and ckpt.card.metrics == {"dice": 0.91}
    assert ckpt.extra == {"epoch": 3, "history": [0.5, 0.4]}
    loaded = ckpt.build_model()
    assert not loaded.training
    assert loaded.inference == ckpt.inference and loaded.card == ckpt.card and loaded.sha256 == digest
    x = torch.rand(1, 3, 32, 48)
    assert torch.equal(logits(loaded, x), logits(model, x))
    assert not list(tmp_path.glob("*.part")), "temporary file left behind"


def test_round_trip_other_configuration(tmp_path):
    config = ModelConfig(base_width=8, depths=(2, 1, 1, 1), kernel_size=5, fusion_dim=32)
    model, path, _ = our_checkpoint(tmp_path, config)
    loaded = load_checkpoint(path).build_model()
    assert loaded.config == config
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(logits(loaded, x), logits(model, x))


def test_tampered_weight_fails_sha256(tmp_path):
    _, path, _ = our_checkpoint(tmp_path)
    raw = torch.load(path, weights_only=True)
    raw["state_dict"]["head.weight"].reshape(-1).view(torch.uint8)[0] ^= 1  # one bit of one byte
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(path)


def test_tampered_config_fails_sha256(tmp_path):
    _, path, _ = our_checkpoint(tmp_path)
    raw = torch.load(path, weights_only=True)
    raw["inference"]["threshold"] = 0.9
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(path)


def test_flipped_byte_in_file_is_caught(tmp_path):
    _, path, _ = our_checkpoint(tmp_path)
    with zipfile.ZipFile(path) as archive:  # find the stored bytes of the largest tensor
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_len, extra_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.file_size // 2] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):  # the zip CRC or our SHA-256, whichever notices first
        load_checkpoint(path)


def test_missing_key_in_our_format_is_named(tmp_path):
    model = random_model()
    path = tmp_path / "partial.pt"
    save_checkpoint(path, model, InferenceConfig())
    raw = torch.load(path, weights_only=True)
    del raw["state_dict"]["head.bias"]
    from napari_litenext.network.checkpoint import state_dict_sha256
    raw["sha256"] = state_dict_sha256(raw["state_dict"], model.config, InferenceConfig())
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=r"missing head\.bias"):
        load_checkpoint(path)


def test_newer_format_version_is_refused(tmp_path):
    _, path, _ = our_checkpoint(tmp_path)
    raw = torch.load(path, weights_only=True)
    raw["format_version"] = 99
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(path)


def test_truncated_file(tmp_path):
    _, path, _ = our_checkpoint(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_not_a_torch_file(tmp_path):
    path = tmp_path / "image.pt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_missing_path(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path)  # a folder is not a model file


# --- atomic writes -------------------------------------------------------------------------------

def test_atomic_write_keeps_old_file_on_error(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"old contents")

    def failing(tmp: str) -> None:
        Path(tmp).write_bytes(b"half of the new")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, failing)
    assert path.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_atomic_write_replaces_and_creates_folders(tmp_path):
    path = tmp_path / "a" / "b" / "model.pt"
    assert atomic_write(path, lambda tmp: Path(tmp).write_bytes(b"new")) == path
    assert path.read_bytes() == b"new"
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(b"newer"))
    assert path.read_bytes() == b"newer"
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]
