import numpy as np
import pytest

from napari_litenext.inference.postprocess import overlay, postprocess


def disc(shape, centre, radius):
    yy, xx = np.ogrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def as_prob(mask):
    return np.where(mask, 0.9, 0.1).astype(np.float32)


def test_semantic_threshold_dtype_values():
    prob = np.array([[0.2, 0.6], [0.5, 0.51]] * 8, np.float32).repeat(8, axis=1)
    out = postprocess(prob, threshold=0.5)
    assert out.dtype == np.uint8 and set(np.unique(out)) == {0, 1}
    np.testing.assert_array_equal(out, (prob > 0.5).astype(np.uint8))


def test_touching_discs_split_into_two():
    mask = disc((60, 80), (30, 28), 12) | disc((60, 80), (30, 48), 12)
    labels = postprocess(as_prob(mask), instances=True)
    assert labels.dtype == np.int32 and labels.max() == 2
    assert labels[30, 22] != labels[30, 54] and labels[30, 22] > 0 and labels[30, 54] > 0
    np.testing.assert_array_equal(labels > 0, mask)  # splitting loses no pixel


def test_separate_and_round_objects_stay_whole():
    shape = (80, 120)
    mask = disc(shape, (20, 20), 10) | disc(shape, (50, 80), 15) | disc(shape, (65, 20), 6)
    yy, xx = np.ogrid[:shape[0], :shape[1]]
    mask |= ((yy - 20) / 6.0) ** 2 + ((xx - 85) / 25.0) ** 2 <= 1  # an elongated ellipse
    labels = postprocess(as_prob(mask), instances=True)
    assert labels.max() == 4
    assert len(np.unique(labels[disc(shape, (50, 80), 15)])) == 1


def test_min_size_removes_small_objects():
    mask = disc((50, 50), (20, 20), 8)
    mask[45:47, 45:47] = True  # 4 px speck
    for instances in (False, True):
        out = postprocess(as_prob(mask), instances=instances, min_size=10)
        assert out[45, 45] == 0 and out[20, 20] > 0
        kept = postprocess(as_prob(mask), instances=instances, min_size=0)
        assert kept[45, 45] > 0


def test_holes_filled_or_kept():
    mask = disc((40, 40), (20, 20), 12) & ~disc((40, 40), (20, 20), 4)
    assert postprocess(as_prob(mask))[20, 20] == 1
    assert postprocess(as_prob(mask), fill_holes=False)[20, 20] == 0
    labels = postprocess(as_prob(mask), instances=True)
    assert labels[20, 20] == labels[20, 10] == 1


def test_stack_slice_by_slice_with_unique_ids():
    a = disc((40, 40), (12, 12), 6) | disc((40, 40), (28, 28), 6)
    stack = np.stack([as_prob(a), as_prob(np.zeros_like(a)), as_prob(a)])
    labels = postprocess(stack, instances=True)
    assert labels.shape == stack.shape
    assert set(np.unique(labels[0])) == {0, 1, 2} and labels[1].max() == 0
    assert set(np.unique(labels[2])) == {0, 3, 4}
    sem = postprocess(stack)
    np.testing.assert_array_equal(sem[2], a.astype(np.uint8))


@pytest.mark.parametrize("bad", [dict(threshold=0.0), dict(threshold=1.5)])
def test_bad_threshold(bad):
    with pytest.raises(ValueError, match="threshold"):
        postprocess(np.zeros((20, 20), np.float32), **bad)


def test_one_dimensional_rejected():
    with pytest.raises(ValueError, match="2D"):
        postprocess(np.zeros(20, np.float32))


def test_overlay_colours_and_contours():
    image = np.full((30, 30), 100, np.uint8)
    labels = np.zeros((30, 30), np.int32)
    labels[5:15, 5:15] = 1
    labels[18:28, 18:28] = 2
    out = overlay(image, labels, alpha=0.5, rows_per_chunk=7)
    assert out.shape == (30, 30, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])  # background untouched
    assert not np.array_equal(out[10, 10], out[22, 22])  # ids differ in colour
    assert not np.array_equal(out[5, 10], out[10, 10])  # contour differs from the fill
    sem = overlay(np.zeros((20, 20, 3), np.uint8), (labels[:20, :20] > 0).astype(np.uint8))
    assert tuple(sem[5, 5]) == (255, 220, 0)


def test_huge_objects_are_numbered_not_split(monkeypatch):
    import napari_litenext.inference.postprocess as pp

    mask = disc((60, 80), (30, 28), 12) | disc((60, 80), (30, 48), 12)
    monkeypatch.setattr(pp, "MAX_SPLIT_PIXELS", 100)
    labels = postprocess(as_prob(mask), instances=True)
    assert labels.max() == 1 and np.array_equal(labels > 0, mask)


def test_instance_ids_consecutive_after_removals():
    shape = (60, 120)
    mask = disc(shape, (30, 20), 12) | disc(shape, (30, 40), 12) | disc(shape, (30, 90), 10)
    mask[2:4, 2:4] = True  # removed by min_size, before a kept object in raster order
    labels = postprocess(as_prob(mask), instances=True, min_size=10)
    assert sorted(np.unique(labels)) == [0, 1, 2, 3] and labels[2, 2] == 0
