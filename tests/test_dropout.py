"""The paper's dropout (section 4.2) against its description written out, beside PyTorch's inverted form."""

import pytest
import torch
from torch import nn

import alexnet
from alexnet.models import ModelError
from alexnet.models.dropout import PaperDropout


def test_paper_dropout_is_the_papers():
    """Training: each unit is zeroed with probability 0.5, the kept ones unchanged (not doubled);
    test: every output multiplied by 0.5."""
    x = torch.rand(200, 1000) + 0.5
    layer = PaperDropout(0.5)
    y = layer.train()(x)
    kept = y != 0
    assert torch.equal(y[kept], x[kept])  # no rescaling
    assert abs(kept.float().mean().item() - 0.5) < 0.01  # 200,000 draws: 0.5 +- 0.0011 (1 sd)
    torch.testing.assert_close(layer.eval()(x), 0.5 * x, rtol=0, atol=0)
    inverted = nn.Dropout(0.5).train()(x)
    assert torch.equal(inverted[inverted != 0], 2 * x[inverted != 0])  # PyTorch's form, for contrast


def test_paper_form_at_test_time_is_the_inverted_form_with_halved_weights():
    """With dropout 0.5 after fc6 and fc7, the paper's test-time x0.5 equals halving the weights of fc7
    and fc8 in the inverted form (whose test time is the identity)."""
    torch.manual_seed(0)
    paper = alexnet.create_model("alexnet-small", dropout_form="paper").eval()
    inverted = alexnet.create_model("alexnet-small").eval()
    inverted.load_state_dict(paper.state_dict())
    with torch.no_grad():
        inverted.classifier.fc7.weight.mul_(0.5)
        inverted.classifier.fc8.weight.mul_(0.5)
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(paper(x), inverted(x), rtol=1e-5, atol=1e-6)
    assert isinstance(paper.classifier.drop6, PaperDropout) and type(inverted.classifier.drop6) is nn.Dropout


def test_split_towers_draws_the_same_paper_masks():
    torch.manual_seed(0)
    grouped = alexnet.create_model("alexnet-small", dropout_form="paper")
    split = alexnet.split_towers(grouped, ("cpu", "cpu"))
    x = torch.rand(4, 1, 28, 28)
    outs = []
    for model in (grouped, split):
        torch.manual_seed(7)
        outs.append(model(x))
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)


def test_bad_form_is_refused():
    with pytest.raises(ModelError, match="dropout_form"):
        alexnet.create_model("alexnet2012", dropout_form="caffe")
