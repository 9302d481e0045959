"""Trainer: reproducible, resumes after a kill to the same weights, early-stops on validation."""

import numpy as np
import pandas as pd
import pytest
import torch

from relrec.config import TrainConfig
from relrec.model.tower import ItemTower
from relrec.train.trainer import Trainer, build_examples, build_tower_config


def planted_pairs(n_items=60, n_pairs=3000, seed=0):
    """Items in 6 blocks of 10; pairs stay within a block."""
    rng = np.random.default_rng(seed)
    triggers = rng.integers(0, n_items, n_pairs)
    candidates = (triggers // 10) * 10 + rng.integers(0, 10, n_pairs)
    keep = triggers != candidates
    frame = pd.DataFrame({"trigger_index": triggers[keep], "candidate_index": candidates[keep]})
    return frame.groupby(["trigger_index", "candidate_index"]).size().rename(
        "pair_count").reset_index()


def fit(tmp_path, config, max_seconds=None, name="model"):
    pairs = planted_pairs()
    n_items = 60
    frequency = np.bincount(np.repeat(pairs["trigger_index"], pairs["pair_count"]),
                            minlength=n_items)
    examples = build_examples(pairs, frequency, config)
    torch.manual_seed(config.seed)  # initial weights from the seed, as the pipeline does
    tower = ItemTower(build_tower_config(n_items, config))
    valid = planted_pairs(n_pairs=300, seed=1)
    trainer = Trainer(config, tmp_path / name, progress=False)
    summary = trainer.fit(tower, examples, known=np.ones(n_items, bool),
                          eligible=np.ones(n_items, bool),
                          valid_triggers=valid["trigger_index"].to_numpy(),
                          valid_targets=valid["candidate_index"].to_numpy(),
                          candidate_frequency=frequency, fingerprint_payload={"data": "planted"},
                          max_seconds=max_seconds)
    return tower, summary


CONFIG = dict(embedding_dim=8, id_dim=8, hidden_dims=[16], batch_size=64, max_epochs=3,
              patience=5, temperature=0.1, learning_rate=0.01, early_stopping_k=10, seed=3)


def test_training_learns_planted_blocks(tmp_path):
    tower, summary = fit(tmp_path, TrainConfig(**CONFIG))
    # chance recall@10 over 59 candidates is ~0.17; planted blocks of 10 make it learnable
    assert summary["best_valid_recall"] > 0.5


def test_same_seed_same_weights(tmp_path):
    a, _ = fit(tmp_path, TrainConfig(**CONFIG), name="a")
    b, _ = fit(tmp_path, TrainConfig(**CONFIG), name="b")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


@pytest.mark.parametrize("sparse", [False, True])
def test_resume_after_kill_reaches_the_same_weights(tmp_path, sparse):
    """Also with sparse ID gradients (SparseAdam + Adam: two optimizer states checkpointed)."""
    config = {**CONFIG, "sparse_id_gradients": sparse}
    uninterrupted, _ = fit(tmp_path, TrainConfig(**config), name="full")
    # "kill" after the first epoch: max_seconds=0 stops once epoch 0's checkpoint is written
    fit(tmp_path, TrainConfig(**config), max_seconds=0, name="killed")
    resumed, summary = fit(tmp_path, TrainConfig(**config), name="killed")
    assert [h["epoch"] for h in summary["history"]] == [0, 1, 2]
    for (name, x), (_, y) in zip(uninterrupted.state_dict().items(),
                                 resumed.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-6), name


def test_tower_save_load_roundtrip(tmp_path):
    tower, _ = fit(tmp_path, TrainConfig(**CONFIG))
    tower.save(tmp_path / "saved")
    loaded = ItemTower.load(tmp_path / "saved")
    items = torch.arange(60)
    assert torch.allclose(tower(items), loaded(items))


def test_early_stopping_stops_when_validation_stalls(tmp_path):
    config = TrainConfig(**{**CONFIG, "max_epochs": 50, "patience": 0, "learning_rate": 0.05})
    _, summary = fit(tmp_path, config)
    assert len(summary["history"]) < 50


def test_device_auto_trains_and_returns_a_cpu_model(tmp_path):
    """`device="auto"` picks CUDA where there is one; the trained tower always comes back on
    CPU (what is saved, indexed and served), with the weights of an explicit CPU run here."""
    tower, summary = fit(tmp_path, TrainConfig(**CONFIG, device="auto"), name="auto")
    assert all(p.device.type == "cpu" for p in tower.parameters())
    if not torch.cuda.is_available():
        reference, _ = fit(tmp_path, TrainConfig(**CONFIG), name="cpu")
        for (name, x), (_, y) in zip(tower.state_dict().items(),
                                     reference.state_dict().items()):
            assert torch.equal(x, y), name


def test_absent_or_unknown_device_is_refused():
    import pydantic
    import pytest

    from relrec.train.trainer import resolve_device

    with pytest.raises(pydantic.ValidationError):
        TrainConfig(device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda:0")
    assert resolve_device("cpu").type == "cpu"


def test_sparse_id_gradients_learn_and_touch_only_the_batch_rows(tmp_path):
    tower, summary = fit(tmp_path, TrainConfig(**CONFIG, sparse_id_gradients=True))
    assert summary["best_valid_recall"] > 0.5
    assert tower.id_embedding.sparse is False  # a training-time switch, not saved behaviour
    trainer = Trainer(TrainConfig(**CONFIG, sparse_id_gradients=True), tmp_path / "x",
                      progress=False)
    torch.manual_seed(0)
    fresh = ItemTower(build_tower_config(60, trainer.config))
    optimizer = trainer._optimizer(fresh)
    assert [type(o).__name__ for o in optimizer.optimizers] == ["SparseAdam", "FusedAdam"]
    before = fresh.id_embedding.weight.detach().clone()
    loss = fresh(torch.tensor([1, 2, 3])).sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    changed = (fresh.id_embedding.weight.detach() != before).any(dim=1)
    assert set(torch.nonzero(changed).flatten().tolist()) == {1, 2, 3}


def test_sparse_id_gradients_choice():
    small = ItemTower(build_tower_config(60, TrainConfig(**CONFIG)))
    big = ItemTower(build_tower_config(200_000, TrainConfig(**{**CONFIG, "id_dim": 2})))
    auto = Trainer(TrainConfig(**CONFIG), "unused", progress=False)
    assert not auto.sparse_id_gradients(small) and auto.sparse_id_gradients(big)
    decayed = Trainer(TrainConfig(**CONFIG, weight_decay=0.1), "unused", progress=False)
    assert not decayed.sparse_id_gradients(big)  # auto keeps dense Adam's weight decay
    forced = Trainer(TrainConfig(**CONFIG, weight_decay=0.1, sparse_id_gradients=True),
                     "unused", progress=False)
    with pytest.raises(ValueError, match="weight decay"):
        forced._optimizer(small)


def test_checkpoint_of_another_configuration_is_not_resumed_and_says_so(tmp_path):
    fit(tmp_path, TrainConfig(**CONFIG), max_seconds=0, name="run")
    _, summary = fit(tmp_path, TrainConfig(**{**CONFIG, "learning_rate": 0.02}), name="run")
    assert summary["resumed_from_epoch"] is None
    assert "started over" in summary["checkpoint_ignored"]
    assert [h["epoch"] for h in summary["history"]] == [0, 1, 2]
    _, again = fit(tmp_path, TrainConfig(**{**CONFIG, "learning_rate": 0.02,
                                            "max_epochs": 4}), name="run")
    assert again["resumed_from_epoch"] == 3 and "checkpoint_ignored" not in again


def test_cosine_schedule_warms_up_decays_to_zero_and_constant_is_flat():
    from relrec.train.trainer import learning_rate_factor

    assert [learning_rate_factor(step, 10, "constant") for step in (0, 9)] == [1.0, 1.0]
    cosine = [learning_rate_factor(step, 100, "cosine") for step in range(101)]
    assert cosine[0] == 1.0 and cosine[50] == pytest.approx(0.5) and cosine[100] == 0.0
    assert all(a >= b for a, b in zip(cosine, cosine[1:])), "decay is monotone"
    warm = [learning_rate_factor(step, 100, "cosine", warmup_fraction=0.1) for step in range(12)]
    assert warm[:10] == pytest.approx([(s + 1) / 10 for s in range(10)]) and warm[10] == 1.0
    with pytest.raises(ValueError, match="schedule"):
        learning_rate_factor(0, 10, "linear")


def test_schedule_length_in_steps():
    """cosine: schedule_epochs of steps, at least schedule_min_steps, never past max_epochs."""
    from relrec.train.trainer import training_steps

    cosine = TrainConfig(learning_rate_schedule="cosine", schedule_epochs=3,
                         schedule_min_steps=500, max_epochs=30)
    assert training_steps(cosine, 320) == 960          # ml-latest-small: 3 epochs
    assert training_steps(cosine, 10) == 300           # a small set: max_epochs caps ...
    assert training_steps(cosine.model_copy(update={"max_epochs": 100}), 10) == 500  # ... floor
    assert training_steps(cosine.model_copy(update={"max_epochs": 2}), 320) == 640
    constant = TrainConfig(learning_rate_schedule="constant", max_epochs=7)
    assert training_steps(constant, 320) == 7 * 320


def test_cosine_run_ends_at_the_schedule_and_its_rate_reaches_zero(tmp_path):
    """The last epoch is cut where the decay ends (history: ceil(steps / epoch) epochs), and a
    run with the rate schedule differs from the constant one."""
    base = {**CONFIG, "max_epochs": 30, "patience": 100}
    config = TrainConfig(**base, learning_rate_schedule="cosine", schedule_epochs=2.5,
                         schedule_min_steps=1)
    tower, summary = fit(tmp_path, config, name="cosine")
    assert len(summary["history"]) == 3
    constant, _ = fit(tmp_path, TrainConfig(**{**base, "max_epochs": 3},
                                            learning_rate_schedule="constant"), name="constant")
    assert not torch.equal(tower.id_embedding.weight, constant.id_embedding.weight)
