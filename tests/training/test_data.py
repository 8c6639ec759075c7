import numpy as np
import pytest

from napari_litenext.config import InferenceConfig
from napari_litenext.training.data import (BatchSampler, DataError, as_foreground, prepare, samples_from_arrays,
                                  samples_from_folders, split_samples)


def _disc(h=64, w=64, r=10):
    yy, xx = np.mgrid[:h, :w]
    return ((yy - h // 2) ** 2 + (xx - w // 2) ** 2 <= r * r)


@pytest.mark.parametrize("mask", [np.array([[0, 1]]), np.array([[0, 255]], np.uint8),
                                  np.array([[0, 7]], np.uint16), np.array([[False, True]]),
                                  np.array([[0.0, 3.0]])])
def test_as_foreground_accepts_binary_and_labels(mask):
    assert as_foreground(mask).tolist() == [[False, True]]


def test_as_foreground_reduces_identical_rgb_channels():
    mask = np.zeros((2, 2, 3), np.uint8)
    mask[0, 1] = 255
    assert as_foreground(mask).tolist() == [[False, True], [False, False]]


@pytest.mark.parametrize("mask,needle", [
    (np.array([[0, -1]]), "negative"),
    (np.array([[0, 0.5]]), "fractional"),
    (np.array([[0, np.nan]]), "NaN"),
    (np.zeros((2, 2, 3), np.uint8) + np.array([0, 0, 1], np.uint8), "differing colour"),
    (np.zeros((2, 2, 2, 2)), "2D"),
])
def test_as_foreground_rejects_bad_masks(mask, needle):
    with pytest.raises(DataError, match=needle):
        as_foreground(mask, "m")


def test_samples_from_arrays_lists_every_size_mismatch():
    images = [np.zeros((20, 20)), np.zeros((20, 20)), np.zeros((30, 30))]
    masks = [np.zeros((20, 20)), np.zeros((21, 20)), np.zeros((30, 31))]
    with pytest.raises(DataError) as info:
        samples_from_arrays(images, masks, names=["a", "b", "c"])
    message = str(info.value)
    assert "b: image is 20x20 but its mask is 21x20" in message and "c: image is 30x30 but its mask is 30x31" in message
    assert "a:" not in message and message.startswith("2 unusable pair(s)")


def test_samples_from_arrays_count_mismatch():
    with pytest.raises(DataError, match="2 images but 1 masks"):
        samples_from_arrays([np.zeros((4, 4))] * 2, [np.zeros((4, 4))])


def test_samples_from_folders_pairs_by_stem_and_lists_orphans(tmp_path):
    from napari_litenext.io.images import write_png, write_tiff

    (tmp_path / "im").mkdir()
    (tmp_path / "m").mkdir()
    for name in ("a", "b"):
        write_png(tmp_path / "im" / f"{name}.png", np.full((20, 24), 100, np.uint8))
    write_tiff(tmp_path / "m" / "a_mask.tif", _disc(20, 24, 5).astype(np.uint16))
    write_png(tmp_path / "m" / "b.png", (_disc(20, 24, 4) * 255).astype(np.uint8))
    samples = samples_from_folders(tmp_path / "im", tmp_path / "m")
    assert [s.name for s in samples] == ["a", "b"]
    assert samples[0].mask.sum() == _disc(20, 24, 5).sum()

    write_png(tmp_path / "im" / "c.png", np.zeros((20, 24), np.uint8))
    write_png(tmp_path / "m" / "d.png", np.zeros((20, 24), np.uint8))
    with pytest.raises(DataError, match=r"2 problem\(s\) pairing.*c.png: no mask.*d.png: no image"):
        samples_from_folders(tmp_path / "im", tmp_path / "m")


def test_split_is_seeded_and_disjoint():
    samples = samples_from_arrays([np.zeros((16, 16))] * 10, [np.zeros((16, 16))] * 10,
                                  names=[str(i) for i in range(10)])
    tr1, va1 = split_samples(samples, 0.2, seed=3)
    tr2, va2 = split_samples(samples, 0.2, seed=3)
    assert [s.name for s in va1] == [s.name for s in va2] and len(va1) == 2
    assert not {s.name for s in tr1} & {s.name for s in va1}
    assert len(tr1) + len(va1) == 10


def test_single_pair_cannot_be_split():
    samples = samples_from_arrays([np.zeros((16, 16))], [np.zeros((16, 16))])
    with pytest.raises(DataError, match="only one image/mask pair"):
        split_samples(samples, 0.1)
    assert split_samples(samples, 0.0) == (samples, [])


def test_prepare_errors_for_empty_full_masks_and_small_images():
    inf = InferenceConfig()
    empty = samples_from_arrays([np.zeros((32, 32))] * 2, [np.zeros((32, 32))] * 2)
    with pytest.raises(DataError, match="every mask is empty"):
        prepare(empty, inf, "tile", 32)
    full = samples_from_arrays([np.zeros((32, 32))] * 2, [np.ones((32, 32))] * 2)
    with pytest.raises(DataError, match="entirely foreground"):
        prepare(full, inf, "tile", 32)
    small = samples_from_arrays([np.zeros((40, 40)), np.zeros((20, 50))], [_disc(40, 40, 5), _disc(20, 50, 3)],
                                names=["big", "small"])
    with pytest.raises(DataError, match=r"patch size 32 is larger than 1 image\(s\): small \(20x50\).*16 or less"):
        prepare(small, inf, "tile", 32)
    prepare(small, inf, "resize", 32)  # resize mode has no such limit


def test_prepare_normalises_and_weights_by_area():
    img = np.full((64, 128), 255, np.uint8)
    data = prepare(samples_from_arrays([img], [_disc(64, 128)]), InferenceConfig(), "tile", 32)
    assert data.images[0].shape == (1, 64, 128) and data.images[0].dtype == np.float16
    assert float(data.images[0].max()) == 1.0
    assert data.weights == [8]  # 64*128 / 32**2
    data = prepare(samples_from_arrays([img], [_disc(64, 128)]), InferenceConfig(), "resize", 32)
    assert data.images[0].shape == (1, 32, 32) and data.masks[0].shape == (32, 32)


def test_batch_sampler_crops_matching_image_and_mask():
    # image intensity encodes the mask, so crops that keep them aligned reproduce it exactly
    mask = np.zeros((48, 64), bool)
    mask[10:30, 20:50] = True
    img = mask.astype(np.uint8) * 255
    data = prepare(samples_from_arrays([img, img], [mask, mask]), InferenceConfig(), "tile", 32)
    sampler = BatchSampler(data, "tile", 32, 2, np.random.default_rng(0))
    batches = list(sampler.epoch())
    assert len(batches) == len(sampler) >= 1
    for images, masks in batches:
        assert images.shape[1:] == (3, 32, 32) and masks.shape[1:] == (1, 32, 32)
        np.testing.assert_array_equal(images[:, :1] > 0.5, masks > 0.5)


def test_resize_mix_draws_whole_images():
    mask = np.zeros((64, 64), bool)
    mask[:32] = True
    data = prepare(samples_from_arrays([mask * 255.0], [mask]), InferenceConfig(normalisation="minmax"), "tile", 16,
                   with_resized=True)
    sampler = BatchSampler(data, "tile", 16, 16, np.random.default_rng(0), resize_mix=1.0)
    images, masks = next(sampler.epoch())
    # the whole image resized to 16 px: top half foreground
    assert masks[0, 0, :8].all() and not masks[0, 0, 8:].any()
