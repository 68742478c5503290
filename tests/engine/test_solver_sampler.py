import time
from dataclasses import replace

import pytest
import torch
from torch import nn

from lpsctl.config import SolverConfig
from lpsctl.engine.sampler import PositionDataset, ResumableSampler
from lpsctl.engine.solver import build_optimizer, build_scheduler, lr_factor, scaled_lr


def test_warmup_then_steps():
    cfg = SolverConfig(warmup_iters=10, warmup_factor=0.1, steps=(20, 30), gamma=0.1, max_iters=40)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(5, cfg) == pytest.approx(0.55)
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(20, cfg) == pytest.approx(0.1)
    assert lr_factor(35, cfg) == pytest.approx(0.01)


def test_poly_schedule_reaches_zero():
    cfg = SolverConfig(warmup_iters=0, schedule="poly", max_iters=100, poly_power=0.9)
    assert lr_factor(0, cfg) == 1.0
    assert lr_factor(50, cfg) == pytest.approx(0.5**0.9)
    assert lr_factor(100, cfg) == 0.0


def test_schedule_follows_the_time_budget_when_it_is_further_on():
    poly = SolverConfig(warmup_iters=10, warmup_factor=0.1, schedule="poly", max_iters=100, poly_power=0.9)
    assert lr_factor(20, poly, time_spent=0.5) == pytest.approx(lr_factor(50, poly))
    assert lr_factor(80, poly, time_spent=0.5) == pytest.approx(lr_factor(80, poly))  # iterations ahead of time
    assert lr_factor(30, poly, time_spent=1.2) == 0.0  # a spent budget: the schedule's end
    assert lr_factor(5, poly, time_spent=0.5) == pytest.approx(lr_factor(50, poly) * 0.55)  # warm-up by iteration
    step = SolverConfig(warmup_iters=0, steps=(60, 90), gamma=0.1, max_iters=100)
    assert lr_factor(10, step, time_spent=0.7) == pytest.approx(0.1)
    spent = [0.0]
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0)
    scheduler = build_scheduler(optimizer, poly, lambda: spent[0])
    spent[0] = 0.5
    optimizer.step()
    scheduler.step()
    assert scheduler.get_last_lr()[0] == pytest.approx(lr_factor(1, poly, time_spent=0.5))


def test_time_budget_share_is_measured_from_its_start():
    from lpsctl.engine.distributed import DistInfo
    from lpsctl.engine.train import TimeBudget

    single = DistInfo()
    assert TimeBudget(0.0).update(single) == 0.0  # no budget: the schedule runs on iterations alone
    budget = TimeBudget(10.0, start=time.monotonic() - 5.0)
    assert 0.5 <= budget.update(single) < 0.6 and budget.spent == pytest.approx(0.5, abs=0.1)


def test_linear_scaling_and_the_decay_of_norm_parameters():
    """By default every parameter decays (mmdet 1.x, the official recipes); norm_weight_decay sets norms and biases."""
    cfg = SolverConfig(lr=0.08, lr_reference_batch=16, weight_decay=1e-4)
    assert scaled_lr(cfg, 4) == pytest.approx(0.02)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    decayed, norms = build_optimizer(model, cfg, total_batch=4).param_groups
    assert len(decayed["params"]) == 1 and decayed["weight_decay"] == 1e-4
    assert len(norms["params"]) == 3 and norms["weight_decay"] == 1e-4
    optimizer = build_optimizer(model, replace(cfg, norm_weight_decay=0.0), total_batch=4)
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 1e-4 and len(plain["params"]) == 3 and plain["weight_decay"] == 0.0
    scheduler = build_scheduler(optimizer, cfg)
    assert scheduler.get_last_lr()[0] == pytest.approx(0.02 * cfg.warmup_factor)


def test_sampler_positions_split_global_batches_between_ranks():
    def take(sampler, n):
        iterator = iter(sampler)
        return [next(iterator) for _ in range(n)]

    assert take(ResumableSampler(batch_size=2), 6) == [0, 1, 2, 3, 4, 5]
    assert take(ResumableSampler(batch_size=2, world_size=2, rank=1), 4) == [2, 3, 6, 7]
    assert take(ResumableSampler(batch_size=2, start_iteration=3), 2) == [6, 7]


class _Items:
    def __len__(self):
        return 5

    def load(self, index, seed):
        return index, seed


def test_position_dataset_is_a_permutation_per_epoch_and_deterministic():
    data = PositionDataset(_Items(), seed=3)
    epoch0 = [data[p][0] for p in range(5)]
    epoch1 = [data[p][0] for p in range(5, 10)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(5))
    assert len({tuple(data[p][0] for p in range(5 * e, 5 * e + 5)) for e in range(4)}) > 1
    again = PositionDataset(_Items(), seed=3)
    assert [again[p] for p in range(12)] == [data[p] for p in range(12)]
    assert len({data[p][1] for p in range(12)}) == 12
    torch.manual_seed(0)  # the order must not depend on the global RNG
    assert [PositionDataset(_Items(), seed=3)[p] for p in range(12)] == [data[p] for p in range(12)]
