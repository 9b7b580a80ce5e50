"""torchvision's evaluation pipeline, to the pixel, on real photos of odd sizes.

The reference is torchvision's ImageNet evaluation restated here with PIL and NumPy (as in
torchvision/transforms/functional.py and references/classification/presets.py):
``Image.open(f).convert("RGB")``; ``Resize(256)``: shorter side 256, longer ``int(256 * long / short)``,
PIL bilinear; ``CenterCrop(224)``: top/left ``int(round((side - 224) / 2.0))``; ``ToTensor`` (x / 255);
``Normalize(mean, std)``.
"""

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

import alexnet
from alexnet.cli import main
from alexnet.data.decode import load_image
from alexnet.data.transforms import Preset, preset_from_spec, torchvision_eval_preset

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# (top, left, height, width) cuts of the two 427x640 sample photos: landscape and portrait, odd sides,
# shorter side above, at and below 256 (downscaled, unchanged, upscaled).
CUTS = [(0, 0, 427, 640), (13, 7, 401, 583), (0, 100, 411, 257), (20, 31, 256, 397), (5, 3, 255, 399),
        (1, 2, 333, 227)]


def reference_pixels(path, resize=256, crop=224):
    img = Image.open(path).convert("RGB")
    w, h = img.size
    if w <= h:
        new_w, new_h = resize, int(resize * h / w)
    else:
        new_w, new_h = int(resize * w / h), resize
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.BILINEAR)
    top = int(round((new_h - crop) / 2.0))  # noqa: RUF046 - as torchvision writes it
    left = int(round((new_w - crop) / 2.0))  # noqa: RUF046
    return np.array(img)[top:top + crop, left:left + crop]  # (224, 224, 3) uint8


def reference_tensor(path):
    x = reference_pixels(path).astype(np.float32) / 255.0
    x = (x - MEAN) / STD
    return torch.from_numpy(x.transpose(2, 0, 1).copy())  # (3, 224, 224)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i, image in enumerate(load_sample_images().images):
        for j, (t, l_, h, w) in enumerate(CUTS):
            cut = image[t:t + h, l_:l_ + w]
            if (i + j) % 2:  # portrait versions too
                cut = cut.transpose(1, 0, 2)
            path = folder / f"photo{i}-{j}.{'png' if j % 3 else 'jpg'}"
            Image.fromarray(np.ascontiguousarray(cut)).save(path, quality=90)
            paths.append(path)
    return paths


def test_preset_gives_torchvisions_tensor(photos):
    preset = torchvision_eval_preset()
    for path in photos:
        pixels = preset.load(path)  # (3, 224, 224) uint8
        assert torch.equal(pixels, torch.from_numpy(reference_pixels(path)).permute(2, 0, 1)), path
        x = preset(pixels[None])[0]
        # The same numbers up to float32 rounding: (x - 255 m) / (255 s) vs (x / 255 - m) / s.
        torch.testing.assert_close(x, reference_tensor(path), rtol=0, atol=2e-6)


def test_no_exif_rotation_but_the_papers_decoder_keeps_it(tmp_path):
    image = load_sample_images().images[0][:300, :451]
    exif = Image.Exif()
    exif[274] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(image).save(path, exif=exif, quality=95)
    preset = torchvision_eval_preset()
    assert torch.equal(preset.load(path), torch.from_numpy(reference_pixels(path)).permute(2, 0, 1))
    # The paper's presets (no resize) still read files as the upright 256 squares they always did.
    paper = Preset.from_dict(Preset(train=False, crop=227, base_size=256,
                                    norm=alexnet.data.Normalization.per_channel([0, 0,
                                                                                 0])).to_dict(), train=False)
    assert paper.resize is None
    assert torch.equal(paper.load(path), load_image(path, 256))


def test_named_preset_round_trips():
    preset = preset_from_spec("torchvision-eval")
    assert (preset.resize, preset.base_size, preset.crop) == (256, 224, 224)
    again = Preset.from_dict(preset.to_dict(), train=False)
    assert again.resize == 256
    torch.testing.assert_close(again.norm.mean.flatten(), torch.tensor(MEAN) * 255)


def test_against_torchvision_itself(photos):
    T = pytest.importorskip("torchvision.transforms")
    pipeline = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(MEAN.tolist(),
                                                                                      STD.tolist())])
    preset = torchvision_eval_preset()
    for path in photos:
        want = pipeline(Image.open(path).convert("RGB"))
        torch.testing.assert_close(preset(preset.load(path)[None])[0], want, rtol=0, atol=2e-6)


def test_predict_with_weights_uses_the_pipeline_and_imagenet_names(photos, tmp_path, capsys):
    torch.manual_seed(0)
    model = alexnet.create_model("alexnet-owt").eval()
    with torch.no_grad():  # random weights give near-equal logits for any image: spread them
        model.classifier[6].weight.mul_(3000)
    path = tmp_path / "owt-random.pth"
    torch.save(model.state_dict(), path)
    chosen = photos[:3]
    assert main(["predict", "--weights", str(path), *map(str, chosen), "--json", "--top-k", "3",
                 "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and "not a known weights file" in err  # the one-line note
    got = __import__("json").loads(out)
    names = alexnet.imagenet_class_names()
    with torch.no_grad():
        probs = model(torch.stack([reference_tensor(p) for p in chosen])).softmax(-1)
    for item, p in zip(got, probs):
        top = p.topk(3)
        assert [r["name"] for r in item["top"]] == [names[i] for i in top.indices.tolist()]
        np.testing.assert_allclose([r["probability"] for r in item["top"]], top.values.tolist(), rtol=1e-4)
