"""``split_towers``: the two-device form computes what the grouped single-device model computes (logits,
loss, every gradient, an SGD step), holds each tower on its own device, and shares its state dict."""

import pytest
import torch
from torch import nn

import alexnet
from alexnet.models.split import memory_per_device

# The paper's layer table (docs/models.md, 1000 classes): parameters of each split layer, and fc8's.
SPLIT_LAYERS = {"conv1": 34_944, "conv2": 307_456, "conv3": 885_120, "conv4": 663_936, "conv5": 442_624,
                "fc6": 37_752_832, "fc7": 16_781_312}
FC8 = 4_097_000


def grouped_grads(split: nn.Module) -> dict[str, torch.Tensor]:
    """The split's gradients under the grouped model's names: tower 1's rows, then tower 2's; fc8 whole."""
    grads = {name: p.grad for name, p in split.named_parameters()}
    out = {}
    for name, g in grads.items():
        if name.startswith("output."):
            out["classifier.fc8." + name.removeprefix("output.")] = g
        elif name.startswith("halves.0."):
            key = name.removeprefix("halves.0.")
            out[key] = torch.cat([g, grads["halves.1." + key]])
    return out


def pair(name="alexnet2012", **opts):
    torch.manual_seed(0)
    grouped = alexnet.create_model(name, num_classes=10, **opts)
    return grouped, alexnet.split_towers(grouped, ("cpu", "cpu"))


@pytest.mark.parametrize("train", [True, False])
def test_logits_loss_gradients_and_sgd_steps_equal_the_grouped_model(train):
    grouped, split = pair()
    x = torch.rand(3, 3, 227, 227, generator=torch.Generator().manual_seed(1)) * 2
    y = torch.tensor([1, 7, 3])
    losses, logits, opts = [], [], []
    for model in (grouped, split):
        model.train(train)
        torch.manual_seed(5)  # the same dropout masks, drawn on the same shape
        out = model(x)
        loss = nn.functional.cross_entropy(out, y)
        loss.backward()
        logits.append(out.detach())
        losses.append(loss.detach())
        opts.append(torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4))
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-5)
    got = grouped_grads(split)
    assert list(got) == [n for n, _ in grouped.named_parameters()]
    for name, p in grouped.named_parameters():
        assert p.grad.abs().sum() > 0, name  # every layer was reached
        torch.testing.assert_close(got[name], p.grad, rtol=1e-5, atol=1e-5, msg=name)
    if not train:
        return
    grouped.eval()  # dropout was on: the same masks, not merely the same expectation
    assert not torch.allclose(grouped(x), logits[0])
    grouped.train()
    for model, opt in zip((grouped, split), opts):  # a training step each, then one more with momentum
        opt.step()
        opt.zero_grad()
        torch.manual_seed(3)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    want = grouped.state_dict()
    for key, value in split.state_dict().items():
        torch.testing.assert_close(value, want[key], rtol=1e-5, atol=1e-5,
                                   msg=lambda m, key=key: f"{key}: {m}")


def test_state_dict_moves_between_the_forms():
    grouped, split = pair()
    got, want = split.state_dict(), grouped.state_dict()
    assert list(got) == list(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    other = alexnet.create_model("alexnet2012", num_classes=10)
    split.load_state_dict(other.state_dict())  # strict
    assert torch.equal(split.halves[1].features.conv1.weight, other.features.conv1.weight[48:])
    assert torch.equal(split.output.weight, other.classifier.fc8.weight)
    grouped.load_state_dict(split.state_dict())
    assert torch.equal(grouped.classifier.fc6.weight, other.classifier.fc6.weight)
    # a checkpoint that does not fit names the grouped model's keys
    bad = other.state_dict()
    bad["features.conv2.weight"] = torch.zeros(256, 96, 5, 5)
    del bad["classifier.fc7.bias"], bad["classifier.fc8.weight"]
    with pytest.raises(RuntimeError) as e:
        split.load_state_dict(bad)
    msg = str(e.value)
    assert "size mismatch for features.conv2.weight" in msg
    assert '"classifier.fc7.bias", "classifier.fc8.weight"' in msg and "halves" not in msg


def test_towers_live_on_their_devices_and_exchange_where_the_paper_does():
    grouped = alexnet.create_model("alexnet2012")
    split = alexnet.split_towers(grouped, ("cpu", "meta"))
    assert split.exchange_before == ("conv3", "fc6", "fc7", "fc8")
    assert {p.device.type for p in split.halves[0].parameters()} == {"cpu"}
    assert {p.device.type for p in split.halves[1].parameters()} == {"meta"}
    assert split.output.weight.device.type == "cpu"
    assert split.halves[0].classifier.fc6.out_features == 2048
    assert split.halves[1].features.conv2.in_channels == 48
    assert split.halves[0].features.norm1.groups == 1  # each device normalizes its own 48 maps
    assert next(grouped.parameters()).device.type == "cpu"  # the model given is left as it was
    meta = alexnet.split_towers(grouped, ("meta", "meta"))
    assert meta(torch.empty(5, 3, 227, 227, device="meta")).shape == (5, 1000)
    half = sum(SPLIT_LAYERS.values()) // 2  # 28,434,112: each tower's half of every split layer
    assert [d["params"] for d in memory_per_device(meta)] == [half + FC8, half]
    assert sum(p.numel() for p in meta.parameters()) == 60_965_224


def test_alexnet_small_splits_too():
    grouped, split = pair("alexnet-small")
    x = torch.rand(4, 1, 28, 28)
    grouped.eval(), split.eval()
    torch.testing.assert_close(split(x), grouped(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(split.embed(x), grouped.embed(x), rtol=1e-5, atol=1e-5)


def test_refuses_what_it_cannot_split():
    with pytest.raises(ValueError, match="two-tower"):
        alexnet.split_towers(alexnet.create_model("alexnet2012", towers=1), ("cpu", "cpu"))
    with pytest.raises(ValueError, match="two-tower"):
        alexnet.split_towers(alexnet.create_model("alexnet-owt"), ("cpu", "cpu"))
    with pytest.raises(ValueError, match="2 devices"):
        alexnet.split_towers(alexnet.create_model("alexnet-small"), ("cpu",))
    with pytest.raises(ValueError, match="expects input"):
        alexnet.split_towers(alexnet.create_model("alexnet-small"), ("cpu", "cpu"))(torch.zeros(1, 3, 28, 28))
