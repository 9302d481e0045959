"""FusedAdam: torch.optim.Adam(fused=True)'s updates, bit for bit, without importing dynamo."""

import subprocess
import sys

import pytest
import torch

from relrec.train.optimizer import FusedAdam, adam


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Flatten(),
                               torch.nn.Linear(16, 4))


def _steps(model, optimizer, count, seed, learning_rates=None):
    generator = torch.Generator().manual_seed(seed)
    for step in range(count):
        if learning_rates:
            for group in optimizer.param_groups:
                group["lr"] = learning_rates[step]
        rows = torch.randint(0, 50, (32, 2), generator=generator)
        loss = model(rows).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_same_bits_as_torch_fused_adam_through_a_schedule(weight_decay):
    ours, theirs = _model(0), _model(0)
    rates = [3e-2 * (1 - step / 8) for step in range(8)]
    _steps(ours, FusedAdam(ours.parameters(), lr=3e-2, weight_decay=weight_decay), 8, 1, rates)
    _steps(theirs, torch.optim.Adam(theirs.parameters(), lr=3e-2, weight_decay=weight_decay,
                                    fused=True), 8, 1, rates)
    for mine, reference in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(mine, reference)


def test_state_dict_round_trip_continues_the_same_path():
    straight, resumed = _model(2), _model(2)
    optimizer = FusedAdam(straight.parameters(), lr=1e-2)
    _steps(straight, optimizer, 6, 3)
    first = FusedAdam(resumed.parameters(), lr=1e-2)
    _steps(resumed, first, 3, 3)
    saved = first.state_dict()
    assert set(saved["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    assert float(saved["state"][0]["step"]) == 3.0
    second = FusedAdam(resumed.parameters(), lr=5.0)  # the saved rate wins
    second.load_state_dict(saved)
    assert second.param_groups[0]["lr"] == 1e-2
    # the remaining three steps draw what the straight run drew for its steps 4-6
    generator = torch.Generator().manual_seed(3)
    for _ in range(3):
        torch.randint(0, 50, (32, 2), generator=generator)
    for _ in range(3):
        rows = torch.randint(0, 50, (32, 2), generator=generator)
        loss = resumed(rows).pow(2).mean()
        second.zero_grad()
        loss.backward()
        second.step()
    for mine, reference in zip(resumed.parameters(), straight.parameters()):
        assert torch.equal(mine, reference)
    with pytest.raises(ValueError, match="parameters"):
        FusedAdam(list(resumed.parameters())[:1]).load_state_dict(saved)


def test_training_imports_no_compiler():
    """The point of FusedAdam: a training process never loads torch._dynamo."""
    code = ("import sys, torch\n"
            "from relrec.config import TrainConfig\n"
            "from relrec.model.tower import ItemTower\n"
            "from relrec.train.trainer import Trainer, build_tower_config, reproducible_torch\n"
            "config = TrainConfig()\n"
            "tower = ItemTower(build_tower_config(20, config))\n"
            "with reproducible_torch(config, torch.device('cpu')):\n"
            "    optimizer = Trainer(config, 'unused', progress=False)._optimizer(tower)\n"
            "    tower(torch.arange(4)).sum().backward()\n"
            "    optimizer.step()\n"
            "    assert torch.are_deterministic_algorithms_enabled()\n"
            "print(type(optimizer.optimizers[0]).__name__, 'torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["FusedAdam", "False"]


def test_adam_falls_back_where_there_is_no_fused_kernel(monkeypatch):
    parameter = torch.nn.Parameter(torch.zeros(3))
    assert isinstance(adam([parameter], lr=0.1), FusedAdam)
    monkeypatch.delattr(torch, "_fused_adam_")
    assert isinstance(adam([parameter], lr=0.1), torch.optim.Adam)


def test_state_of_an_adam_variant_is_refused():
    model = _model(4)
    theirs = torch.optim.Adam(model.parameters(), lr=1e-2, amsgrad=True)
    _steps(model, theirs, 1, 5)
    with pytest.raises(ValueError, match="amsgrad"):
        FusedAdam(model.parameters()).load_state_dict(theirs.state_dict())
