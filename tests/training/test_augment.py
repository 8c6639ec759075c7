import torch

from napari_litenext.training.augment import AugmentConfig, augment_batch, gaussian_taps


def test_gaussian_taps_sum_to_one_and_pad_to_seven():
    for k in (3, 5, 7):
        taps = gaussian_taps(k)
        assert taps.shape == (7,) and abs(float(taps.sum()) - 1) < 1e-6
        assert (taps[: (7 - k) // 2] == 0).all()
        assert torch.allclose(taps, taps.flip(0))


def test_disabled_augmentation_is_identity():
    x, y = torch.rand(2, 3, 16, 16), (torch.rand(2, 1, 16, 16) > 0.5).float()
    out = augment_batch(x, y, AugmentConfig(enabled=False), torch.Generator().manual_seed(0))
    assert out[0] is x and out[1] is y


def test_flip_only_moves_image_and_mask_together():
    x = torch.zeros(1, 3, 8, 8)
    x[..., :, :2] = 1.0
    y = x[:, :1].clone()
    cfg = AugmentConfig(rotate_degrees=0.0, hflip=1.0, vflip=0.0, blur=0.0)
    xa, ya = augment_batch(x, y, cfg, torch.Generator().manual_seed(0))
    torch.testing.assert_close(xa[:, 0], x[:, 0].flip(-1))
    torch.testing.assert_close(ya, y.flip(-1))


def test_rotation_keeps_masks_binary_and_aligned():
    y = torch.zeros(4, 1, 32, 32)
    y[:, :, 8:24, 12:20] = 1
    x = y.repeat(1, 3, 1, 1)
    cfg = AugmentConfig(rotate_degrees=20.0, hflip=0.5, vflip=0.5, blur=0.0)
    xa, ya = augment_batch(x, y, cfg, torch.Generator().manual_seed(1))
    assert set(ya.unique().tolist()) <= {0.0, 1.0}
    assert ((xa[:, :1] >= 0.5).float() == ya).float().mean() > 0.99


def test_blur_preserves_mean_and_smooths():
    x = torch.zeros(1, 1, 15, 15)
    x[..., 7, 7] = 1.0
    cfg = AugmentConfig(rotate_degrees=0.0, hflip=0.0, vflip=0.0, blur=1.0, blur_kernels=(5,))
    xb, _ = augment_batch(x, torch.zeros(1, 1, 15, 15), cfg, torch.Generator().manual_seed(0))
    assert abs(float(xb.sum()) - 1.0) < 1e-5
    assert float(xb.max()) < 0.5 and float(xb[..., 7, 5]) > 0


# The widening for unseen images: each change alone, on inputs with a known answer.
_NONE = dict(rotate_degrees=0.0, hflip=0.0, vflip=0.0, blur=0.0)


def test_scale_two_doubles_objects_in_image_and_mask():
    y = torch.zeros(1, 1, 64, 64)
    y[:, :, 28:36, 28:36] = 1  # 8 x 8 square at the centre
    x = y.repeat(1, 3, 1, 1)
    cfg = AugmentConfig(**_NONE, scale=1.0, scale_range=(2.0, 2.0))
    xa, ya = augment_batch(x, y, cfg, torch.Generator().manual_seed(0))
    assert abs(float(ya.sum()) - 256) <= 16  # 16 x 16
    assert ((xa[:, :1] >= 0.5).float() == ya).all()


def test_greyscale_makes_channels_equal_to_luminance():
    x = torch.rand(2, 3, 8, 8)
    y = torch.zeros(2, 1, 8, 8)
    xa, _ = augment_batch(x, y, AugmentConfig(**_NONE, greyscale=1.0), torch.Generator().manual_seed(0))
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for c in range(3):
        torch.testing.assert_close(xa[:, c], luma)


def test_invert_maps_x_to_one_minus_x():
    x = torch.rand(2, 3, 8, 8)
    xa, _ = augment_batch(x, torch.zeros(2, 1, 8, 8), AugmentConfig(**_NONE, invert=1.0),
                          torch.Generator().manual_seed(0))
    torch.testing.assert_close(xa, 1 - x)


def test_zero_sigma_stain_and_neutral_hue_are_identity():
    x = 0.05 + 0.9 * torch.rand(2, 3, 8, 8)
    cfg = AugmentConfig(**_NONE, stain=1.0, stain_sigma=0.0, hue_saturation=1.0, hue_degrees=0.0,
                        saturation_range=(1.0, 1.0))
    xa, _ = augment_batch(x, torch.zeros(2, 1, 8, 8), cfg, torch.Generator().manual_seed(0))
    torch.testing.assert_close(xa, x, atol=1e-4, rtol=0)


def test_zero_saturation_gives_grey_and_hue_keeps_grey_grey():
    x = torch.rand(2, 3, 8, 8)
    cfg = AugmentConfig(**_NONE, hue_saturation=1.0, saturation_range=(0.0, 0.0))
    xa, _ = augment_batch(x, torch.zeros(2, 1, 8, 8), cfg, torch.Generator().manual_seed(0))
    torch.testing.assert_close(xa, x.mean(1, keepdim=True).expand_as(x), atol=1e-5, rtol=0)
    grey = torch.rand(2, 1, 8, 8).repeat(1, 3, 1, 1)
    cfg = AugmentConfig(**_NONE, hue_saturation=1.0, hue_degrees=90.0)
    ga, _ = augment_batch(grey, torch.zeros(2, 1, 8, 8), cfg, torch.Generator().manual_seed(0))
    torch.testing.assert_close(ga, grey, atol=1e-5, rtol=0)


def test_stain_jitter_changes_a_stained_patch_and_stays_in_range():
    x = torch.tensor([0.45, 0.25, 0.6]).view(1, 3, 1, 1).repeat(4, 1, 8, 8)  # purple, H&E-like
    cfg = AugmentConfig(**_NONE, stain=1.0, stain_sigma=0.2)
    xa, _ = augment_batch(x, torch.zeros(4, 1, 8, 8), cfg, torch.Generator().manual_seed(0))
    assert float((xa - x).abs().max()) > 0.02
    assert float(xa.min()) >= 0 and float(xa.max()) <= 1


def test_noise_has_the_drawn_spread_and_leaves_masks():
    x = torch.full((1, 3, 64, 64), 0.5)
    y = (torch.rand(1, 1, 64, 64) > 0.5).float()
    cfg = AugmentConfig(**_NONE, noise=1.0, noise_std=0.1)
    xa, ya = augment_batch(x, y, cfg, torch.Generator().manual_seed(0))
    assert 0 < float((xa - x).std()) <= 0.1 + 0.01
    assert torch.equal(ya, y)


def test_widened_augmentation_of_shares_equals_the_whole_batch():
    from napari_litenext.training.config import ROBUST_AUGMENT

    x, y = torch.rand(4, 3, 16, 16), (torch.rand(4, 1, 16, 16) > 0.5).float()
    cfg = AugmentConfig(**ROBUST_AUGMENT)
    whole = augment_batch(x, y, cfg, torch.Generator().manual_seed(3))
    first = augment_batch(x[:2], y[:2], cfg, torch.Generator().manual_seed(3), share=(0, 4))
    second = augment_batch(x[2:], y[2:], cfg, torch.Generator().manual_seed(3), share=(2, 4))
    torch.testing.assert_close(torch.cat([first[0], second[0]]), whole[0])
    torch.testing.assert_close(torch.cat([first[1], second[1]]), whole[1])


def test_bad_augmentation_settings_name_the_field():
    import pytest

    from napari_litenext.errors import SettingsError

    with pytest.raises(SettingsError, match="stain"):
        AugmentConfig(stain=1.5)
    with pytest.raises(SettingsError, match="scale_range"):
        AugmentConfig(scale_range=(2.0, 0.5))
