"""The mtp head's three loss paths agree (reference, one graph, sequential backward), gradients included."""

import pytest
import torch
from torch import nn

from zoo_core.errors import UserError
from zoo_core.testing.build import rel_err
from zoo_mtp.head import MTPConfig, MTPHead, shift_targets
from zoo_mtp.reference import mtp_loss_reference

D, V, B, T = 16, 48, 2, 9


def make_head(tied: bool, **kw):
    torch.manual_seed(0)
    embed = nn.Embedding(V, D).double() if tied else None
    head = MTPHead(D, V, embed, MTPConfig(**kw)).double()
    for m in reversed(list(head.modules())):  # as LanguageModel.init_weights does
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    with torch.no_grad():  # non-trivial norm gains, so their gradients are checked too
        for name, p in head.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return head, embed


def batch():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(B, T, D, generator=g, dtype=torch.float64)
    targets = torch.randint(0, V, (B, T), generator=g)
    targets[0, 3] = -100  # an ignored target in the middle: every head that would predict it skips it
    targets[1, -2:] = -100
    return h, targets


def grads(head, embed, h):
    params = list(head.parameters()) + ([embed.weight] if embed is not None else [])
    return [h.grad.clone()] + [p.grad.clone() for p in params]


@pytest.mark.parametrize("form", ["independent", "block"])
@pytest.mark.parametrize("tied", [True, False])
def test_reference_one_graph_and_sequential_agree(form, tied):
    weights = [1.0, 0.5, 0.25]
    head, embed = make_head(tied, n_heads=3, form=form, weights=weights)
    head.train()
    h0, targets = batch()

    h = h0.clone().requires_grad_()
    ref = mtp_loss_reference(h, targets, [lambda z, k=k: head.head_logits(z, k) for k in range(3)], weights)
    ref.backward()
    g_ref = grads(head, embed, h)
    head.zero_grad(), embed is not None and embed.zero_grad()

    h = h0.clone().requires_grad_()
    out = head(h, targets)
    out.loss.backward()
    g_one = grads(head, embed, h)
    head.zero_grad(), embed is not None and embed.zero_grad()

    h = h0.clone().requires_grad_()
    scale = 3.0  # the loop's n_tokens x world / global_count
    seq = head.forward_backward(h, targets, scale)
    g_seq = [g / scale for g in grads(head, embed, h)]

    assert out.n_tokens == seq.n_tokens == int((targets != -100).sum())
    assert abs(float(out.loss) - float(ref)) < 1e-12 and abs(float(seq.loss) - float(ref)) < 1e-12
    # The core's RMSNorm (inside the block form's heads) computes in fp32 even for fp64 inputs.
    tol = 1e-10 if form == "independent" else 1e-6
    for a, b, c in zip(g_ref, g_one, g_seq):
        assert rel_err(b, a) < tol and rel_err(c, a) < tol
    for k in (1, 2, 3):
        assert abs(float(out.metrics[f"loss_head{k}"]) - float(seq.metrics[f"loss_head{k}"])) < 1e-12


def test_head_k_targets_are_the_batch_shifted_left():
    targets = torch.tensor([[10, 11, 12, 13, -100, 15]])
    assert shift_targets(targets, 0).tolist() == [[10, 11, 12, 13, -100, 15]]
    assert shift_targets(targets, 2).tolist() == [[12, 13, -100, 15, -100, -100]]


def test_eval_mode_is_the_next_token_loss_of_head_1():
    head, _ = make_head(True, n_heads=4)
    h, targets = batch()
    head.eval()
    out = head(h, targets)
    expected = nn.functional.cross_entropy(head.logits(h).reshape(-1, V), targets.reshape(-1), ignore_index=-100)
    assert abs(float(out.loss) - float(expected)) < 1e-12 and out.n_tokens == int((targets != -100).sum())
    head.train()
    assert float(head(h, targets).loss) > float(out.loss)  # training adds heads 2..4


def test_one_head_is_plain_cross_entropy():
    head, _ = make_head(False, n_heads=1)
    h, targets = batch()
    expected = nn.functional.cross_entropy(head.logits(h).reshape(-1, V), targets.reshape(-1), ignore_index=-100)
    assert abs(float(head.train()(h, targets).loss) - float(expected)) < 1e-12


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"n_heads": 3, "weights": [1.0, 1.0]}, "weights has 2 entries but n_heads=3"),
        ({"form": "transformer"}, "model.loss.form=transformer is not one of independent, block"),
        ({"n_heads": 0}, "at least 1 head"),
        ({"n_heads": 2, "weights": [0.0, 1.0]}, "head 1's > 0"),
    ],
)
def test_bad_config_is_one_clear_line(kw, message):
    with pytest.raises(UserError, match=message) as err:
        MTPHead(D, V, None, MTPConfig(**kw))
    assert "\n" not in str(err.value)
