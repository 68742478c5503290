import pytest
import torch
import torch.nn.functional as F

from lpsctl.losses.semantic import ohem_cross_entropy


def sorted_reference(logits: torch.Tensor, target: torch.Tensor, fraction: float) -> torch.Tensor:
    """Hardest `fraction` of the valid pixels by a full descending sort, pixel by pixel."""
    losses = []
    for b, y, x in (target != 255).nonzero().tolist():
        losses.append(F.cross_entropy(logits[b, :, y, x][None], target[b, y, x][None]))
    ranked = torch.stack(losses).sort(descending=True).values
    return ranked[: max(1, int(len(losses) * fraction))].mean()


def random_problem(seed: int = 0, ignored: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 5, 6, 8, generator=generator) * 3
    target = torch.randint(0, 5, (2, 6, 8), generator=generator)
    target[torch.rand(2, 6, 8, generator=generator) < ignored] = 255
    return logits, target


@pytest.mark.parametrize("fraction", [0.25, 0.5, 1.0])
def test_keeps_the_hardest_fraction(fraction: float):
    logits, target = random_problem()
    loss = ohem_cross_entropy(logits, target, fraction=fraction)
    assert torch.allclose(loss, sorted_reference(logits, target, fraction), atol=1e-6)
    if fraction == 1.0:
        assert torch.allclose(loss, F.cross_entropy(logits, target, ignore_index=255), atol=1e-6)
    else:
        assert loss > F.cross_entropy(logits, target, ignore_index=255)


def test_ignored_pixels_do_not_count():
    logits, target = random_problem()
    logits.requires_grad_(True)
    loss = ohem_cross_entropy(logits, target)
    loss.backward()
    ignored = target == 255
    assert ignored.any()
    assert (logits.grad.permute(0, 2, 3, 1)[ignored] == 0).all()
    changed = logits.detach().clone()
    changed.permute(0, 2, 3, 1)[ignored] = 100.0
    assert torch.equal(ohem_cross_entropy(changed, target), loss.detach())


def test_only_kept_pixels_get_gradient():
    logits, target = random_problem(seed=1, ignored=0.0)
    logits.requires_grad_(True)
    ohem_cross_entropy(logits, target, fraction=0.25).backward()
    pixels_with_gradient = int((logits.grad.abs().sum(dim=1) > 0).sum())
    assert pixels_with_gradient == target.numel() // 4


def test_at_least_one_pixel():
    logits, _ = random_problem()
    target = torch.full((2, 6, 8), 255)
    target[1, 2, 3] = 4
    expected = F.cross_entropy(logits[1, :, 2, 3][None], target[1, 2, 3][None])
    assert torch.allclose(ohem_cross_entropy(logits, target, fraction=0.25), expected)


@pytest.mark.parametrize("shape", [(2, 5, 6, 8), (0, 5, 6, 8)])
def test_no_valid_pixel_gives_a_connected_zero(shape: tuple[int, ...]):
    logits = torch.randn(*shape, requires_grad=True)
    loss = ohem_cross_entropy(logits, torch.full((shape[0], *shape[2:]), 255))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert logits.grad is not None and (logits.grad == 0).all()


def test_bf16_logits_give_a_float32_loss():
    logits, target = random_problem()
    loss = ohem_cross_entropy(logits.bfloat16(), target)
    assert loss.dtype == torch.float32
    assert torch.allclose(loss, ohem_cross_entropy(logits.bfloat16().float(), target))


def test_bad_inputs():
    logits, target = random_problem()
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\], got 0"):
        ohem_cross_entropy(logits, target, fraction=0.0)
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\], got 1.5"):
        ohem_cross_entropy(logits, target, fraction=1.5)
    with pytest.raises(ValueError, match=r"got \(2, 5, 6, 8\) and \(2, 6, 7\)"):
        ohem_cross_entropy(logits, target[:, :, :7])
    with pytest.raises(ValueError, match="integer class ids, got dtype torch.float32"):
        ohem_cross_entropy(logits, target.float())
