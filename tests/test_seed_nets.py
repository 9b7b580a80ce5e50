"""The networks of the lessons this package grew from, against their own code: the Keras lesson's AlexNet
against Keras itself (its Sequential model written out as the lesson prints it, its weights imported by
alexnet.load_keras), the NNOTT lab's AlexNet and LeNet against a port written out here from its source
(polla-fattah/nnott, convolutional/architectures/alexnet.py and lenet.py), and the ``norm`` option that
makes alexnet2012 / alexnet-small the batch-normalized AlexNet."""

import json
import math
import os
import warnings

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported: the backend this package has

import keras  # noqa: E402 - in the test extra: this file runs in CI, never skipped
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import alexnet  # noqa: E402
from alexnet.models import ModelError, create_model  # noqa: E402
from alexnet.models import keras_import  # noqa: E402
from alexnet.models.lrn import LocalResponseNorm  # noqa: E402
from alexnet.models.weights import WeightsError, load_weights  # noqa: E402
from alexnet.training.config import resolve_config  # noqa: E402


def n_params(model):
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- the Keras lesson


def lesson_model():
    """The lesson's code ("AlexNet in Code (Simplified)"), as printed, with Keras 3's own modules in place
    of ``tensorflow.keras``."""
    from keras.layers import Conv2D, Dense, Dropout, Flatten, MaxPooling2D
    from keras.models import Sequential

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Keras 3 prefers Input(shape) to input_shape=
        model = Sequential([
            Conv2D(96, (11,11), strides=4, activation="relu", input_shape=(224,224,3)),  # noqa: E231
            MaxPooling2D(pool_size=(3,3), strides=2),  # noqa: E231

            Conv2D(256, (5,5), padding="same", activation="relu"),  # noqa: E231
            MaxPooling2D(pool_size=(3,3), strides=2),  # noqa: E231

            Conv2D(384, (3,3), padding="same", activation="relu"),  # noqa: E231
            Conv2D(384, (3,3), padding="same", activation="relu"),  # noqa: E231
            Conv2D(256, (3,3), padding="same", activation="relu"),  # noqa: E231
            MaxPooling2D(pool_size=(3,3), strides=2),  # noqa: E231

            Flatten(),
            Dense(4096, activation="relu"),
            Dropout(0.5),
            Dense(4096, activation="relu"),
            Dropout(0.5),
            Dense(1000, activation="softmax")
        ])
    return model


@pytest.fixture(scope="module")
def lesson():
    keras.utils.set_random_seed(0)
    return lesson_model()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((2, 224, 224, 3), dtype=np.float32)  # NHWC, as Keras takes them


@pytest.fixture(scope="module")
def lesson_logits(lesson, images):
    """The lesson's logits, from Keras alone: its penultimate layer's output (a Keras sub-model, inference
    mode) times the last Dense layer's kernel plus bias, before the softmax."""
    penultimate = keras.Model(lesson.inputs, lesson.layers[-2].output)
    kernel, bias = lesson.layers[-1].get_weights()
    return keras.ops.convert_to_numpy(penultimate(images, training=False)) @ kernel + bias


@pytest.fixture(scope="module")
def keras_alexnet():
    """One keras-alexnet (50 M parameters) that every import overwrites whole."""
    return create_model("keras-alexnet")


def our_logits(model, x):
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()  # NHWC -> NCHW


def test_the_lesson_and_keras_alexnet_have_the_same_layers_and_count(lesson, cli):
    assert lesson.count_params() == 50_844_008  # Keras's own count
    with torch.device("meta"):  # shapes only
        model = create_model("keras-alexnet")
    assert n_params(model) == 50_844_008
    # each layer's count from Keras against ours
    keras_counts = [layer.count_params() for layer in lesson.layers if layer.count_params()]
    ours = [n_params(m) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert ours == keras_counts
    keras_maps = [tuple(layer.output.shape[1:]) for layer in lesson.layers if "pool" in layer.name
                  or "conv" in layer.name]
    assert keras_maps == [(54, 54, 96), (26, 26, 96), (26, 26, 256), (12, 12, 256), (12, 12, 384),
                          (12, 12, 384), (12, 12, 256), (5, 5, 256)]
    r = cli("summary", "keras-alexnet")
    assert r.returncode == 0, r.stderr
    for text in ("54x54x96", "26x26x96", "26x26x256", "12x12x256", "12x12x384", "5x5x256", "6400",
                 "50,844,008"):
        assert text in r.stdout


def _conv_spatially_transposed(monkeypatch):
    monkeypatch.setattr(keras_import, "HWIO_TO_OIHW", (3, 2, 1, 0))  # (kh, kw, in, out) -> (out, in, kw, kh)


def _fc6_left_in_nhwc_order(monkeypatch):
    right = keras_import.dense_weight
    monkeypatch.setattr(keras_import, "dense_weight", lambda kernel, chw=None: right(kernel, None))


def _square_dense_not_transposed(monkeypatch):  # fc7 is 4096 x 4096: the shapes cannot tell
    right = keras_import.dense_weight
    monkeypatch.setattr(keras_import, "dense_weight", lambda kernel, chw=None: (
        torch.from_numpy(kernel).contiguous() if kernel.shape[0] == kernel.shape[1] else right(kernel, chw)))


@pytest.mark.parametrize("wrong", [None, _conv_spatially_transposed, _fc6_left_in_nhwc_order,
                                   _square_dense_not_transposed],
                         ids=["as-shipped", "conv-kernel-transposed", "fc6-nhwc", "fc7-not-transposed"])
def test_keras_import_gives_the_lessons_logits(lesson, images, lesson_logits, keras_alexnet, wrong,
                                               monkeypatch):
    """Our keras-alexnet with the lesson's weights gives the lesson's logits (and softmax); with any one
    of the layout conversions done wrong it does not."""
    theirs = lesson_logits
    assert np.abs(theirs).max() > 0.01  # logits worth comparing
    if wrong is None:
        model = alexnet.load_keras(keras_alexnet, lesson)
        np.testing.assert_allclose(our_logits(model, images), theirs, rtol=0, atol=1e-5)
        probs = keras.ops.convert_to_numpy(lesson(images, training=False))
        ours = torch.softmax(torch.from_numpy(our_logits(model, images)), 1).numpy()
        np.testing.assert_allclose(ours, probs, rtol=1e-4, atol=1e-7)
        return
    wrong(monkeypatch)
    model = alexnet.load_keras(keras_alexnet, lesson, check=False)
    assert np.abs(our_logits(model, images) - theirs).max() > 1e-3  # the comparison above would fail


def test_load_keras_checks_the_logits_and_keeps_the_model_when_they_differ(lesson, keras_alexnet,
                                                                           monkeypatch):
    _fc6_left_in_nhwc_order(monkeypatch)
    with torch.no_grad():
        keras_alexnet.classifier.fc8.bias.fill_(7.0)  # what the model holds before the refused import
    with pytest.raises(WeightsError, match="do not compute the same function"):
        alexnet.load_keras(keras_alexnet, lesson)
    assert torch.all(keras_alexnet.classifier.fc8.bias == 7.0)  # left as it was


def test_keras_alexnet_initializes_and_drops_out_as_keras():
    """Glorot uniform (U(+-sqrt(6 / (fan_in + fan_out)))), zero biases; inverted dropout."""
    torch.manual_seed(0)
    model = create_model("keras-alexnet")
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            receptive = m.weight[0, 0].numel() if m.weight.ndim == 4 else 1
            fan_in, fan_out = m.weight.shape[1] * receptive, m.weight.shape[0] * receptive
            bound = math.sqrt(6 / (fan_in + fan_out))
            assert m.weight.abs().max() <= bound, name
            assert abs(m.weight.std().item() - bound / math.sqrt(3)) < 0.05 * bound / math.sqrt(3), name
            assert torch.all(m.bias == 0), name
    # Keras's Dropout and ours on the same ones: kept units scaled by 1 / (1 - 0.5), nothing at test time
    ones = np.ones((1, 4096), dtype=np.float32)
    keras_out = keras.ops.convert_to_numpy(keras.layers.Dropout(0.5)(ones, training=True))
    ours = model.classifier.drop6.train()(torch.from_numpy(ones))
    assert set(np.unique(keras_out)) == set(ours.unique().tolist()) == {0.0, 2.0}
    assert torch.equal(model.classifier.drop6.eval()(torch.from_numpy(ones)), torch.from_numpy(ones))
    # init="kaiming": He normal N(0, 2 / fan_in), the output layer N(0, 0.01)
    he = create_model("keras-alexnet", init="kaiming")
    for layer, std in ((he.features.conv3, math.sqrt(2 / (256 * 9))),
                       (he.classifier.fc6, math.sqrt(2 / 6400)), (he.classifier.fc8, 0.01)):
        assert abs(layer.weight.std().item() - std) < 0.05 * std and torch.all(layer.bias == 0)
    with pytest.raises(ModelError, match="init"):
        create_model("keras-alexnet", init="paper")


def keras_lenet(side):
    """A Keras LeNet-5 (tanh, average pooling) shaped as the zoo's lenet5 for side x side images."""
    from keras import layers

    return keras.Sequential([
        keras.Input((side, side, 1)),
        layers.Conv2D(6, 5, activation="tanh"), layers.AveragePooling2D(2),
        layers.Conv2D(16, 5, activation="tanh"), layers.AveragePooling2D(2),
        layers.Conv2D(120, 5, activation="tanh"), layers.Flatten(),  # 2x2x120 at 36x36: order matters
        layers.Dense(84, activation="tanh"), layers.Dense(10),
    ])


def test_a_saved_keras_file_through_the_api_and_the_command(tmp_path, cli):
    keras.utils.set_random_seed(1)
    small = keras_lenet(36)
    path = tmp_path / "lenet.keras"
    small.save(path)
    x = np.random.default_rng(1).random((3, 36, 36, 1), dtype=np.float32)
    theirs = keras.ops.convert_to_numpy(small(x))  # the last Dense has no activation: logits
    model = alexnet.load_keras(create_model("lenet5", num_classes=10, img_size=36), path)
    np.testing.assert_allclose(our_logits(model, x), theirs, rtol=0, atol=1e-5)

    out = tmp_path / "lenet.safetensors"
    r = cli("import-keras", path, "--model", "lenet5", "-o", out)
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and out.is_file()
    loaded = load_weights(out)  # model name, options and classes from the file
    assert loaded.pretrained_cfg.model == "lenet5" and loaded.input_size == (1, 36, 36)
    np.testing.assert_allclose(our_logits(loaded, x), theirs, rtol=0, atol=1e-5)

    # bad input: one line, exit code 2
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evil = keras.Sequential([keras.Input((36, 36, 1)), keras.layers.Lambda(lambda t: t * 2)])
        evil.save(tmp_path / "lambda.keras")
    target = ("-o", tmp_path / "a.safetensors")
    cases = [((tmp_path / "missing.keras", *target), "no such"),
             ((junk, *target), "not a Keras model"),
             ((tmp_path / "lambda.keras", "--model", "lenet5", *target), "safely"),  # safe_mode: no code runs
             ((path, *target), "keras-alexnet needs"),
             ((path, "--model", "lenet5", "-o", tmp_path / "a.onnx"), ".safetensors")]
    for args, message in cases:
        r = cli("import-keras", *args)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "a.safetensors").exists()
    with pytest.raises(WeightsError, match="Conv2D and Dense"):  # batch norm: not imported
        bn = keras.Sequential([keras.Input((36, 36, 1)), keras.layers.Conv2D(6, 5),
                               keras.layers.BatchNormalization()])
        alexnet.load_keras(create_model("lenet5", num_classes=10, img_size=36), bn)
    with pytest.raises(WeightsError, match="does not do what"):  # padding "same" where lenet5 has none
        same = keras_lenet(36)
        same.layers[0].padding = "same"
        alexnet.load_keras(create_model("lenet5", num_classes=10, img_size=36), same, check=False)


# ----------------------------------------------------------------------------- the NNOTT lab


def nnott_alexnet_port(num_classes=10):
    """polla-fattah/nnott convolutional/architectures/alexnet.py, AlexNet.build(), module for module
    (its Conv2D / BatchNorm2D / ReLU / MaxPool2D / Dropout / Flatten / Dense as torch.nn)."""
    return nn.Sequential(
        nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Conv2d(64, 192, kernel_size=3, stride=1, padding=1), nn.BatchNorm2d(192), nn.ReLU(),
        nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, stride=1, padding=1), nn.BatchNorm2d(384), nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, stride=1, padding=1), nn.BatchNorm2d(256), nn.ReLU(),
        nn.Conv2d(256, 256, kernel_size=3, stride=1, padding=1), nn.BatchNorm2d(256), nn.ReLU(),
        nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(256 * 3 * 3, 1024), nn.ReLU(), nn.Dropout(p=0.5),
        nn.Linear(1024, 512), nn.ReLU(), nn.Dropout(p=0.5),
        nn.Linear(512, num_classes),
    )


def nnott_lenet_port(num_classes=10, use_batchnorm=True, dropout_p=0.0):
    """polla-fattah/nnott convolutional/architectures/lenet.py, LeNet.build(), module for module."""
    blocks = [nn.Conv2d(1, 6, kernel_size=5, stride=1, padding=2)]
    if use_batchnorm:
        blocks.append(nn.BatchNorm2d(6))
    blocks += [nn.ReLU(), nn.MaxPool2d(kernel_size=2, stride=2), nn.Conv2d(6, 16, kernel_size=5, stride=1)]
    if use_batchnorm:
        blocks.append(nn.BatchNorm2d(16))
    blocks += [nn.ReLU(), nn.MaxPool2d(kernel_size=2, stride=2), nn.Conv2d(16, 120, kernel_size=5, stride=1),
               nn.ReLU(), nn.Flatten(), nn.Linear(120, 84), nn.ReLU()]
    if dropout_p > 0.0:
        blocks.append(nn.Dropout(p=dropout_p))
    blocks.append(nn.Linear(84, num_classes))
    return nn.Sequential(*blocks)


@pytest.mark.parametrize("name, port, options, count", [
    # the counts: conv (k*k*in + 1) * out, batch norm 2 * channels, dense (in + 1) * out
    ("nnott-alexnet", nnott_alexnet_port, {}, 5_142_986),
    ("nnott-lenet", nnott_lenet_port, {}, 61_750),
    ("nnott-lenet", lambda: nnott_lenet_port(use_batchnorm=False, dropout_p=0.3),
     {"norm": "none", "dropout": 0.3}, 61_750 - 2 * (6 + 16)),
])
def test_nnott_nets_equal_a_port_of_nnotts_code(name, port, options, count):
    torch.manual_seed(0)
    ours, theirs = create_model(name, num_classes=10, **options), port()
    assert n_params(ours) == n_params(theirs) == count
    by_formula = {"nnott-alexnet": (9 * 1 + 1) * 64 + (9 * 64 + 1) * 192 + (9 * 192 + 1) * 384
                  + (9 * 384 + 1) * 256 + (9 * 256 + 1) * 256 + 2 * (64 + 192 + 384 + 256 + 256)
                  + (2304 + 1) * 1024 + (1024 + 1) * 512 + (512 + 1) * 10,
                  "nnott-lenet": (25 + 1) * 6 + (25 * 6 + 1) * 16 + (25 * 16 + 1) * 120 + 2 * (6 + 16)
                  + (120 + 1) * 84 + (84 + 1) * 10}
    if not options:
        assert count == by_formula[name]
    # the port's tensors, in order, into ours (names differ, order and shapes must not)
    mine, port_state = ours.state_dict(), theirs.state_dict()
    assert [v.shape for v in mine.values()] == [v.shape for v in port_state.values()]
    with torch.no_grad():  # batch-norm parameters and statistics worth comparing
        for m in theirs.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1), m.running_var.uniform_(0.5, 2), m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    ours.load_state_dict(dict(zip(mine, theirs.state_dict().values())))
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs.eval()(x), rtol=1e-5, atol=1e-5)
        torch.manual_seed(1)
        a = ours.train()(x)  # batch statistics, and dropout drawing the same masks in the same order
        torch.manual_seed(1)
        torch.testing.assert_close(a, theirs.train()(x), rtol=1e-5, atol=1e-5)


def test_nnott_nets_initialize_as_nnott():
    """nnott's modules.py: Conv2D and Dense before a ReLU N(0, 2 / fan_in), the output Dense N(0, 0.01),
    biases 0; BatchNorm2D gamma 1, beta 0."""
    torch.manual_seed(0)
    model = create_model("nnott-alexnet", num_classes=10)
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            want = 0.01 if name.endswith("fc8") else math.sqrt(2 / m.weight[0].numel())
            assert abs(m.weight.std().item() - want) < 0.1 * want, name
            assert torch.all(m.bias == 0), name
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0) and (m.momentum, m.eps) == (0.1, 1e-5)


def test_nnott_recipe_and_a_short_run(tmp_path, cli):
    cfg, _ = resolve_config({"model": "nnott-alexnet", "data": "digits"})
    assert (cfg.recipe, cfg.batch_size, cfg.weight_decay, cfg.normalize, cfg.pad, cfg.flip) == (
        "nnott", 64, 1e-4, "standard", 2, "off")  # nnott: --batch-size 64, Adam's weight_decay, shift 2
    r = cli("train", "--model", "nnott-lenet", "--epochs", 1, "--quiet", "--out", tmp_path, "--name", "lenet")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "lenet" / "config.json").read_text())["config"]["recipe"] == "nnott"
    results = json.loads((tmp_path / "lenet" / "results.json").read_text())
    assert results["test_top1_accuracy"] > 0.5, results  # one epoch of 17 steps; chance is 0.1


# ----------------------------------------------------------------------------- norm=batch: AlexNet-BN


def bn_reference(model, x):
    """alexnet-small with norm=batch written out with functional ops in eval mode: every convolution
    followed by batch normalization (running statistics), then ReLU; max-pooling 3x3/2 after the first,
    second and fifth; no LRN; the classifier unchanged (reference: cvjena/cnn-models AlexNet_cvgj)."""
    f = model.features
    for i, pool in ((1, True), (2, True), (3, False), (4, False), (5, True)):
        conv, bn = getattr(f, f"conv{i}"), getattr(f, f"bn{i}")
        x = F.conv2d(x, conv.weight, conv.bias, padding=conv.padding, groups=conv.groups)
        x = (x - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
        x = F.relu(x * bn.weight[:, None, None] + bn.bias[:, None, None])
        if pool:
            x = F.max_pool2d(x, 3, 2)
    c = model.classifier
    x = F.relu(F.linear(x.flatten(1), c.fc6.weight, c.fc6.bias))
    x = F.relu(F.linear(x, c.fc7.weight, c.fc7.bias))
    return F.linear(x, c.fc8.weight, c.fc8.bias)


@pytest.mark.parametrize("name, widths", [("alexnet2012", (96, 256, 384, 384, 256)),
                                          ("alexnet-small", (64, 128, 192, 192, 128))])
def test_norm_batch_is_alexnet_bn(name, widths):
    kw = {"num_classes": 10}
    with torch.device("meta" if name == "alexnet2012" else "cpu"):  # shapes only for the big one
        lrn, bn, none = (create_model(name, norm=v, **kw) for v in ("lrn", "batch", "none"))
        no_lrn = create_model(name, lrn=False, **kw)  # the paper's ablation: the same net as norm=none
    assert n_params(bn) == n_params(lrn) + 2 * sum(widths)  # gamma and beta per channel
    names = [n for n, _ in bn.features.named_children()]
    for i, width in enumerate(widths, 1):
        layer = getattr(bn.features, f"bn{i}")
        assert isinstance(layer, nn.BatchNorm2d) and layer.num_features == width
        at = names.index(f"conv{i}")
        assert names[at + 1: at + 3] == [f"bn{i}", f"act{i}"]  # conv, BN, ReLU
    for model in (bn, none):
        assert not any(isinstance(m, (LocalResponseNorm, nn.LocalResponseNorm)) for m in model.modules())
    assert [n for n, _ in none.features.named_children()] == [n for n, _ in no_lrn.features.named_children()]
    if name == "alexnet-small":
        torch.manual_seed(0)
        with torch.no_grad():
            for m in bn.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.1), m.running_var.uniform_(0.5, 2)
                    m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.1)
        x = torch.randn(3, 1, 28, 28)
        with torch.no_grad():
            torch.testing.assert_close(bn.eval()(x), bn_reference(bn, x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ModelError, match="norm"):
        create_model(name, norm="group")


def test_weights_of_a_batch_norm_net_are_recognized(tmp_path):
    """A plain state dict of alexnet-small norm=batch or nnott-lenet norm=none is matched by its keys."""
    for name, norm in (("alexnet-small", "batch"), ("nnott-lenet", "none")):
        path = tmp_path / f"{name}.pth"
        torch.save(create_model(name, num_classes=10, norm=norm).state_dict(), path)
        model = load_weights(path, quiet=True)
        assert model.pretrained_cfg.model == name and model.pretrained_cfg.options["norm"] == norm


def test_split_towers_of_a_batch_norm_net():
    """Each device normalizes its own maps over the whole batch: the grouped model's function, running
    statistics and state dict, in training and evaluation."""
    torch.manual_seed(0)
    grouped = create_model("alexnet-small", num_classes=10, norm="batch")
    split = alexnet.split_towers(grouped, ("cpu", "cpu"))
    x, y = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1)), torch.tensor([1, 7, 3, 0])
    logits = []
    for model in (grouped, split):
        torch.manual_seed(5)  # the same dropout masks
        out = model.train()(x)
        nn.functional.cross_entropy(out, y).backward()
        logits.append(out.detach())
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-5, atol=1e-5)
    width = grouped.features.conv2.out_channels // 2
    for key in ("conv2.weight", "bn2.weight", "bn2.bias"):  # tower 2's rows of the gradient
        torch.testing.assert_close(split.halves[1].features.get_parameter(key).grad,
                                   grouped.features.get_parameter(key).grad[width:], rtol=1e-4, atol=1e-6)
    got, want = split.state_dict(), grouped.state_dict()  # running statistics after one batch
    assert list(got) == list(want) and int(got["features.bn1.num_batches_tracked"]) == 1
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6, msg=lambda m, key=key: key + m)
    split.load_state_dict(want)
    with torch.no_grad():
        torch.testing.assert_close(split.eval()(x), grouped.eval()(x), rtol=1e-5, atol=1e-5)
