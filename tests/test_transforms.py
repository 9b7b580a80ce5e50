"""The preset transforms against explicit slicing, flipping and the paper's lighting formula."""

import pytest
import torch

from alexnet.data.transforms import (Lighting, Normalization, Preset, crop_batch, random_boxes, resized_crops,
                                     ten_crop_offsets)


def quadrant_image(size=8):
    """A 3-channel uint8 image whose four quadrants and every pixel differ."""
    img = torch.arange(3 * size * size, dtype=torch.int64).reshape(3, size, size) % 251
    return img.to(torch.uint8)


def test_crop_batch_equals_slicing_and_flipping():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 3, 10, 12), generator=g, dtype=torch.uint8)
    top = torch.tensor([0, 1, 2, 3, 0, 5])
    left = torch.tensor([0, 6, 3, 1, 7, 2])
    flip = torch.tensor([False, True, False, True, True, False])
    out = crop_batch(x, top, left, 5, flip)
    for i in range(6):
        ref = x[i, :, top[i]:top[i] + 5, left[i]:left[i] + 5]
        torch.testing.assert_close(out[i], ref.flip(-1) if flip[i] else ref)


def test_ten_crop_views_are_the_papers_ten_patches():
    img = quadrant_image(8)
    norm = Normalization.per_channel([0, 0, 0])
    preset = Preset(train=False, crop=5, base_size=8, norm=norm, tta="10crop", flip=True)
    views = preset(img[None])[0]  # (10, 3, 5, 5): trained with mirrors, tested with them
    c = 5
    expected = [img[:, :c, :c], img[:, :c, -c:], img[:, -c:, :c], img[:, -c:, -c:], img[:, 1:1 + c, 1:1 + c]]
    expected += [e.flip(-1) for e in expected]
    assert views.shape == (10, 3, 5, 5)
    for v, e in zip(views, expected):
        torch.testing.assert_close(v, e.float())
    assert len({tuple(v.flatten().tolist()) for v in views}) == 10  # ten different patches
    assert ten_crop_offsets(256, 227)[:5] == [(0, 0, False), (0, 29, False), (29, 0, False), (29, 29, False),
                                              (14, 14, False)]


def test_center_crop_and_mean_image_subtraction():
    g = torch.Generator().manual_seed(1)
    imgs = torch.randint(0, 256, (3, 3, 9, 9), generator=g, dtype=torch.uint8)
    mean = torch.rand(3, 9, 9, generator=g) * 255
    std = torch.tensor([2.0, 4.0, 8.0]).reshape(3, 1, 1)
    out = Preset(train=False, crop=5, base_size=9, norm=Normalization(mean, std))(imgs)
    ref = (imgs.float() - mean)[:, :, 2:7, 2:7] / std
    torch.testing.assert_close(out, ref)


def test_training_crops_subtract_the_mean_image_at_the_same_place():
    g = torch.Generator().manual_seed(2)
    imgs = torch.randint(0, 256, (64, 3, 12, 12), generator=g, dtype=torch.uint8)
    mean = torch.rand(3, 12, 12, generator=g) * 255
    norm = Normalization(mean, torch.ones(3, 1, 1))
    preset = Preset(train=True, crop=8, base_size=12, norm=norm, flip=True)
    out = preset(imgs, torch.Generator().manual_seed(3))
    # (image - mean) first, then crop: each output must be one of the 2 x 5 x 5 crops of that difference
    diff = imgs.float() - mean
    seen_offsets, seen_flips = set(), set()
    for i in range(64):
        found = [(t, l_, f) for t in range(5) for l_ in range(5) for f in (False, True)
                 if torch.allclose(out[i], (diff[i, :, t:t + 8, l_:l_ + 8].flip(-1) if f
                                            else diff[i, :, t:t + 8, l_:l_ + 8]))]
        assert found, f"image {i} is not a crop of (image - mean)"
        seen_offsets.add(found[0][:2])
        seen_flips.add(found[0][2])
    assert seen_flips == {False, True}
    assert len(seen_offsets) > 10  # offsets vary


def test_small_image_shifts_pad_with_zeros():
    img = torch.full((1, 1, 6, 6), 200, dtype=torch.uint8)
    preset = Preset(train=True, crop=6, base_size=6, pad=2, norm=Normalization.per_channel([0.0]))
    outs = preset(img.expand(200, -1, -1, -1).contiguous(), torch.Generator().manual_seed(0))
    zeros = (outs == 0).flatten(1).sum(1)
    assert zeros.min() == 0 and zeros.max() > 0  # some unshifted, some shifted in from the padding
    assert set(outs.unique().tolist()) <= {0.0, 200.0}


# The ImageNet RGB covariance's eigenvalues and eigenvectors (columns; rows R, G, B) for pixels in [0, 1],
# as fb.resnet.torch publishes them in datasets/imagenet.lua ("computed from random subset of ImageNet
# training images"): written out here, not read from the package.
IMAGENET_EIGVAL = [0.2175, 0.0188, 0.0045]
IMAGENET_EIGVEC = [[-0.5675, 0.7192, 0.4009],
                   [-0.5808, -0.0045, -0.8140],
                   [-0.5836, -0.6948, 0.4203]]


def test_lighting_shifts_follow_the_paper_formula():
    light = Lighting.imagenet()
    assert light.eigval.tolist() == pytest.approx(IMAGENET_EIGVAL)
    assert light.eigvec.tolist() == [pytest.approx(row) for row in IMAGENET_EIGVEC]
    alpha = torch.tensor([[0.1, -0.2, 0.05], [0.0, 0.0, 0.0]])
    shifts = light.shifts(alpha)
    eigval, eigvec = IMAGENET_EIGVAL, IMAGENET_EIGVEC
    for b in range(2):  # [p1 p2 p3] [a1 l1, a2 l2, a3 l3]^T (section 4.1), scaled to 0..255 pixels
        ref = [255 * sum(eigvec[c][i] * alpha[b, i].item() * eigval[i] for i in range(3)) for c in range(3)]
        torch.testing.assert_close(shifts[b], torch.tensor(ref), rtol=1e-5, atol=1e-4)


def test_lighting_in_the_preset_draws_alpha_from_n0_std_per_image():
    n = 4000
    imgs = torch.full((n, 3, 4, 4), 128, dtype=torch.uint8)
    norm = Normalization.per_channel([128.0, 128.0, 128.0])
    light = Lighting.imagenet(std=0.1)
    preset = Preset(train=True, crop=4, base_size=4, norm=norm, lighting=light)
    out = preset(imgs, torch.Generator().manual_seed(0))
    # a constant image minus its mean is zero, so the output is the lighting shift alone
    shift = out[:, :, 0, 0]
    assert torch.allclose(out, shift[:, :, None, None].expand_as(out))
    alpha = (shift / 255) @ light.eigvec / light.eigval  # invert: eigvec is orthonormal
    assert alpha.mean(0).abs().max() < 0.01
    torch.testing.assert_close(alpha.std(0), torch.full((3,), 0.1), rtol=0.06, atol=0)


def test_random_resized_crop_of_the_whole_image_is_the_image():
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (4, 3, 16, 16), generator=g, dtype=torch.uint8)
    boxes = random_boxes(4, 16, g, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert boxes.tolist() == [[0, 0, 16, 16]] * 4
    flip = torch.tensor([False, True, False, True])
    out = resized_crops(imgs, 16, flip, boxes)
    ref = torch.stack([im.flip(-1) if f else im for im, f in zip(imgs, flip)]).float()
    torch.testing.assert_close(out, ref, atol=1e-3, rtol=0)


def test_random_boxes_respect_area_and_ratio():
    boxes = random_boxes(2000, 256, torch.Generator().manual_seed(0))
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 256).all() and (left + w <= 256).all()
    frac = (h * w).float() / 256 ** 2
    assert frac.min() >= 0.07 and frac.max() <= 1.0 and frac.mean() > 0.3
    ratio = w.float() / h.float()
    assert ratio.min() > 0.7 and ratio.max() < 1.4


def test_preset_round_trips_through_a_dict_and_rejects_bad_settings():
    mean = torch.rand(3, 10, 10) * 255
    p = Preset(train=True, crop=8, base_size=10, norm=Normalization(mean, torch.ones(3, 1, 1)), flip=True,
               lighting=Lighting.imagenet(0.2))
    q = Preset.from_dict(p.to_dict(), train=True)
    imgs = torch.randint(0, 256, (5, 3, 10, 10), dtype=torch.uint8)
    seed = 7
    torch.testing.assert_close(p(imgs, torch.Generator().manual_seed(seed)),
                               q(imgs, torch.Generator().manual_seed(seed)))
    with pytest.raises(ValueError, match="larger"):
        Preset(train=True, crop=12, base_size=10, norm=Normalization.per_channel([0.0]))
    with pytest.raises(ValueError, match="mean image"):
        Preset(train=True, crop=8, base_size=10, pad=2, norm=Normalization(mean, torch.ones(3, 1, 1)))
    with pytest.raises(ValueError, match="10crop"):
        Preset(train=False, crop=8, base_size=10, norm=Normalization.per_channel([0.0]), tta="5crop")
    with pytest.raises(TypeError):
        Preset(train=False, crop=8, base_size=10, norm=Normalization.per_channel([0.0]))(imgs.float())
