"""Decoding: the odd-but-valid files decode to the right pixels, the broken ones are refused."""

import io
import os

import numpy as np
import pytest
import torch
from helpers.formats import bad_files, jpeg, png16, sample_photos
from PIL import Image, ImageFile

from alexnet.bench.data import reference_decode
from alexnet.data.decode import MAX_IMAGE_PIXELS, ImageDecodeError, decode_file, load_image


def write(tmp_path, name, data: bytes) -> str:
    path = os.path.join(tmp_path, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def png(array: np.ndarray, mode: str | None = None, **kw) -> bytes:
    buf = io.BytesIO()
    (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(buf, "PNG", **kw)
    return buf.getvalue()


def test_16bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 1000, 32896], [40000, 65535, 65280, 128]], dtype=np.uint16)
    a = np.tile(values, (2, 1))  # (4, 4): a square decoded at its own size is not resampled
    out, size = decode_file(write(tmp_path, "g16.png", png16(a)), 4, channels=1)
    assert size == (4, 4)
    expected = np.rint(a / 257.0).astype(np.uint8)  # 65535 -> 255 and 32896 -> 128: scaled, not clipped
    np.testing.assert_array_equal(out[..., 0], expected)


def test_16bit_rgb_png(tmp_path):
    a = np.random.default_rng(0).integers(0, 65536, (6, 6, 3)).astype(np.uint16)
    out, _ = decode_file(write(tmp_path, "rgb16.png", png16(a)), 6)
    assert np.abs(out.astype(int) - np.rint(a / 257.0)).max() <= 1  # within one level of the exact rescale


def test_palette_png_and_its_transparency(tmp_path):
    palette = np.array([[200, 10, 30], [5, 250, 7], [0, 0, 255], [90, 90, 90]], dtype=np.uint8)
    idx = np.random.default_rng(1).integers(0, 4, (8, 8)).astype(np.uint8)
    img = Image.fromarray(idx, "P")
    img.putpalette(palette.flatten().tolist())
    buf = io.BytesIO()
    img.save(buf, "PNG")
    out, _ = decode_file(write(tmp_path, "p.png", buf.getvalue()), 8)
    np.testing.assert_array_equal(out, palette[idx])
    buf = io.BytesIO()
    img.save(buf, "PNG", transparency=3)  # palette entry 3 is transparent: composited on white
    out, _ = decode_file(write(tmp_path, "pt.png", buf.getvalue()), 8)
    np.testing.assert_array_equal(out, np.where((idx == 3)[..., None], 255, palette[idx]))


def test_rgba_and_la_png_are_composited_on_white(tmp_path):
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)
    rgba[0, :, 3], rgba[1, :, 3] = 0, 255
    out, _ = decode_file(write(tmp_path, "a.png", png(rgba)), 8)
    a = rgba[..., 3:].astype(float) / 255
    expected = rgba[..., :3] * a + 255 * (1 - a)
    assert np.abs(out - expected).max() <= 1
    np.testing.assert_array_equal(out[0], 255)
    np.testing.assert_array_equal(out[1], rgba[1, :, :3])
    la = rng.integers(0, 256, (8, 8, 2), dtype=np.uint8)
    out, _ = decode_file(write(tmp_path, "la.png", png(la, "LA")), 8, channels=1)
    expected = la[..., 0] * (la[..., 1] / 255) + 255 * (1 - la[..., 1] / 255)
    assert np.abs(out[..., 0] - expected).max() <= 1


def test_png_named_jpeg(tmp_path):
    a = np.random.default_rng(3).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    out, _ = decode_file(write(tmp_path, "n02105855_2933.JPEG", png(a)), 16)
    np.testing.assert_array_equal(out, a)


def test_cmyk_jpeg_matches_the_rgb_photo(tmp_path):
    photo = sample_photos()[0][100:356, 200:456]  # (256, 256, 3) of china.jpg
    buf = io.BytesIO()
    Image.fromarray(photo).convert("CMYK").save(buf, "JPEG", quality=95)
    assert Image.open(io.BytesIO(buf.getvalue())).mode == "CMYK"
    out, _ = decode_file(write(tmp_path, "cmyk.JPEG", buf.getvalue()), 256)
    assert np.abs(out.astype(int) - photo).mean() < 3  # JPEG's loss, not a colour error (those are ~100)


def test_grayscale_jpeg_becomes_three_equal_channels(tmp_path):
    gray = np.asarray(Image.fromarray(sample_photos()[1][:256, :256]).convert("L"))
    out, _ = decode_file(write(tmp_path, "gray.JPEG", jpeg(gray)), 256)
    assert out.shape == (256, 256, 3)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert np.abs(out[..., 0].astype(int) - gray).mean() < 2


# EXIF orientation -> what the viewer shows, written with NumPy (independent of Pillow's transpose).
UPRIGHT = {1: lambda a: a, 2: np.fliplr, 3: lambda a: np.rot90(a, 2), 4: np.flipud,
           5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
           7: lambda a: np.rot90(a, 2).transpose(1, 0, 2), 8: lambda a: np.rot90(a, 1)}


@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_exif_orientation_is_applied(tmp_path, orientation):
    colours = np.array([[[230, 20, 20], [20, 230, 20]], [[20, 20, 230], [230, 230, 20]]], dtype=np.uint8)
    stored = colours.repeat(32, 0).repeat(32, 1)  # (64, 64, 3): four quadrants, every symmetry tells apart
    exif = Image.Exif()
    exif[274] = orientation
    path = write(tmp_path, f"o{orientation}.JPEG", jpeg(stored, exif=exif.tobytes()))
    out, _ = decode_file(path, 64)
    expected = UPRIGHT[orientation](stored)
    quadrants = [(slice(4, 28), slice(4, 28)), (slice(4, 28), slice(36, 60)),
                 (slice(36, 60), slice(4, 28)), (slice(36, 60), slice(36, 60))]
    for q in quadrants:
        assert np.abs(out[q].mean((0, 1)) - expected[q].mean((0, 1))).max() < 8


def test_very_small_images_are_upscaled(tmp_path):
    a = np.full((2, 3, 3), (12, 200, 99), dtype=np.uint8)
    t = load_image(write(tmp_path, "tiny.png", png(a)), 256)
    assert t.shape == (3, 256, 256) and t.dtype == torch.uint8
    assert (t == torch.tensor([12, 200, 99], dtype=torch.uint8)[:, None, None]).all()


def test_draft_decoding_agrees_with_full_decoding(tmp_path):
    big = np.asarray(Image.fromarray(sample_photos()[0]).resize((1280, 854), Image.Resampling.BICUBIC))
    path = write(tmp_path, "big.JPEG", jpeg(big, quality=92))
    with Image.open(path) as img:  # the DCT-scaled decode really happens for this size
        img.draft("RGB", (256, 256))
        assert img.size == (640, 427)
    drafted, size = decode_file(path, 256)
    full, _ = decode_file(path, 256, draft=False)
    assert size == (1280, 854)
    assert np.abs(drafted.astype(int) - full).mean() < 2.5
    # ... and both agree with the plain "resize the shorter side, crop the centre" pipeline.
    assert np.abs(full.astype(int) - reference_decode(path)).mean() < 1.5


def test_geometry_is_the_central_square(tmp_path):
    # Left and right thirds black, middle white: only the white middle survives the crop. The outermost
    # output columns see a little black through the antialiasing filter, as in resize-then-crop.
    a = np.zeros((100, 300, 3), dtype=np.uint8)
    a[:, 100:200] = 255
    for name, img, axis in (("wide.png", a, 1), ("tall.png", a.transpose(1, 0, 2).copy(), 0)):
        out, _ = decode_file(write(tmp_path, name, png(img)), 50)
        inner = out[:, 1:-1] if axis == 1 else out[1:-1]
        edges = out[:, [0, -1]] if axis == 1 else out[[0, -1]]
        assert (inner == 255).all() and (edges > 200).all()


def named(paths, name):
    return next(p for p in paths if os.path.basename(p) == name)


@pytest.fixture
def broken(tmp_path):
    return bad_files(str(tmp_path), jpeg(sample_photos()[0]))


def test_broken_files_are_refused_with_their_name(broken):
    for path in broken:
        with pytest.raises(ImageDecodeError, match=os.path.basename(path)) as e:
            decode_file(path, 256)
        assert "\n" not in str(e.value)
    with pytest.raises(ImageDecodeError, match="decompression-bomb limit"):
        decode_file(named(broken, "bomb_just_over.JPEG"), 256)
    assert 10_000 * 8_948 > MAX_IMAGE_PIXELS > 10_000 * 8_947


def test_truncated_files_are_refused_even_when_pillow_is_told_to_accept_them(broken, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as some other library might
    truncated = named(broken, "truncated.JPEG")
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_file(truncated, 256)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored for whoever set it
    with Image.open(truncated) as img:  # the file really is one Pillow would otherwise accept
        img.load()


def test_real_jpegs_decode_like_the_reference(tmp_path):
    for i, photo in enumerate(sample_photos()):
        path = write(tmp_path, f"photo{i}.jpg", jpeg(photo, quality=90))
        out, size = decode_file(path, 256)
        assert size == (640, 427)
        assert np.abs(out.astype(int) - reference_decode(path)).mean() < 1.5
