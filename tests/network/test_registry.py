import numpy as np
import pytest
import torch

import napari_litenext.network.registry as registry
from napari_litenext.network.checkpoint import CheckpointError, save_checkpoint
from napari_litenext.config import InferenceConfig, ModelCard
from napari_litenext.network.model import LiteNeXt


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setattr(registry, "MODELS_DIR", folder)
    return folder


def make_checkpoint(path, name="nuclei", **inference):
    torch.manual_seed(0)
    model = LiteNeXt()
    digest = save_checkpoint(path, model, InferenceConfig(**inference), ModelCard(name=name, description="d"))
    return model, digest


def test_bundled_models_lists_folder(models_dir):
    assert registry.bundled_models() == {}
    make_checkpoint(models_dir / "nuclei.pt")
    make_checkpoint(models_dir / "lesions.pt", name="lesions")
    (models_dir / "notes.txt").write_text("x")
    assert list(registry.bundled_models()) == ["lesions", "nuclei"]


def test_load_bundled_name_and_path(models_dir, tmp_path):
    original, digest = make_checkpoint(models_dir / "nuclei.pt", mode="tile", tile_size=256)
    model = registry.load_model("nuclei", device="cpu")
    assert isinstance(model, LiteNeXt) and not model.training
    assert model.inference.mode == "tile" and model.inference.tile_size == 256
    assert model.card.name == "nuclei" and model.sha256 == digest
    assert next(model.parameters()).device.type == "cpu"
    x = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        np.testing.assert_allclose(model(x).numpy(), original.eval()(x).numpy(), atol=1e-6)
    other = tmp_path / "mine.pt"
    _, other_digest = make_checkpoint(other)
    assert registry.load_model(other).sha256 == other_digest
    assert registry.load_model(str(other)).sha256 == other_digest


def test_unknown_name_lists_bundled(models_dir):
    make_checkpoint(models_dir / "nuclei.pt")
    with pytest.raises(CheckpointError, match="bundled models: nuclei") as info:
        registry.load_model("cells")
    assert "\n" not in str(info.value)
    (models_dir / "nuclei.pt").unlink()
    with pytest.raises(CheckpointError, match="none installed"):
        registry.load_model("nuclei")


def test_missing_truncated_and_foreign_files(models_dir, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        registry.load_model(tmp_path / "absent.pt")
    good = tmp_path / "good.pt"
    make_checkpoint(good)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        registry.load_model(trunc)
    foreign = tmp_path / "resnet.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, foreign)
    with pytest.raises(CheckpointError, match="not a LiteNeXt"):
        registry.load_model(foreign)


def test_authors_layout_checkpoint(shared_dir):
    path = shared_dir / "fixtures" / "authors_layout_checkpoint.pt"
    model = registry.load_model(path, device="cpu")
    x = torch.from_numpy(np.load(shared_dir / "fixtures" / "authors_layout_input.npy"))
    expected = np.load(shared_dir / "fixtures" / "authors_layout_logits.npy")
    with torch.inference_mode():
        np.testing.assert_allclose(model(x).numpy(), expected, atol=1e-4)
    assert model.inference.mode == "resize" and model.card.trained_by.startswith("authors")


def test_model_summary_from_card(models_dir):
    make_checkpoint(models_dir / "nuclei.pt")
    assert registry.model_summary("nuclei") == "(no model card)"
    (models_dir / "nuclei.md").write_text("# nuclei\n\nSegments nuclei in fluorescence\nand H&E images. "
                                         "Trained on DSB 2018.\n\n## Data\n")
    assert registry.model_summary("nuclei") == "Segments nuclei in fluorescence and H&E images."
    assert registry.model_card_text("nuclei").startswith("# nuclei")


def test_checkpoints_of_an_older_release_still_verify(tmp_path):
    # Older releases wrote InferenceConfig without 'instances', 'adaptive', 'object_size' and
    # 'trained_object_size': the SHA-256 covers the settings as written, and the missing fields
    # take their defaults.
    import torch

    from napari_litenext.config import InferenceConfig
    from napari_litenext.network.checkpoint import load_checkpoint, save_checkpoint, state_dict_sha256
    from napari_litenext.network.model import LiteNeXt

    path = tmp_path / "old.pt"
    save_checkpoint(path, LiteNeXt(), InferenceConfig(min_size=7))
    raw = torch.load(path, weights_only=True)
    for name in ("instances", "adaptive", "object_size", "trained_object_size"):
        del raw["inference"][name]
    raw["sha256"] = state_dict_sha256(raw["state_dict"], raw["config"], raw["inference"])
    torch.save(raw, path)
    ckpt = load_checkpoint(path)
    assert ckpt.inference.min_size == 7 and ckpt.inference.instances is False
    assert (ckpt.inference.adaptive, ckpt.inference.object_size, ckpt.inference.trained_object_size) == \
        (False, 0.0, 0.0)
    raw["inference"]["min_size"] = 8  # a changed setting still fails the check
    torch.save(raw, path)
    with pytest.raises(Exception, match="SHA-256"):
        load_checkpoint(path)
