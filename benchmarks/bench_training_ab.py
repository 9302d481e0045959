"""One change measured on its own: the trainer's step with this checkout's loss code against
another commit's, interleaved step by step in one process (same tower, optimizer, batches and
thread settings), so the machine's drift hits both alike.

The other commit's ``relrec/model/losses.py`` and ``relrec/train/multihead.py`` are read with
``git show`` and imported under other names; everything else (tower, data, optimizer) is this
checkout's.

    python benchmarks/bench_training_ab.py RUN_DIR --old 2a19af1 --model cf|mtmh [--steps 100]
        [--out JSON]

RUN_DIR: a prepared run (``mtmh`` needs its text embedded: ``relrec embed RUN_DIR``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from relrec.config import RunConfig, TrainConfig
import relrec.train.trainer as trainer_module
from relrec.content.store import fused_content
from relrec.model.losses import log_sampling_probability, sampled_softmax_loss as new_loss
from relrec.train.multihead import VARIANTS, MultiHeadTrainer
from relrec.train.presets import resolve_train_config
from relrec.train.setup import prepare_training
from relrec.train.trainer import Trainer, reproducible_torch

ROOT = Path(__file__).resolve().parents[1]


def module_at(commit: str, path: str, name: str, replace: dict | None = None):
    """Import ``path`` as it was at ``commit`` under the module name ``name``."""
    source = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    for old, new in (replace or {}).items():
        source = source.replace(old, new)
    folder = Path(tempfile.mkdtemp())
    (folder / f"{name}.py").write_text(source)
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--old", required=True, help="the commit whose loss code is compared")
    parser.add_argument("--model", choices=["cf", "mtmh"], default="cf")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    old_losses = module_at(args.old, "src/relrec/model/losses.py", "old_losses")
    config = RunConfig(train=resolve_train_config(TrainConfig(), args.model, {}))
    if args.model == "mtmh":
        old_multihead = module_at(args.old, "src/relrec/train/multihead.py", "old_multihead",
                                  {"from relrec.model.losses import": "from old_losses import"})
        setup = prepare_training(args.run, config, progress=False, extra_modalities=("text",),
                                 with_semantic_labels=False)
        teacher, teacher_ok, _ = fused_content(setup.run, tuple(setup.available) or ("text",))
        new, old = (module.MultiHeadTrainer(setup.train_config, "/tmp/bench-ab", variant="mtmh",
                                            teacher=teacher, teacher_ok=teacher_ok,
                                            progress=False)
                    for module in (sys.modules[MultiHeadTrainer.__module__], old_multihead))
        tower = setup.tower(heads=list(VARIANTS["mtmh"][0]))
    else:
        setup = prepare_training(args.run, config, progress=False)
        new = Trainer(setup.train_config, "/tmp/bench-ab", progress=False)

        class OldTrainer(Trainer):
            """The trainer's own step with the other commit's loss function."""

            def batch_loss(self, *arguments):
                trainer_module.sampled_softmax_loss = old_losses.sampled_softmax_loss
                try:
                    return super().batch_loss(*arguments)
                finally:
                    trainer_module.sampled_softmax_loss = new_loss

        old = OldTrainer(setup.train_config, "/tmp/bench-ab", progress=False)
        tower = setup.tower()
    examples = setup.examples
    triggers, candidates, weights = (torch.as_tensor(np.array(a)) for a in (
        examples.triggers, examples.candidates, examples.weights))
    log_q_table = log_sampling_probability(torch.as_tensor(
        np.array(setup.run.candidate_frequency)))
    order = torch.as_tensor(np.random.default_rng(0).permutation(len(examples)))
    size = setup.train_config.batch_size
    times = {"old": [], "new": []}
    with reproducible_torch(setup.train_config, torch.device("cpu")):
        tower.train()
        optimizer = new._optimizer(tower)

        def step(trainer, batch):
            rows = order[batch * size:(batch + 1) * size]
            started = time.perf_counter()
            trainer.train_step(tower, optimizer, triggers[rows], candidates[rows], weights[rows],
                               log_q_table)
            return time.perf_counter() - started

        for batch in range(5):
            step(old, batch), step(new, batch)
        for batch in range(5, 5 + args.steps):
            # alternate which goes first: neither always follows the other
            pair = (("old", old), ("new", new)) if batch % 2 else (("new", new), ("old", old))
            for label, trainer in pair:
                times[label].append(step(trainer, batch))
    result = {"date": date.today().isoformat(), "command": " ".join(sys.argv),
              "model": args.model, "old_commit": args.old, "steps": args.steps,
              "threads": torch.get_num_threads(),
              "old_step_ms_median": round(1000 * statistics.median(times["old"]), 2),
              "new_step_ms_median": round(1000 * statistics.median(times["new"]), 2)}
    result["old_over_new"] = round(result["old_step_ms_median"]
                                   / result["new_step_ms_median"], 3)
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
