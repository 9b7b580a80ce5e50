"""The training step and the evaluation loop against computations written out in the tests."""

import copy

import torch
import torch.nn.functional as F

from alexnet.data import Normalization, Preset
from alexnet.data.loader import Batch, batch_indices
from alexnet.models import create_model
from alexnet.evaluation import Member, evaluate
from alexnet.training.engine import TrainState, train_one_epoch

CPU = torch.device("cpu")


def small_batches(n_batches=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [Batch(torch.randint(0, 256, (size, 1, 28, 28), generator=g, dtype=torch.uint8),
                  torch.randint(0, 10, (size,), generator=g)) for _ in range(n_batches)]


def test_accumulated_micro_batches_equal_the_whole_batch():
    torch.manual_seed(0)
    model = create_model("alexnet-small", num_classes=10, dropout=0.0)
    preset = Preset(train=True, crop=28, base_size=28, pad=2, norm=Normalization.per_channel([100.0], [80.0]))
    weights = []
    for accum in (1, 4):
        m = copy.deepcopy(model)
        opt = torch.optim.SGD(m.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4)
        state = TrainState()
        train_one_epoch(m, opt, torch.amp.GradScaler("cpu", enabled=False), small_batches(), preset,
                        torch.Generator().manual_seed(0), CPU, state=state, accum_steps=accum)
        assert state.count == 96 and state.step == 3
        weights.append(m.state_dict())
    for k in weights[0]:
        torch.testing.assert_close(weights[0][k], weights[1][k], rtol=1e-5, atol=1e-6)


def test_training_step_is_plain_sgd_on_cross_entropy():
    torch.manual_seed(1)
    model = create_model("lenet5", num_classes=10)
    ref = copy.deepcopy(model)
    preset = Preset(train=False, crop=28, base_size=28, norm=Normalization.per_channel([0.0], [255.0]))
    batch = small_batches(1)[0]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model_train = Preset(train=True, crop=28, base_size=28, norm=preset.norm)  # no pad/flip: identity crops
    train_one_epoch(model, opt, torch.amp.GradScaler("cpu", enabled=False), [batch], model_train,
                    torch.Generator(), CPU, state=TrainState())
    x = batch.images.float() / 255.0
    loss = F.cross_entropy(ref(x), batch.labels)
    loss.backward()
    with torch.no_grad():
        for p in ref.parameters():
            p -= 0.1 * p.grad
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_skipped_files_are_counted_and_empty_batches_pass():
    model = create_model("lenet5", num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    preset = Preset(train=True, crop=28, base_size=28, norm=Normalization.per_channel([0.0], [255.0]))
    empty = Batch(torch.empty(0, 1, 28, 28, dtype=torch.uint8), torch.empty(0, dtype=torch.int64),
                  ["bad.JPEG"])
    state = TrainState()
    train_one_epoch(model, opt, torch.amp.GradScaler("cpu", enabled=False), [empty, *small_batches(1)],
                    preset, torch.Generator(), CPU, state=state)
    assert state.skipped == ["bad.JPEG"] and state.count == 32 and state.step == 2


class FixedLogits(torch.nn.Module):
    """A 'model' whose logits are looked up from the first pixel of each image."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def forward(self, x):
        return self.table[x[:, 0, 0, 0].round().long()]


def test_evaluate_counts_top1_top5_loss_and_averages_ensembles():
    k = 7
    g = torch.Generator().manual_seed(0)
    n = 50
    logits_a, logits_b = torch.randn(n, k, generator=g), torch.randn(n, k, generator=g)
    labels = torch.randint(0, k, (n,), generator=g)
    images = torch.arange(n, dtype=torch.uint8).reshape(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    norm = Normalization.per_channel([0.0])
    preset = Preset(train=False, crop=4, base_size=4, norm=norm)
    members = [Member(FixedLogits(logits_a), preset, name="a"),
               Member(FixedLogits(logits_b), preset, name="b")]
    batches = [Batch(images[i], labels[i]) for i in batch_indices(n, 16, shuffle=False)]
    res = evaluate(members, batches, CPU, k)
    assert [r.name for r in res] == ["a", "b", "ensemble"]
    probs = [logits_a.softmax(1), logits_b.softmax(1)]
    probs.append((probs[0] + probs[1]) / 2)
    for r, p in zip(res, probs):
        top1 = sum(int(p[i].argmax() == labels[i]) for i in range(n))
        top5 = sum(int(labels[i] in p[i].topk(5).indices) for i in range(n))
        nll = -sum(float(p[i, labels[i]].log()) for i in range(n)) / n
        assert (r.count, r.top1, r.top5) == (n, top1, top5)
        assert abs(r.loss - nll) < 1e-5
        assert r.confusion.sum() == n and r.confusion.trace() == top1
        per_class = [None if (labels == c).sum() == 0 else
                     float(((p.argmax(1) == c) & (labels == c)).sum() / (labels == c).sum())
                     for c in range(k)]
        assert r.per_class_accuracy == per_class
