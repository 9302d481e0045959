"""Data-parallel training across processes / nodes with ``torchrun`` (DDP).

N processes train exactly what one process trains on the same global batch:

* every rank runs the tower on its slice (``global_batch / N`` rows) of each global batch;
* candidate embeddings are gathered across ranks **with gradients** (:func:`all_gather_with_grad`:
  forward ``all_gather``, backward ``all_reduce`` of the gathered gradient, keep the own slice),
  together with the candidate ids and their log q, so each rank's rows are scored against the
  *global* in-batch candidate set;
* accidental-hit masking and logQ therefore see the global batch, each row's positive column is
  offset by ``rank · local_batch``, and the loss is normalised by the global batch size;
* DDP averages parameter gradients over ranks; each rank's loss is multiplied by the world size
  so the average equals the single-process gradient of the global-batch loss
  (``Σ_r ∂L/∂θ`` through rank r's own forward).

``tests/train/test_distributed.py`` checks that 2 gloo processes reach the single-process
parameters after several Adam steps (float64, atol 1e-10), and that the torchrun entry point
reproduces ``relrec train`` on a small run.

Entry point (``torchrun`` sets RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT)::

    torchrun --nproc_per_node=4 -m relrec.train.distributed runs/ml --preset cf
    torchrun --nnodes=2 --node_rank=$NODE --nproc_per_node=8 \\
        --rdzv_backend=c10d --rdzv_endpoint=$HOST:29500 -m relrec.train.distributed RUN_DIR

``--batch-size`` is the *global* batch (must be divisible by the world size). ID dropout is
drawn once for the global batch (same seeded RNG on every rank) and sliced, so it is the same
draw one process makes. See docs/SCALING.md for multi-GPU and multi-node notes.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
import torch.distributed as dist

from relrec.config import RunConfig, TrainConfig
from relrec.model.losses import sampled_softmax_loss
from relrec.train.trainer import Trainer
from relrec.config import load_config
from relrec.content.stage import ensure_content
from relrec.train.blend_tuning import set_rank_after_training
from relrec.train.presets import resolve_train_config
from relrec.train.setup import prepare_training


class _AllGatherWithGrad(torch.autograd.Function):
    """``all_gather`` whose backward sums every rank's gradient of the gathered tensor and
    returns this rank's slice (all_reduce works on every backend, gloo included)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        ctx.rank = dist.get_rank(group)
        ctx.rows = tensor.shape[0]
        world = dist.get_world_size(group)
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous(), group=group)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        start = ctx.rank * ctx.rows
        return grad[start:start + ctx.rows], None


def all_gather_with_grad(tensor: torch.Tensor, group=None) -> torch.Tensor:
    """Concatenate equal-shaped tensors of all ranks (rank order), differentiably."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return tensor
    return _AllGatherWithGrad.apply(tensor, group)


def all_gather_no_grad(tensor: torch.Tensor, group=None) -> torch.Tensor:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return torch.cat(parts)


def distributed_sampled_softmax_loss(trigger_embeddings: torch.Tensor,
                                     candidate_embeddings: torch.Tensor,
                                     trigger_ids: torch.Tensor, candidate_ids: torch.Tensor,
                                     temperature: float, weights: torch.Tensor | None = None,
                                     log_q_table: torch.Tensor | None = None,
                                     group=None) -> torch.Tensor:
    """This rank's share of the global-batch sampled-softmax loss, scaled for DDP averaging.

    Inputs are the rank's local rows (equal count on every rank). Returns
    ``world · Σ_{i∈rank} w_i CE_i / global_batch`` — after DDP's gradient *average* the update
    is the gradient of the single-process loss on the concatenated global batch.
    """
    initialised = dist.is_available() and dist.is_initialized()
    world = dist.get_world_size(group) if initialised else 1
    rank = dist.get_rank(group) if initialised else 0
    rows = trigger_embeddings.shape[0]
    global_candidates = all_gather_with_grad(candidate_embeddings, group)
    global_ids = all_gather_no_grad(candidate_ids, group)
    if global_ids.shape[0] != rows * world:
        raise ValueError("every rank needs the same local batch size")
    log_q = log_q_table[global_ids] if log_q_table is not None else None
    positive_columns = rank * rows + torch.arange(rows, device=trigger_embeddings.device)
    loss, _ = sampled_softmax_loss(trigger_embeddings, global_candidates, trigger_ids,
                                   global_ids, temperature, weights, log_q,
                                   positive_columns=positive_columns,
                                   normalizer=float(rows * world))
    return loss * world


def local_slice(global_batch_size: int, rank: int, world: int) -> slice:
    """Rows of a global batch that a rank trains on (contiguous, rank order)."""
    if global_batch_size % world:
        raise ValueError(f"global batch size {global_batch_size} is not divisible by the "
                         f"world size {world}")
    local = global_batch_size // world
    return slice(rank * local, (rank + 1) * local)


class DistributedTrainer(Trainer):
    """:class:`Trainer` whose ``batch_loss`` takes the *global* batch, keeps this rank's slice,
    runs it through the DDP wrapper and scores it against the gathered global candidates.

    Everything else (epoch shuffles seeded by ``seed + epoch``, early stopping, resume) is the
    single-process loop: every rank draws the same permutation and computes the same
    validation recall from identical parameters, so all ranks stop together. Only rank 0 writes
    checkpoints and shows progress.
    """

    def __init__(self, config: TrainConfig, model_dir: str | Path, ddp_module,
                 progress: bool = True, group=None):
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        super().__init__(config, model_dir, progress=progress and self.rank == 0)
        self.ddp_module = ddp_module
        self.group = group

    def sparse_id_gradients(self, tower) -> bool:
        # NCCL has no sparse all_reduce: dense ID gradients on GPUs (shard big tables instead,
        # docs/SCALING.md §5); gloo reduces sparse gradients
        if dist.get_backend(self.group) == "nccl":
            return False
        return super().sparse_id_gradients(tower)

    def batch_loss(self, tower, batch_triggers, batch_candidates, batch_weights, log_q_table):
        part = local_slice(len(batch_triggers), self.rank, self.world)
        triggers, candidates = batch_triggers[part], batch_candidates[part]
        # one ID-dropout draw for the global batch (every rank's RNG is in the same state),
        # sliced like the rows: the same draws a single process makes
        dropped = tower.id_dropout_mask((2 * len(batch_triggers),))
        if dropped is not None:
            dropped = dropped.view(2, -1)
            dropped = torch.cat([dropped[0, part], dropped[1, part]])
        embeddings = self.ddp_module(torch.cat([triggers, candidates]), id_dropped=dropped)
        trigger_embeddings, candidate_embeddings = embeddings.split(len(triggers))
        return distributed_sampled_softmax_loss(
            trigger_embeddings, candidate_embeddings, triggers, candidates,
            self.config.temperature, batch_weights[part], log_q_table, self.group)

    def _save_checkpoint(self, *args, **kwargs):
        if self.rank == 0:
            super()._save_checkpoint(*args, **kwargs)
        dist.barrier(self.group)


def wrap_ddp(tower: torch.nn.Module, device: torch.device | None = None):
    """DDP wrapper sharing the tower's parameters. Content vectors are identical buffers on
    every rank, so they are not re-broadcast each step."""
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device is not None and device.type == "cuda" else None
    return DistributedDataParallel(tower, device_ids=device_ids, broadcast_buffers=False)


def train_run_distributed(run_dir: str | Path, config: RunConfig, *, progress: bool = True
                          ) -> dict:
    """``relrec train`` for one rank of an initialised process group (gloo: CPU; nccl: the
    GPU of ``LOCAL_RANK``).

    Mirrors :func:`relrec.train.pipeline.train_run`: rank 0 computes missing content
    embeddings first (the others then read the cache), every rank builds the same examples,
    and only rank 0 writes the model, the summary and the manifest.
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    local_slice(config.train.batch_size, rank, world)  # fail early on an indivisible batch
    notes: dict = {"distributed": {"world_size": world, "backend": dist.get_backend(),
                                   "global_batch": config.train.batch_size}}

    def fill_content(run, modalities, notes):
        available = {}
        for turn in (0, 1):  # rank 0 fills the cache, then the others read it
            if (rank == 0) == (turn == 0):
                available = ensure_content(run, modalities, config.content,
                                           progress=progress and rank == 0, notes=notes)
            dist.barrier()
        return available

    setup = prepare_training(run_dir, config, progress=progress, notes=notes,
                             fill_content=fill_content)
    tower = setup.tower()
    train_config = setup.train_config
    device = None
    if dist.get_backend() == "nccl":  # one GPU per process: the one torchrun assigned
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        train_config = train_config.model_copy(update={"device": str(device)})
        tower.to(device)
    elif train_config.device != "cpu":
        raise ValueError(f"the {dist.get_backend()} backend trains on CPU (device "
                         f"{train_config.device!r} given); use --backend nccl for GPUs")
    trainer = DistributedTrainer(train_config, setup.run.run_dir / "model", None,
                                 progress=progress)
    trainer.prepare_tower(tower)  # sparse or dense ID gradients: fixed before the DDP wrap
    trainer.ddp_module = wrap_ddp(tower, device)  # broadcasts rank 0's initial parameters
    summary = trainer.fit(tower, setup.examples, **setup.fit_arguments())
    if rank == 0:
        summary = setup.finish(tower, summary)
    dist.barrier()
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="relrec train across processes (torchrun)")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--preset", default="cf", help="any preset but auto (its search of "
                        "candidates runs in one process: `relrec train`)")
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None, help="global batch size")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process")
    parser.add_argument("--backend", default="gloo", help="gloo (CPU); see docs/SCALING.md")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.preset in ("auto", "balanced"):
        parser.error("--preset auto searches candidates in one process (`relrec train RUN`); "
                     "train its chosen preset across processes with --preset cf|mtl|full|mtmh")

    if not dist.is_initialized():
        dist.init_process_group(args.backend)
    try:
        config = load_config(args.config, args.run_dir)
        overrides = {k: v for k, v in {"max_epochs": args.epochs, "batch_size": args.batch_size,
                                       "seed": args.seed, "num_threads": args.threads}.items()
                     if v is not None}
        config.train = resolve_train_config(config.train, args.preset, overrides)
        summary = train_run_distributed(args.run_dir, config, progress=not args.no_progress)
        if dist.get_rank() == 0:
            print(set_rank_after_training(
                args.run_dir, config, explicit_rank=args.config is not None and "rank" in config.model_fields_set))
            print(f"trained preset {config.train.preset} on {dist.get_world_size()} processes: "
                  f"best epoch {summary['best_epoch']}, validation recall@"
                  f"{summary['early_stopping_k']} {summary['best_valid_recall']:.4f} "
                  f"({summary['seconds']:.0f}s)")
        # every rank done before the pairs close (a peer closing mid-message aborts gloo);
        # only on success: a failing rank leaves at once and torchrun stops the others
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
