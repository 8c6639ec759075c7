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
