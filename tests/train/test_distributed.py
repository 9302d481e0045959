"""DDP with gathered in-batch negatives: 2 gloo processes train exactly what 1 process trains
on the same global batch."""

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from relrec.config import TrainConfig
from relrec.model.losses import log_sampling_probability
from relrec.model.tower import ItemTower, TowerConfig
from relrec.train.trainer import Trainer

N_ITEMS, GLOBAL_BATCH, STEPS, WORLD = 25, 12, 6, 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _batches():
    """Fixed global batches over a tiny catalogue, so accidental hits cross rank boundaries
    (the same item as positive on rank 0 and candidate on rank 1, triggers reappearing)."""
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(STEPS):
        triggers = rng.integers(0, N_ITEMS, GLOBAL_BATCH)
        candidates = (triggers + rng.integers(1, 6, GLOBAL_BATCH)) % N_ITEMS
        candidates[GLOBAL_BATCH // 2] = candidates[0]  # positive of rank 0 row 0 on rank 1
        weights = rng.uniform(0.5, 2.0, GLOBAL_BATCH)  # per-pair (MTL × OPC) weights
        batches.append((torch.as_tensor(triggers), torch.as_tensor(candidates),
                        torch.as_tensor(weights, dtype=torch.float64)))
    return batches


def _tower(dtype, id_dropout: float = 0.0) -> ItemTower:
    torch.manual_seed(0)
    tower = ItemTower(TowerConfig(n_items=N_ITEMS, id_dim=8, embedding_dim=6, hidden_dims=[10],
                                  id_dropout=id_dropout))
    torch.manual_seed(123)  # the ID-dropout draws start from the same state in every process
    return tower.to(dtype)


def _log_q_table(dtype):
    frequency = torch.as_tensor(np.random.default_rng(1).integers(1, 50, N_ITEMS))
    return log_sampling_probability(frequency).to(dtype)


def _config(**overrides) -> TrainConfig:
    return TrainConfig(temperature=0.2, learning_rate=0.05, batch_size=GLOBAL_BATCH,
                       **overrides)


def _single_process(dtype, logq: bool, id_dropout: float, sparse: bool = False) -> dict:
    tower = _tower(dtype, id_dropout)
    trainer = Trainer(_config(sparse_id_gradients=sparse), "unused", progress=False)
    return _train_steps(trainer, tower, trainer._optimizer(tower), dtype, logq)


def _train_steps(trainer, tower, optimizer, dtype, logq: bool) -> dict:
    """The fixed global batches through ``trainer.batch_loss``; the trained state."""
    log_q = _log_q_table(dtype) if logq else None
    for triggers, candidates, weights in _batches():
        loss = trainer.batch_loss(tower, triggers, candidates, weights.to(dtype), log_q)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in tower.state_dict().items()}


# dtype, logQ, ID dropout, sparse ID gradients (SparseAdam), atol
CASES = [(torch.float64, True, 0.0, False, 1e-10), (torch.float32, False, 0.0, False, 1e-5),
         (torch.float64, True, 0.3, False, 1e-10), (torch.float64, True, 0.0, True, 1e-10)]


def _worker(rank: int, port: int, out: str) -> None:
    from relrec.train.distributed import DistributedTrainer, wrap_ddp

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)
    try:
        for case, (dtype, logq, id_dropout, sparse, _) in enumerate(CASES):
            tower = _tower(dtype, id_dropout)
            if rank == 1:  # a different local init: DDP must broadcast rank 0's parameters
                with torch.no_grad():
                    for parameter in tower.parameters():
                        parameter.add_(1.0)
            trainer = DistributedTrainer(_config(sparse_id_gradients=sparse), "unused", None,
                                         progress=False)
            optimizer = trainer._optimizer(tower)  # fixes the gradient layout before the wrap
            trainer.ddp_module = wrap_ddp(tower)
            torch.save(_train_steps(trainer, tower, optimizer, dtype, logq),
                       Path(out) / f"case{case}_rank{rank}.pt")
        # neither rank tears gloo down while the other may still be finishing the last
        # all-reduce (a peer closing its pairs mid-message aborts the process)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_match_one_process_on_the_global_batch(tmp_path):
    """Masking, logQ, per-pair weights and ID dropout over the global batch; Adam steps;
    float64 to 1e-10 and float32 to 1e-5 (summation order is the only difference)."""
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    with_dropout = _single_process(torch.float64, True, 0.3)["id_embedding.weight"]
    without = _single_process(torch.float64, True, 0.0)["id_embedding.weight"]
    assert not torch.allclose(with_dropout, without), "ID dropout case must differ"
    for case, (dtype, logq, id_dropout, sparse, atol) in enumerate(CASES):
        expected = _single_process(dtype, logq, id_dropout, sparse)
        initial = _tower(dtype, id_dropout).state_dict()
        for name, value in expected.items():
            assert not torch.allclose(value, initial[name]), f"{name} did not train"
            for rank in range(WORLD):
                state = torch.load(tmp_path / f"case{case}_rank{rank}.pt")
                torch.testing.assert_close(state[name], value, rtol=0, atol=atol,
                                           msg=f"{dtype} rank {rank} {name}")


def test_gather_without_process_group_is_the_plain_loss():
    """World size 1 (no process group): the distributed loss is the single-process loss."""
    from relrec.train.distributed import distributed_sampled_softmax_loss

    tower = _tower(torch.float64)
    triggers, candidates, weights = _batches()[0]
    embeddings = tower(torch.cat([triggers, candidates]))
    trigger_embeddings, candidate_embeddings = embeddings.split(GLOBAL_BATCH)
    log_q = _log_q_table(torch.float64)
    got = distributed_sampled_softmax_loss(trigger_embeddings, candidate_embeddings, triggers,
                                           candidates, 0.2, weights, log_q)
    trainer = Trainer(_config(), "unused", progress=False)
    want = trainer.batch_loss(tower, triggers, candidates, weights, log_q)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_indivisible_global_batch_is_refused():
    from relrec.train.distributed import local_slice

    assert local_slice(12, 1, 2) == slice(6, 12)
    with pytest.raises(ValueError, match="not divisible"):
        local_slice(13, 0, 2)


def _entry_point_worker(rank: int, port: int, run_dir: str, arguments: list[str]) -> None:
    """What ``torchrun --nproc_per_node=2 -m relrec.train.distributed RUN_DIR ...`` runs."""
    import os

    from relrec.train.distributed import main

    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    main([run_dir, *arguments])


def test_torchrun_entry_point_reproduces_relrec_train(tmp_path):
    """2 processes through the entry point write the model that `relrec train` writes."""
    import shutil

    from safetensors.torch import load_file

    from relrec.config import load_config
    from relrec.config import PrepareConfig, RunConfig
    from relrec.data.prepare import prepare_run
    from relrec.data.synthetic import generate
    from relrec.train.pipeline import train_run
    from relrec.train.presets import resolve_train_config

    data = generate(n_items=120, n_topics=6, n_users=80, seed=2)
    single, double = tmp_path / "single", tmp_path / "double"
    prepare_run(single, RunConfig(prepare=PrepareConfig()), interactions=data.interactions,
                items=data.items)
    shutil.copytree(single, double)
    # a small tower: float32 reductions in a different order drift more in a wide one
    toml = tmp_path / "small.toml"
    # and a small peak rate: Adam turns float32 noise in near-zero gradients into steps of ~lr
    toml.write_text("[train]\nembedding_dim = 32\nid_dim = 32\nhidden_dims = [64]\n"
                    "learning_rate = 3e-3\n")
    arguments = ["--preset", "cf", "--epochs", "2", "--batch-size", "64", "--no-progress",
                 "--config", str(toml)]
    config = load_config(toml, single)
    config.train = resolve_train_config(config.train, "cf", {"max_epochs": 2, "batch_size": 64})
    torch.manual_seed(config.train.seed)  # the entry point seeds the initial tower
    reference = train_run(single, config, progress=False)
    mp.spawn(_entry_point_worker, args=(_free_port(), str(double), arguments), nprocs=WORLD,
             join=True)
    want = load_file(str(single / "model" / "weights.safetensors"))
    got = load_file(str(double / "model" / "weights.safetensors"))
    assert want.keys() == got.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-5, msg=name)
    import json

    summary = json.loads((double / "model" / "training.json").read_text())
    assert summary["best_epoch"] == reference["best_epoch"]
    assert summary["notes"]["distributed"]["world_size"] == WORLD
