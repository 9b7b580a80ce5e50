"""PaperSGD against the update written out by hand and against torch.optim.SGD; the schedules
against their definitions."""

import copy
import math

import pytest
import torch

from alexnet.optim import PaperSGD
from alexnet.training.schedule import Schedule


def quadratic_grad(w, target):
    return 2 * (w - target)


def test_paper_sgd_matches_the_update_rule_by_hand_across_an_lr_change():
    torch.manual_seed(0)
    target = torch.randn(5)
    w0 = torch.randn(5)
    p = torch.nn.Parameter(w0.clone())
    opt = PaperSGD([p], lr=0.1, momentum=0.9, weight_decay=0.0005)
    w, v = w0.clone().double(), torch.zeros(5, dtype=torch.double)
    lrs = [0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    for lr in lrs:
        opt.param_groups[0]["lr"] = lr
        p.grad = quadratic_grad(p.detach(), target)
        opt.step()
        # v <- 0.9 v - 0.0005 * lr * w - lr * grad;  w <- w + v
        g = quadratic_grad(w, target.double())
        v = 0.9 * v - 0.0005 * lr * w - lr * g
        w = w + v
        torch.testing.assert_close(p.detach().double(), w, rtol=1e-6, atol=1e-6)


def test_paper_sgd_equals_torch_sgd_while_the_lr_is_constant_and_not_after_a_change():
    torch.manual_seed(1)
    target = torch.randn(7)
    a = torch.nn.Parameter(torch.randn(7))
    b = torch.nn.Parameter(a.detach().clone())
    ours = PaperSGD([a], lr=0.05, momentum=0.9, weight_decay=5e-4)
    ref = torch.optim.SGD([b], lr=0.05, momentum=0.9, weight_decay=5e-4)
    for _ in range(10):
        for p, opt in ((a, ours), (b, ref)):
            p.grad = quadratic_grad(p.detach(), target)
            opt.step()
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for opt in (ours, ref):
        opt.param_groups[0]["lr"] = 0.005
    for p, opt in ((a, ours), (b, ref)):
        p.grad = quadratic_grad(p.detach(), target)
        opt.step()
    # torch.optim.SGD rescales the whole velocity by the new lr at once; the paper's rule does not
    assert not torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_paper_sgd_state_round_trips():
    p = torch.nn.Parameter(torch.ones(3))
    opt = PaperSGD([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()
    state = copy.deepcopy(opt.state_dict())  # as if saved to disk and read back
    q = torch.nn.Parameter(p.detach().clone())
    opt2 = PaperSGD([q], lr=0.1)
    opt2.load_state_dict(state)
    for x, o in ((p, opt), (q, opt2)):
        x.grad = torch.full((3,), 0.5)
        o.step()
    torch.testing.assert_close(p, q)
    with pytest.raises(ValueError):
        PaperSGD([p], lr=-1.0)


def make_schedule(kind, **kw):
    """A schedule over an optimizer whose base lr is 0.01; every setting given (the schedule has no
    defaults of its own), those the test does not care about at values it does not use."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    settings = {"epochs": 90, "steps_per_epoch": 10, "factor": 0.1, "patience": 5, "max_drops": 3,
                "threshold": 0.0, "step_size": 30, "warmup_epochs": 0}
    return Schedule(kind, opt, **{**settings, **kw})


def test_plateau_drops_exactly_when_and_as_often_as_specified():
    s = make_schedule("plateau", patience=2, max_drops=3, factor=0.1)
    errors = [50, 40, 41, 39, 39.5, 39.2, 38, 38, 38, 38, 38, 38, 38, 38, 38, 38]
    drops = []
    for epoch, err in enumerate(errors, start=1):
        if s.after_epoch(epoch, err):
            drops.append(epoch)
    # epochs 3 (41) and 4 (39) : 39 improves on 40 -> no drop; 5, 6 bad -> drop at 6;
    # 7 improves (38); 8, 9 bad -> drop at 9; 10, 11 bad -> drop at 11; then capped at three drops
    assert drops == [6, 9, 11]
    assert s.lr == pytest.approx(0.01 * 0.1 ** 3)
    assert s.drops == 3


def test_plateau_threshold_counts_small_gains_as_no_improvement():
    s = make_schedule("plateau", patience=1, threshold=0.5)
    assert not s.after_epoch(1, 30.0)
    assert s.after_epoch(2, 29.8)  # better by 0.2 < 0.5 points: a bad epoch, patience 1 -> drop
    assert s.lr == pytest.approx(0.001)


def test_step_and_cosine_and_resume():
    s = make_schedule("step", step_size=30, factor=0.1)
    lrs = []
    for epoch in range(1, 91):
        s.after_epoch(epoch, None)
        lrs.append(s.lr)
    assert lrs[28] == pytest.approx(0.01) and lrs[29] == pytest.approx(0.001)
    assert lrs[59] == pytest.approx(1e-4)
    c = make_schedule("cosine", epochs=2, steps_per_epoch=10, warmup_epochs=1)
    seen = [c.lr]
    for _ in range(20):
        c.after_step()
        seen.append(c.lr)
    assert seen[0] == pytest.approx(0.01 / 11) and seen[9] == pytest.approx(0.01 * 10 / 11)
    assert seen[10] == pytest.approx(0.01)
    assert seen[15] == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 5 / 10)))
    assert seen[20] == pytest.approx(0.0, abs=1e-12)
    d = make_schedule("cosine", epochs=2, steps_per_epoch=10, warmup_epochs=1)
    state = {**c.state_dict(), "steps": 13}
    d.load_state_dict(state)
    assert d.lr == pytest.approx(seen[13])
