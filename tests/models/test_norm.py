from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from lpsctl.errors import ConfigError
from lpsctl.models.norm import ABN, ABNSync, active_norm_name, convert_sync_norm, iabn_available, make_norm

STATE_KEYS = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]  # inplace_abn 1.1.0's ABN


def randomised(norm: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    channels = norm.num_features
    with torch.no_grad():
        norm.weight.copy_(torch.randn(channels, generator=generator))  # some negative: exercises |weight|
        norm.bias.copy_(torch.randn(channels, generator=generator))
        norm.running_mean.copy_(torch.randn(channels, generator=generator))
        norm.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
    return norm


def reference(x: torch.Tensor, norm: ABN, training: bool) -> torch.Tensor:
    """Batch norm with InPlaceABN's scale |w| + eps, then the activation, written out by hand."""
    if training:
        mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
    else:
        mean, var = norm.running_mean, norm.running_var
    scale = norm.weight.abs() + norm.eps
    y = (x - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + norm.eps) * scale.view(1, -1, 1, 1)
    y = y + norm.bias.view(1, -1, 1, 1)
    return F.leaky_relu(y, norm.activation_param) if norm.activation == "leaky_relu" else y


def test_state_dict_keys_match_inplace_abn():
    assert list(ABN(8).state_dict()) == STATE_KEYS
    assert list(ABNSync(8).state_dict()) == STATE_KEYS
    assert list(ABN(8, affine=False).state_dict()) == STATE_KEYS[2:]


@pytest.mark.parametrize("activation", ["leaky_relu", "identity"])
@pytest.mark.parametrize("training", [True, False])
def test_abn_arithmetic(activation: str, training: bool):
    norm = randomised(ABN(6, eps=1e-3, momentum=0.05, activation=activation)).train(training)
    x = torch.randn(3, 6, 5, 7) * 2 + 1
    expected = reference(x, norm, training)
    before = norm.running_mean.clone()
    assert torch.allclose(norm(x), expected, atol=1e-5)
    if training:
        assert torch.allclose(norm.running_mean, 0.95 * before + 0.05 * x.mean(dim=(0, 2, 3)), atol=1e-6)
        assert int(norm.num_batches_tracked) == 1
    else:
        assert torch.equal(norm.running_mean, before)


def test_old_checkpoint_without_counter_loads():
    state = randomised(ABN(4)).state_dict()
    del state["num_batches_tracked"]
    state._metadata = {"": {"version": 1}}  # type: ignore[attr-defined]
    loaded = ABN(4)
    loaded.load_state_dict(state)
    assert torch.equal(loaded.running_var, state["running_var"])


def test_bad_activation_is_rejected():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        ABN(4, activation="swish")


def test_bf16_autocast_and_channels_last():
    conv = nn.Conv2d(3, 8, 3, padding=1).to(memory_format=torch.channels_last)
    norm = ABN(8)
    x = torch.randn(2, 3, 16, 16).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = norm(conv(x))
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    y.float().sum().backward()
    assert conv.weight.grad is not None and torch.isfinite(norm.weight.grad).all()


def test_factory_and_names():
    assert make_norm("torch") is ABN
    assert active_norm_name("torch") == "torch"
    assert active_norm_name("auto") == ("iabn" if iabn_available() else "torch")
    with pytest.raises(ConfigError, match="unknown norm kind 'fast'; expected one of auto, iabn, torch"):
        make_norm("fast")


@pytest.mark.skipif(iabn_available(), reason="inplace_abn is installed")
def test_iabn_requested_without_extension():
    assert make_norm("auto") is ABN
    with pytest.raises(ConfigError, match="inplace_abn is not installed.*model.norm=torch"):
        make_norm("iabn")


def test_convert_sync_keeps_tensors_and_behaviour():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), randomised(ABN(4, activation="identity")), nn.Sequential(ABN(4)))
    model.eval()
    x = torch.randn(2, 3, 6, 6)
    expected = model(x)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    weight = model[1].weight
    converted = convert_sync_norm(model)
    assert type(converted[1]) is ABNSync and type(converted[2][0]) is ABNSync
    assert converted[1].weight is weight and converted[1].activation == "identity" and not converted[1].training
    assert list(converted.state_dict()) == list(state)
    assert all(torch.equal(converted.state_dict()[key], value) for key, value in state.items())
    assert torch.allclose(converted(x), expected)
    assert type(convert_sync_norm(ABN(4))) is ABNSync  # a bare norm as root is replaced too


def _sync_worker(rank: int, init_file: str, x: torch.Tensor, result_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    norm = randomised(ABNSync(5, momentum=0.3)).train()
    part = x[rank * 2 : rank * 2 + 2 + rank].clone().requires_grad_()  # unequal batch sizes: 2 and 3 images
    output = norm(part)
    (output * torch.arange(output.numel()).view_as(output).sin()).sum().backward()
    torch.save({"output": output.detach(), "grad": part.grad, "state": norm.state_dict()}, f"{result_dir}/{rank}.pt")
    dist.destroy_process_group()


def test_abn_sync_matches_abn_on_the_whole_batch(tmp_path: Path):
    x = torch.randn(5, 5, 4, 3) * 3 + 2
    mp.spawn(_sync_worker, args=(str(tmp_path / "init"), x, str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"{rank}.pt") for rank in (0, 1)]

    norm = randomised(ABN(5, momentum=0.3)).train()
    whole = x.clone().requires_grad_()
    output = norm(whole)
    parts = [output[:2], output[2:]]
    sum(((p * torch.arange(p.numel()).view_as(p).sin()).sum() for p in parts), torch.zeros(())).backward()
    assert torch.allclose(torch.cat([r["output"] for r in results]), output.detach(), atol=1e-5)
    assert torch.allclose(torch.cat([r["grad"] for r in results]), whole.grad, atol=1e-5)
    for key in ("running_mean", "running_var"):
        assert torch.allclose(results[0]["state"][key], norm.state_dict()[key], atol=1e-5)


needs_iabn = pytest.mark.skipif(not iabn_available(), reason="inplace_abn is not installed")


@needs_iabn
def test_auto_picks_inplace_abn():
    from inplace_abn import InPlaceABN, InPlaceABNSync

    assert make_norm("auto") is InPlaceABN and make_norm("iabn") is InPlaceABN
    assert active_norm_name("iabn") == "iabn"
    converted = convert_sync_norm(nn.Sequential(InPlaceABN(4, activation="identity")))
    assert type(converted[0]) is InPlaceABNSync and converted[0].activation == "identity"


@needs_iabn
@pytest.mark.parametrize("activation", ["leaky_relu", "identity"])
@pytest.mark.parametrize("training", [True, False])
def test_abn_matches_inplace_abn(activation: str, training: bool):
    from inplace_abn import InPlaceABN

    ours = randomised(ABN(6, eps=1e-3, momentum=0.05, activation=activation)).train(training)
    theirs = InPlaceABN(6, eps=1e-3, momentum=0.05, activation=activation).train(training)
    theirs.load_state_dict(ours.state_dict())  # and back, below: checkpoints are interchangeable
    x = torch.randn(3, 6, 5, 7) * 2 + 1
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ours, y_theirs = ours(x_ours), theirs(x_theirs.clone())  # InPlaceABN overwrites its input
    upstream = torch.randn_like(y_ours)
    y_ours.backward(upstream)
    y_theirs.backward(upstream)
    assert torch.allclose(y_ours, y_theirs, atol=5e-5)
    assert torch.allclose(x_ours.grad, x_theirs.grad, atol=5e-5)
    assert torch.allclose(ours.weight.grad, theirs.weight.grad, atol=5e-5)
    assert torch.allclose(ours.bias.grad, theirs.bias.grad, atol=5e-5)
    reloaded = ABN(6, eps=1e-3, momentum=0.05, activation=activation)
    reloaded.load_state_dict(theirs.state_dict())
    for key, value in ours.state_dict().items():
        assert torch.allclose(reloaded.state_dict()[key], value, atol=1e-6), key
