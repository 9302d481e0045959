"""CAViaR on planted satiation (RESULTS.md, "Synthetic", CAViaR table): NE of the contextual vs
the point-wise engagement model and the re-rank's effect on an on-topic MTMH main ranking.

    python scripts/caviar_synthetic.py [--out /tmp/caviar-synthetic] [--epochs 6]

The same pipeline as ``tests/rerank/test_caviar_synthetic.py`` at the size RESULTS.md names
(400 items, 1,500 users, 10 derived topics); the study reads the synthetic world's test period
(counted, like any test read). Prints the study's summary as JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil

from relrec.config import RunConfig
from relrec.content.stage import write_content
from relrec.data.prepare import prepare_run
from relrec.data.synthetic import generate
from relrec.studies.caviar import run_caviar_study
from relrec.run import RunData
from relrec.train.pipeline import train_run
from relrec.train.presets import resolve_train_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="/tmp/caviar-synthetic")
    parser.add_argument("--epochs", type=int, default=6, help="MTMH epochs at most")
    parser.add_argument("--reranker-epochs", type=int, default=6)
    args = parser.parse_args()
    dataset = generate(n_items=400, n_topics=10, n_users=1500, sessions_per_user=4,
                       session_length=10, autoplay_rate=0.1, popularity_exponent=0.5,
                       satiation=0.5, text_noise=0.3, seed=2)
    shutil.rmtree(args.out, ignore_errors=True)
    config = RunConfig()
    config.prepare.valid_fraction = 0.3  # enough validation sessions for the re-ranker
    config.train = resolve_train_config(config.train, "mtmh", {
        "max_epochs": args.epochs, "batch_size": 256, "embedding_dim": 32, "id_dim": 32,
        "hidden_dims": [64], "early_stopping_k": 20, "use_text": False, "use_visual": False})
    prepare_run(args.out, config, interactions=dataset.interactions, items=dataset.items)
    write_content(RunData(args.out), "text", dataset.content_vectors, source="synthetic")
    train_run(args.out, config, progress=False)
    # main ranking: the MTMH quota merge at α = 0.5 (on-topic, as engagement rankers tend to be)
    result, summary = run_caviar_study(args.out, config, alpha=0.5, n_topics=10,
                                       epochs=args.reranker_epochs)
    rows = {row.system: {"summary": row.summary["all"], "paired": row.paired_vs_reference}
            for row in result.rows}
    print(json.dumps({"normalized_entropy": summary["normalized_entropy"], "rows": rows,
                      "notes": result.notes}, indent=2, default=str))


if __name__ == "__main__":
    main()
