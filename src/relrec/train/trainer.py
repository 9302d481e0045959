"""Training loop: seeded mini-batches, Adam, early stopping on validation recall, checkpoints
that resume after a kill, rich progress bars."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors.torch import load_file, save_file

from relrec.config import TrainConfig
from relrec.errors import RelrecError
from relrec.index.faiss_index import ItemIndex
from relrec.manifest import atomic_write_json
from relrec.model.losses import log_sampling_probability, multitask_weights, opc_weights, \
    sampled_softmax_loss
from relrec.model.tower import ItemTower, TowerConfig
from relrec.train.optimizer import adam


@dataclass
class TrainingExamples:
    """One row per co-engagement occurrence (pairs repeated by their count)."""
    triggers: np.ndarray
    candidates: np.ndarray
    weights: np.ndarray  # per-pair weight: multi-task × OPC (all 1 for the CF preset)
    semantic_label: np.ndarray | None = None
    notes: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.triggers)


def build_examples(train_pairs, trigger_frequency: np.ndarray, config: TrainConfig,
                   semantic_label: np.ndarray | None = None) -> TrainingExamples:
    """Expand counted pairs and attach the per-pair weight of paper eq. 5-7."""
    counts = train_pairs["pair_count"].to_numpy()
    triggers = np.repeat(train_pairs["trigger_index"].to_numpy(), counts)
    candidates = np.repeat(train_pairs["candidate_index"].to_numpy(), counts)
    weights = torch.ones(len(triggers))
    label = None
    if semantic_label is not None and config.w_sem > 0:
        label = np.repeat(semantic_label, counts)
        weights = multitask_weights(torch.as_tensor(label), config.w_co, config.w_sem)
    elif config.w_co != 1.0:
        weights = weights * config.w_co
    if config.opc:
        weights = weights * opc_weights(torch.as_tensor(trigger_frequency[triggers]))
    return TrainingExamples(triggers.astype(np.int64), candidates.astype(np.int64),
                            weights.numpy().astype(np.float32), label)


def validation_recall(tower: ItemTower, eligible: np.ndarray, known: np.ndarray,
                      valid_triggers: np.ndarray, valid_targets: np.ndarray, k: int,
                      head: str | None = None) -> float:
    """Share of validation pairs whose target is in the trigger's top-k (exact search)."""
    if len(valid_triggers) == 0:
        return float("nan")
    return embedding_recall(tower.item_embeddings(known, head=head), eligible, valid_triggers,
                            valid_targets, k)


def embedding_recall(embeddings: np.ndarray, eligible: np.ndarray, triggers: np.ndarray,
                     targets: np.ndarray, k: int) -> float:
    """:func:`validation_recall` on given item embeddings (one row per item): the share of
    (trigger, target) pairs whose target is among the trigger's k nearest eligible items
    (exact inner product, the trigger itself excluded); NaN without pairs."""
    if len(triggers) == 0:
        return float("nan")
    index = ItemIndex(embeddings.shape[1])
    index.add(embeddings[eligible], np.flatnonzero(eligible))
    unique_triggers, rows = np.unique(triggers, return_inverse=True)
    _, ranked = index.search(embeddings[unique_triggers], k, exclude=unique_triggers)
    return float((ranked[rows] == targets[:, None]).any(axis=1).mean())


def resolve_device(name: str) -> torch.device:
    """``TrainConfig.device`` → a torch device; a named accelerator that is absent is an error
    (never a silent fall-back to CPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but torch sees no CUDA device")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} requested but torch sees "
                         f"{torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} requested but MPS is not available")
    return device


def config_fingerprint(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


SPARSE_ID_ITEMS = 100_000


def set_deterministic_algorithms(mode: bool, warn_only: bool = False) -> None:
    """``torch.use_deterministic_algorithms`` without importing the compiler stack for it.

    The public call also sets ``torch._inductor.config.deterministic``, importing
    ``torch._inductor`` and ``torch._dynamo`` (1.2–1.6 s a process here) for compiled code,
    which relrec never builds; where inductor is loaded already, the public call is made.
    """
    if "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    else:
        torch._C._set_deterministic_algorithms(mode, warn_only=warn_only)


@contextlib.contextmanager
def reproducible_torch(config: TrainConfig, device: torch.device):
    """Thread count and deterministic kernels for one training run; yields the record of what
    the weights' bits depend on besides the data and the config (the manifest keeps it).

    ``config.num_threads`` fixes torch's intra-op threads (unset: the process's current
    setting, recorded). ``config.deterministic`` turns on
    ``torch.use_deterministic_algorithms`` (``warn_only``: an op without a deterministic kernel
    warns instead of failing), disables cuDNN autotuning and, on CUDA, sets
    ``CUBLAS_WORKSPACE_CONFIG`` (effective only if cuBLAS was not initialised earlier in the
    process). The previous process-wide settings are restored on exit. Identical bits are
    promised for the same data, config, library versions, machine kind (``cpu_capability``:
    the vector kernels torch picked) and thread count."""
    previous = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    if config.deterministic:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        set_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    record = {"seed": config.seed, "deterministic_algorithms": bool(config.deterministic),
              "torch_threads": torch.get_num_threads(),
              "torch_threads_from": "config" if config.num_threads else "torch default",
              "torch_interop_threads": torch.get_num_interop_threads(),
              "cpu_capability": torch.backends.cpu.get_cpu_capability(),
              "device": str(device)}
    try:  # validation recall (early stopping) searches with faiss' OpenMP threads
        import faiss

        record["faiss_threads"] = int(faiss.omp_get_max_threads())
    except (ImportError, AttributeError):
        pass
    if device.type == "cuda":
        record.update({"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                       "gpu": torch.cuda.get_device_name(device),
                       "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG")})
    try:
        yield record
    finally:
        threads, enabled, warn_only, benchmark, cudnn_deterministic = previous
        torch.set_num_threads(threads)
        set_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark
        torch.backends.cudnn.deterministic = cudnn_deterministic


def learning_rate_factor(step: int, total_steps: int, schedule: str,
                         warmup_fraction: float = 0.0) -> float:
    """The multiplier of the base learning rate at optimizer step ``step`` (0-based) of
    ``total_steps``. ``constant``: 1. ``cosine`` (Loshchilov & Hutter 2017, SGDR eq. 5 without
    restarts): linear warm-up to 1 over ``warmup_fraction·total_steps``, then
    ``½(1 + cos(π·t))`` with ``t`` the share of the remaining steps done, reaching 0 at the end.
    A pure function of the step, so a resumed run continues the same schedule."""
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"unknown learning-rate schedule {schedule!r}")
    warmup = int(warmup_fraction * total_steps)
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def training_steps(config: TrainConfig, batches_per_epoch: int) -> int:
    """Optimizer steps of a whole run. ``constant``: ``max_epochs`` epochs (early stopping may
    end it sooner). ``cosine``: the schedule's length, ``schedule_epochs`` epochs but at least
    ``schedule_min_steps`` steps (a small catalogue still gets a real decay), never past
    ``max_epochs``."""
    most = config.max_epochs * batches_per_epoch
    if config.learning_rate_schedule == "constant":
        return most
    return min(most, max(math.ceil(config.schedule_epochs * batches_per_epoch),
                         config.schedule_min_steps))


class OptimizerGroup:
    """Several optimizers stepped as one (SparseAdam for the ID table, Adam for the rest)."""

    def __init__(self, optimizers: list):
        self.optimizers = optimizers

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def set_learning_rate(self, learning_rate: float) -> None:
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate


def unique_rows_forward(forward, items: torch.Tensor, id_dropped: torch.Tensor | None):
    """``forward(rows, dropped)`` evaluated once per distinct (item, ID dropped) of the batch
    and gathered back to the batch's order: popular items repeat within a batch, so the tower
    (ID lookup, content projections, MLP, heads) runs on fewer rows; the gather's backward sums
    the repeats' gradients (deterministically). ``forward`` returns a tensor or a dict of them."""
    keys = items * 2 + id_dropped.long() if id_dropped is not None else items
    unique, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    rows, dropped = (unique // 2, (unique % 2).bool()) if id_dropped is not None \
        else (unique, None)
    out = forward(rows, dropped)

    def gathered(value: torch.Tensor) -> torch.Tensor:
        # on CPU index_select's backward (a serial index_add) is deterministic and 2× faster
        # than indexing's (a sorted index_put); on CUDA only indexing's is deterministic
        return value.index_select(0, inverse) if value.device.type == "cpu" else value[inverse]

    if isinstance(out, dict):
        return {name: gathered(value) for name, value in out.items()}
    return gathered(out)


class CheckpointError(RelrecError):
    """A training checkpoint that cannot be read back (truncated, overwritten, not ours)."""


class Trainer:
    """Trains an :class:`ItemTower` on :class:`TrainingExamples`.

    Reproducible: the shuffle of epoch e uses ``seed + e`` and torch is reseeded per epoch, so
    a run resumed from its checkpoint follows the same path as an uninterrupted one.
    """

    def __init__(self, config: TrainConfig, model_dir: str | Path, progress: bool = True):
        self.config = config
        self.model_dir = Path(model_dir)
        self.progress = progress
        self.history: list[dict] = []
        self.checkpoint_note: str | None = None
        self.position: dict | None = None  # where the loop is (what Ctrl-C reports)

    # -- optimisation -----------------------------------------------------------------------
    def sparse_id_gradients(self, tower: ItemTower) -> bool:
        """Sparse ID-table gradients + ``SparseAdam``: dense Adam touches every row of the table
        each step (its moments decay even where the gradient is 0), which dominates the step
        beyond ~10^5 items (BENCHMARKS.md: 45× slower at 10^6 items); sparse updates only the
        rows in the batch. ``None`` (auto) = sparse above :data:`SPARSE_ID_ITEMS` items."""
        choice = self.config.sparse_id_gradients
        if not (tower.config.use_id and isinstance(getattr(tower, "id_embedding", None),
                                                   torch.nn.Embedding)):
            return False
        # sparse COO gradients and SparseAdam are implemented for CPU and CUDA only
        supported = resolve_device(self.config.device).type in ("cpu", "cuda")
        if choice is None:
            return (supported and tower.config.n_items > SPARSE_ID_ITEMS
                    and self.config.weight_decay == 0)
        if choice and not supported:
            raise ValueError(f"sparse_id_gradients is not supported on {self.config.device}")
        return choice

    def prepare_tower(self, tower: ItemTower) -> bool:
        """Set the ID table's gradient layout and return it (sparse?); must precede a DDP wrap
        (DDP fixes at wrap time whether a parameter's gradient is sparse)."""
        sparse = self.sparse_id_gradients(tower)
        if isinstance(getattr(tower, "id_embedding", None), torch.nn.Embedding):
            tower.id_embedding.sparse = sparse
        return sparse

    def _optimizer(self, tower: ItemTower) -> "OptimizerGroup":
        config = self.config
        # one fused kernel over all parameters: the dense Adam over the ID table was a quarter
        # of the cf step in torch's per-tensor loop on CPU (BENCHMARKS.md, training speed)
        if not self.prepare_tower(tower):
            return OptimizerGroup([adam(tower.parameters(), lr=config.learning_rate,
                                        weight_decay=config.weight_decay)])
        if config.weight_decay > 0:
            raise ValueError("sparse_id_gradients (SparseAdam) has no weight decay; set "
                             "weight_decay = 0 or sparse_id_gradients = false")
        table = tower.id_embedding.weight
        rest = [p for p in tower.parameters() if p is not table]
        return OptimizerGroup([torch.optim.SparseAdam([table], lr=config.learning_rate),
                               adam(rest, lr=config.learning_rate)])

    # -- checkpoints ------------------------------------------------------------------------
    def _checkpoint_path(self) -> Path:
        return self.model_dir / "checkpoint.safetensors"

    def _save_checkpoint(self, tower, optimizer, epoch, best, best_state, fingerprint, stale):
        tensors = {f"model.{k}": v.detach().cpu().contiguous()
                   for k, v in tower.state_dict().items()}
        tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in best_state.items()})
        param_groups = []
        for number, single in enumerate(optimizer.optimizers):
            optimizer_state = single.state_dict()
            param_groups.append(optimizer_state["param_groups"])
            for param_id, state in optimizer_state["state"].items():
                for name, value in state.items():
                    tensors[f"optimizer.{number}.{param_id}.{name}"] = \
                        torch.as_tensor(value).cpu().contiguous()
        metadata = {"epoch": str(epoch), "best": json.dumps(best), "fingerprint": fingerprint,
                    "stale": str(stale), "history": json.dumps(self.history),
                    "param_groups": json.dumps(param_groups)}
        temporary = self.model_dir / ".checkpoint.safetensors.tmp"
        save_file(tensors, str(temporary), metadata=metadata)
        temporary.replace(self._checkpoint_path())

    def _load_checkpoint(self, tower, optimizer, fingerprint):
        path = self._checkpoint_path()
        if not path.exists():
            return None
        try:
            return self._read_checkpoint(path, tower, optimizer, fingerprint)
        except Exception as error:  # noqa: BLE001 - any failure to read it back is corruption
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            raise CheckpointError(
                f"{path}: corrupt checkpoint ({type(error).__name__}: {reason}); "
                f"`relrec train {self.model_dir.parent} --restart` discards it and trains "
                "from the start") from None

    def _read_checkpoint(self, path, tower, optimizer, fingerprint):
        from safetensors import safe_open

        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("fingerprint") != fingerprint:
            # a different config, data or optimizer layout: start over rather than mix runs
            self.checkpoint_note = (f"{path} was written by a different configuration, data or "
                                    "relrec version; training started over")
            return None
        device = next(tower.parameters()).device
        tensors = load_file(str(path), device=str(device))
        tower.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        best_state = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
        states: dict = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, number, param_id, name = key.split(".", 3)
                states.setdefault(int(number), {}).setdefault(int(param_id), {})[name] = value
        for number, (single, groups) in enumerate(zip(optimizer.optimizers,
                                                      json.loads(metadata["param_groups"]))):
            single.load_state_dict({"state": states.get(number, {}), "param_groups": groups})
        self.history = json.loads(metadata["history"])
        return (int(metadata["epoch"]), json.loads(metadata["best"]), best_state,
                int(metadata["stale"]))

    # -- the loop ---------------------------------------------------------------------------
    def fit(self, tower: ItemTower, examples: TrainingExamples, **arguments) -> dict:
        """Train ``tower`` in place (see :meth:`_fit`) under :func:`reproducible_torch`; the
        summary's ``determinism`` says what the result's bits depend on."""
        device = resolve_device(self.config.device)
        with reproducible_torch(self.config, device) as record:
            summary = self._fit(tower, examples, device=device, **arguments)
        return {**summary, "determinism": record}

    def _fit(self, tower: ItemTower, examples: TrainingExamples, *, device: torch.device,
             known: np.ndarray, eligible: np.ndarray, valid_triggers: np.ndarray,
             valid_targets: np.ndarray, candidate_frequency: np.ndarray,
             fingerprint_payload: dict, max_seconds: float | None = None) -> dict:
        config = self.config
        self.model_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(config.seed)
        tower.to(device)
        optimizer = self._optimizer(tower)
        log_q_table = (log_sampling_probability(torch.as_tensor(np.array(candidate_frequency)))
                       * config.logq_strength if config.logq_correction else None)
        if log_q_table is not None:
            log_q_table = log_q_table.to(device)
        # the stopping rule (and where it runs) may change between a killed run and its
        # resume; nothing else
        fingerprint = config_fingerprint({
            **fingerprint_payload,
            "train": config.model_dump(mode="json",
                                       exclude={"max_epochs", "patience", "num_threads", "device",
                                                "deterministic"}),
            "optimizers": [type(single).__name__ for single in optimizer.optimizers]})
        resumed = self._load_checkpoint(tower, optimizer, fingerprint)
        start_epoch, best, best_state, stale = 0, {"epoch": -1, "recall": -1.0}, None, 0
        if resumed is not None:
            last_epoch, best, best_state, stale = resumed
            start_epoch = last_epoch + 1
        if best_state is None or not best_state:
            best_state = {k: v.clone() for k, v in tower.state_dict().items()}

        triggers = torch.as_tensor(examples.triggers).to(device)
        candidates = torch.as_tensor(examples.candidates).to(device)
        weights = torch.as_tensor(examples.weights).to(device)
        n_examples = len(examples)
        batches_per_epoch = max(1, n_examples // config.batch_size)
        scheduled = config.learning_rate_schedule != "constant"
        total_steps = training_steps(config, batches_per_epoch)
        epochs = math.ceil(total_steps / batches_per_epoch)
        started = time.perf_counter()
        stopped_by_time = False
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[status]}"), TimeRemainingColumn()]
        with Progress(*columns, disable=not self.progress, transient=False) as progress:
            task = progress.add_task("train", total=total_steps,
                                     completed=min(total_steps, start_epoch * batches_per_epoch),
                                     status="")
            for epoch in range(start_epoch, epochs):
                if stale > config.patience and config.keep_epoch == "best":
                    break
                tower.train()
                torch.manual_seed(config.seed + epoch)
                order = torch.as_tensor(
                    np.random.default_rng(config.seed + epoch).permutation(n_examples)
                ).to(device)
                epoch_loss = 0.0
                # the schedule's last epoch may be cut: it ends where the decay reaches 0
                epoch_steps = min(batches_per_epoch, total_steps - epoch * batches_per_epoch)
                for batch in range(epoch_steps):
                    # a time limit may cut an epoch short once one epoch has been validated
                    if (max_seconds is not None and best["epoch"] >= 0
                            and time.perf_counter() - started > max_seconds):
                        stopped_by_time = True
                        break
                    if scheduled:
                        optimizer.set_learning_rate(config.learning_rate * learning_rate_factor(
                            epoch * batches_per_epoch + batch, total_steps,
                            config.learning_rate_schedule, config.warmup_fraction))
                    rows = order[batch * config.batch_size:(batch + 1) * config.batch_size]
                    batch_triggers, batch_candidates = triggers[rows], candidates[rows]
                    epoch_loss += self.train_step(tower, optimizer, batch_triggers,
                                                  batch_candidates, weights[rows], log_q_table)
                    self.position = {"epoch": epoch, "step": batch + 1,
                                     "steps": epoch_steps, "epochs": epochs}
                    progress.update(task, advance=1,
                                    status=f"epoch {epoch} loss {epoch_loss / (batch + 1):.3f}")
                if stopped_by_time:
                    break
                self.position = {"epoch": epoch, "step": epoch_steps, "validating": True,
                                 "steps": epoch_steps, "epochs": epochs}
                recall = validation_recall(tower, eligible, known, valid_triggers, valid_targets,
                                           config.early_stopping_k)
                record = {"epoch": epoch, "loss": epoch_loss / epoch_steps,
                          f"valid_recall@{config.early_stopping_k}": recall,
                          "seconds": time.perf_counter() - started}
                self.history.append(record)
                if recall > best["recall"] or config.keep_epoch == "last":
                    best, stale = {"epoch": epoch, "recall": recall}, 0
                    best_state = {k: v.detach().clone() for k, v in tower.state_dict().items()}
                else:
                    stale += 1
                progress.update(task, status=f"epoch {epoch} valid recall@"
                                f"{config.early_stopping_k} {recall:.4f} (best {best['recall']:.4f})")
                self._save_checkpoint(tower, optimizer, epoch, best, best_state, fingerprint, stale)
                if max_seconds is not None and time.perf_counter() - started > max_seconds:
                    stopped_by_time = True
                    break
        tower.load_state_dict(best_state)
        if isinstance(getattr(tower, "id_embedding", None), torch.nn.Embedding):
            tower.id_embedding.sparse = False  # a training-time choice, not part of the model
        tower.to("cpu")  # what is saved, indexed and served lives on CPU
        tower.eval()
        return {**({"checkpoint_ignored": self.checkpoint_note} if self.checkpoint_note else {}),
                "resumed_from_epoch": start_epoch if resumed is not None else None,
                "optimizers": [type(single).__name__ for single in optimizer.optimizers],
                "best_epoch": best["epoch"], "best_valid_recall": best["recall"],
                "early_stopping_k": config.early_stopping_k, "history": self.history,
                "stopped_by_time_limit": stopped_by_time,
                "examples": n_examples, "fingerprint": fingerprint}

    def train_step(self, tower, optimizer, batch_triggers, batch_candidates, batch_weights,
                   log_q_table) -> float:
        """One optimizer step on one batch; its loss."""
        loss = self.batch_loss(tower, batch_triggers, batch_candidates, batch_weights,
                               log_q_table)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    def batch_loss(self, tower, batch_triggers, batch_candidates, batch_weights, log_q_table):
        config = self.config
        items = torch.cat([batch_triggers, batch_candidates])
        embeddings = unique_rows_forward(
            lambda rows, dropped: tower(rows, id_dropped=dropped), items,
            tower.id_dropout_mask(items.shape))
        trigger_embeddings, candidate_embeddings = embeddings.split(len(batch_triggers))
        log_q = log_q_table[batch_candidates] if log_q_table is not None else None
        loss, _ = sampled_softmax_loss(trigger_embeddings, candidate_embeddings, batch_triggers,
                                       batch_candidates, config.temperature, batch_weights,
                                       log_q)
        return loss


def save_training_summary(model_dir: Path, summary: dict) -> None:
    atomic_write_json(model_dir / "training.json", summary)


def build_tower_config(n_items: int, config: TrainConfig, text_dim: int = 0,
                       visual_dim: int = 0, heads: list[str] | None = None) -> TowerConfig:
    return TowerConfig(n_items=n_items, id_dim=config.id_dim, embedding_dim=config.embedding_dim,
                       hidden_dims=config.hidden_dims, use_id=config.use_id,
                       text_dim=text_dim if config.use_text else 0,
                       visual_dim=visual_dim if config.use_visual else 0,
                       id_dropout=config.id_dropout, heads=heads or ["main"],
                       normalize=config.normalize_embeddings,
                       modality_gates=config.modality_gates)
