"""What makes a run the same on 1, 2 or 4 processes, checked in one process: each step's images, their
augmentation draws, their dropout masks and the step's gradient, for every rank, against the one-process
step written out here."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from alexnet.data import build_source
from alexnet.data.loader import Batch, epoch_order, train_steps
from alexnet.data.transforms import Lighting, Normalization, Preset
from alexnet.distributed import Dist
from alexnet.errors import UserError
from alexnet.models import create_model
from alexnet.models.dropout import InvertedDropout, PaperDropout, batch_shard, shardable_dropout
from alexnet.training.engine import TrainState, train_one_epoch
from alexnet.training.trainer import Trainer


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("accum", [1, 2])
def test_every_rank_takes_its_rows_of_the_same_global_steps(world, accum):
    n, batch = 103, 16  # a last step of 7 images: with 4 processes and 2 micro-batches some parts are empty
    order = epoch_order(n, shuffle=True, seed=5, epoch=2)
    expected = list(torch.split(order, batch))  # the one-process steps: consecutive slices of the order
    ranks = [train_steps(n, batch, seed=5, epoch=2, rank=r, world=world, accum_steps=accum)
             for r in range(world)]
    assert all(len(steps) == len(expected) for steps in ranks)  # every process runs every step
    for k, step in enumerate(expected):
        rebuilt = torch.full((len(step),), -1)
        for steps in ranks:
            idx, plan = steps[k]
            assert plan.total == len(step)
            assert (plan.rows[1:] > plan.rows[:-1]).all()  # ascending: each micro-batch a contiguous slice
            rebuilt[plan.rows] = idx
            # each micro-batch of the step is cut into `world` parts; this rank's part of each
            for (a, b, rows, total), (start, end) in zip(plan.pieces(), plan.bounds):
                assert total == end - start and torch.equal(plan.rows[a:b] - start, rows)
        assert torch.equal(rebuilt, step)  # each image once, at its one-process position


def _preset(resized: bool) -> Preset:
    light = Lighting(eigval=torch.tensor([0.2, 0.02, 0.005]), eigvec=torch.linalg.qr(torch.randn(3, 3))[0],
                     std=0.1)
    return Preset(train=True, crop=24, base_size=32, norm=Normalization.per_channel((120.0, 110.0, 100.0)),
                  flip=True, lighting=light, resized=resized)


@pytest.mark.parametrize("resized", [False, True])
def test_augmentation_of_a_rank_is_its_rows_of_the_whole_batch(resized):
    preset = _preset(resized)
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    whole = preset(images, torch.Generator().manual_seed(3))  # one process: the whole global batch
    for rows in (torch.tensor([0, 1, 2, 3, 4]), torch.tensor([5, 6, 7, 8, 9]), torch.tensor([2, 7])):
        part = preset(images[rows], torch.Generator().manual_seed(3), rows=rows, total=10)
        torch.testing.assert_close(part, whole[rows], rtol=0, atol=0)


@pytest.mark.parametrize("layer", [InvertedDropout(0.5), PaperDropout(0.5)])
def test_dropout_masks_of_a_rank_are_its_rows_of_the_whole_batch(layer):
    x = torch.rand(8, 64) + 0.5  # no zeros: a zero output is a dropped unit
    torch.manual_seed(11)
    with batch_shard(torch.arange(8), 8):
        whole = layer(x)
    torch.manual_seed(11)
    plain = layer(x)  # outside batch_shard: PyTorch's own dropout (the one-process run)
    torch.testing.assert_close(plain, whole, rtol=0, atol=0)
    kept = (whole != 0).float().mean().item()
    assert 0.35 < kept < 0.65  # p = 0.5
    scale = 2.0 if isinstance(layer, InvertedDropout) else 1.0
    torch.testing.assert_close(whole[whole != 0], (x * scale)[whole != 0])
    rows = torch.tensor([1, 4, 6])
    torch.manual_seed(11)
    with batch_shard(rows, 8):
        part = layer(x[rows])
    torch.testing.assert_close(part, whole[rows], rtol=0, atol=0)


def test_shardable_dropout_swaps_nn_dropout_and_keeps_the_state_dict():
    net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.3), nn.Sequential(nn.Dropout(0.1)), PaperDropout(0.5))
    keys = list(net.state_dict())
    shardable_dropout(net)
    assert [type(m) for m in (net[1], net[2][0], net[3])] == [InvertedDropout, InvertedDropout, PaperDropout]
    assert (net[1].p, net[2][0].p) == (0.3, 0.1) and list(net.state_dict()) == keys


class _KeepGradients(torch.optim.Optimizer):
    """An optimizer whose step adds up the gradients it is given and changes no weight."""

    def __init__(self, params):
        params = list(params)
        super().__init__(params, {})
        self.sum = [torch.zeros_like(p) for p in params]

    def step(self, closure=None):
        for total, p in zip(self.sum, self.param_groups[0]["params"]):
            total += p.grad


@pytest.mark.parametrize("world, accum", [(1, 2), (2, 1), (3, 1), (4, 2)])
def test_the_step_gradient_is_the_global_batch_mean_on_any_number_of_ranks(world, accum):
    """Each rank's loss weighted by its share of the step times ``world``, then averaged over the ranks
    as DDP does, is the gradient of the mean loss over the whole global batch, with its draws."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 16), nn.ReLU(), InvertedDropout(0.5),
                        nn.Linear(16, 3))
    norm = Normalization.per_channel((100.0,) * 3, (60.0,) * 3)
    preset = Preset(train=True, crop=4, base_size=6, norm=norm, flip=True)
    images = torch.randint(0, 256, (11, 3, 6, 6), dtype=torch.uint8)
    labels = torch.randint(0, 3, (11,))
    (order, _), = train_steps(11, 11, seed=0, epoch=0)

    # the one-process step written out: mean cross-entropy over the 11 images of the step
    torch.manual_seed(7)
    with batch_shard(torch.arange(11), 11):
        x = preset(images[order], torch.Generator().manual_seed(1))
        nn.functional.cross_entropy(net(x), labels[order]).backward()
    reference = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()

    averaged = [torch.zeros_like(p) for p in net.parameters()]
    for rank in range(world):
        (idx, plan), = train_steps(11, 11, seed=0, epoch=0, rank=rank, world=world, accum_steps=accum)
        keep = _KeepGradients(net.parameters())
        torch.manual_seed(7)  # every rank: the same seeds, as the trainer sets them
        train_one_epoch(net, keep, torch.amp.GradScaler("cpu", enabled=False),
                        [Batch(images[idx], labels[idx], plan=plan)], preset,
                        torch.Generator().manual_seed(1), torch.device("cpu"), state=TrainState(),
                        accum_steps=accum, world=world, shard=True)
        for total, g in zip(averaged, keep.sum):
            total += g / world  # DDP: the mean over the ranks
    for got, want in zip(averaged, reference):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_batch_norm_over_processes_is_said_and_its_last_step_checked():
    """On the CPU each process normalizes by its own part of the batch: the run log says so (the returned
    note); a last step too small for every part to hold 2 images is refused before training."""
    source = build_source("digits")  # 1,078 training images
    cfg = SimpleNamespace(batch_size=64, accum_steps=1, tower_devices="")
    trainer = SimpleNamespace(dist=Dist(world=2), model=create_model("nnott-lenet", num_classes=10),
                              source=source, cfg=cfg)
    note = Trainer._batch_norm(trainer, torch.device("cpu"))
    assert "per process" in note and "2 processes" in note
    trainer.cfg.batch_size = 1075  # a last step of 3 images for 2 processes: a part of 1
    with pytest.raises(UserError, match="holds 3 image"):
        Trainer._batch_norm(trainer, torch.device("cpu"))
    trainer.dist = Dist(world=1)
    assert Trainer._batch_norm(trainer, torch.device("cpu")) is None  # one process: nothing to say
    trainer.dist, trainer.model = Dist(world=2), create_model("lenet5", num_classes=10)
    assert Trainer._batch_norm(trainer, torch.device("cpu")) is None  # no batch norm
