"""One configuration object drives a run; it is written into the run's manifest.

Every command reads the same :class:`RunConfig`; a TOML file (``--config``) fills it and
command-line options override single fields.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from relrec.manifest import read_manifest


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PrepareConfig(_Section):
    session_gap_seconds: int = Field(30 * 60, gt=0, description="new session after this gap")
    window: int = Field(3, ge=1, description="pairs with the next `window` timestamp groups")
    valid_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    min_rating: float | None = Field(
        None, description="drop interactions whose weight/rating is below this (None keeps all)"
    )
    eval_lookahead: int = Field(3, ge=1, description="groups searched for the next distinct item")
    max_target_group: int = Field(
        10, ge=1, description="an evaluation trigger whose next group holds more items than "
        "this (a bulk import, not a 'next item') is left out of the held-out pairs, counted")
    content_cut: Literal["train_end", "data_end"] = Field(
        "train_end", description="which dated annotations (tags with a timestamp) enter the "
        "items' tags: 'train_end' = only those before the validation period (timestamp < "
        "split.valid_start, also with test_fraction 0); 'data_end' = all up to the last "
        "interaction, for a final refit for serving (its evaluation is not time-true)")
    duckdb_memory_limit: str | None = Field(None, description="e.g. '2GB'; DuckDB spills beyond it")
    duckdb_threads: int | None = None


class ContentConfig(_Section):
    text_model: str = "all-MiniLM-L6-v2"
    image_model: str = "efficientnet-lite0"
    cache_dir: str | None = None
    batch_size: int = 64
    frames_per_video: int = 4


class TrainConfig(_Section):
    preset: Literal["auto", "cf", "mtl", "full", "balanced", "mtmh"] = Field(
        "auto", description="auto: cf and candidates that trust content more, the operating "
        "point chosen on validation (relrec.train.operating_point); balanced = auto")
    auto_tolerance: float = Field(
        0.02, ge=0.0, lt=1.0, description="auto: a candidate may lose this fraction of cf's "
        "validation recall@10 (prefer=relevance) or topic match@10 (prefer=engagement)")
    auto_prefer: Literal["relevance", "engagement"] = Field(
        "relevance", description="auto: relevance = the most on-topic candidate within the "
        "recall tolerance; engagement = the highest recall within the topic tolerance")
    auto_refit: bool = Field(
        True, description="auto: retrain the chosen configuration on the training and "
        "validation periods (the epochs found in the search) and serve that; the scored model "
        "stays in RUN/candidates")
    auto_budget: float = Field(
        4.0, ge=1.0, description="auto: the search stops starting candidates after this many "
        "times the cf training's wall time (measured in the same run)")
    # sizes chosen on the ml-latest-small validation split (RESULTS.md): 128-d beat 64-d
    embedding_dim: int = Field(128, ge=2)
    id_dim: int = Field(128, ge=1)
    hidden_dims: list[int] = Field(default_factory=lambda: [256])
    temperature: float = Field(1.0, gt=0.0)
    # the field defaults are the `cf` preset (train/presets.py): raw inner product, τ = 1, logQ
    normalize_embeddings: bool = Field(
        False, description="L2-normalise item embeddings (cosine); False = raw inner product")
    batch_size: int = Field(1024, ge=2)
    learning_rate: float = Field(1e-2, gt=0.0, description="the peak rate of the schedule")
    weight_decay: float = Field(0.0, ge=0.0)
    max_epochs: int = Field(30, ge=1)
    # chosen on the ml-latest-small validation period (BENCHMARKS.md, training speed): cosine
    # from 1e-2 over 3 epochs matched constant 3e-3's recall@10/@50 and topic match within
    # 1.2% at 3.9x less training time (best epoch 2 of 3, against 7 of 11)
    learning_rate_schedule: Literal["constant", "cosine"] = Field(
        "cosine", description="constant: the learning rate throughout, max_epochs with early "
        "stopping; cosine: a linear warm-up over warmup_fraction of the steps, then cosine decay "
        "to 0 at the end of the schedule (schedule_epochs; early stopping still keeps the best "
        "epoch)")
    schedule_epochs: float = Field(3.0, gt=0.0, description="cosine: the schedule's length in "
                                   "epochs (at most max_epochs)")
    schedule_min_steps: int = Field(500, ge=1, description="cosine: at least this many steps "
                                    "(small data sets have few steps per epoch)")
    warmup_fraction: float = Field(0.0, ge=0.0, lt=1.0,
                                   description="cosine: share of the steps spent warming up")
    patience: int = Field(2, ge=0, description="epochs without validation gain before stopping")
    early_stopping_k: int = Field(50, ge=1, description="validation recall@K drives early stopping")
    keep_epoch: Literal["best", "last"] = Field(
        "best", description="best: early stopping, the epoch with the best validation recall; "
        "last: train max_epochs and keep the last (compare models at one training length)")
    seed: int = 0
    logq_correction: bool = True
    logq_strength: float = Field(
        1.0, ge=0.0, le=1.0, description="subtract strength·log q: 1 = full correction (scores "
        "≈ log p(c|t)), 0 = none (PMI-like, popular items buried); between trades the two")
    # multi-task (paper eq. 4-5): per-pair weight (w_co + w_sem * I(sem))
    w_co: float = Field(1.0, ge=0.0)
    w_sem: float = Field(0.0, ge=0.0)
    semantic_threshold: float | None = Field(
        None, description="cos threshold for I(sem); None picks it by semantic_threshold_rule"
    )
    semantic_threshold_rule: Literal["random-baseline", "quantile"] = Field(
        "random-baseline", description="random-baseline: the 95th percentile of text cosine "
        "over random item pairs; quantile: the median over the co-engaged training pairs")
    semantic_min_lift: float = Field(
        1.3, ge=0.0, description="the semantic task is dropped (said in the training notes) "
        "when its pseudo-labels call distinct co-engaged training pairs related no more than "
        "this many times as often as random pairs (noise text: 0.8-1.15 on synthetic data, "
        "ml-latest-small titles: 1.7-2.9): labels from content without signal only add noise "
        "(0 = always keep it, the paper's behaviour)")
    full_search: bool = Field(
        True, description="preset full: choose w_sem (1:1 … 1:1000) and the threshold rule on "
        "validation (skipped when w_sem is given); off = the paper's 1:500")
    opc: bool = Field(False, description="weight pairs by 1/log(1+freq(trigger)) (eq. 6-7)")
    use_id: bool = True
    use_text: bool = False
    use_visual: bool = False
    id_dropout: float = Field(0.0, ge=0.0, le=1.0)
    modality_gates: bool = Field(
        True, description="a learned scale per content modality (2·sigmoid(g), 1 at the start): "
        "the tower can turn down content that carries no signal")
    num_threads: int | None = Field(
        None, description="torch intra-op threads while training (None or 0: torch's current "
        "setting); recorded in the manifest, part of what identical weights depend on")
    deterministic: bool = Field(
        True, description="torch.use_deterministic_algorithms (warn-only), no cuDNN autotuning, "
        "a fixed cuBLAS workspace: the same data, config, versions, machine kind and threads "
        "give bit-identical weights")
    sparse_id_gradients: bool | None = Field(
        None, description="sparse ID-table gradients with SparseAdam; None = above 100k items")
    device: str = Field("cpu", pattern=r"^(cpu|auto|cuda(:\d+)?|mps)$",
                        description="where the tower trains: cpu, cuda, cuda:N, mps, or auto "
                        "(cuda when available); the saved model is always on CPU")
    # MTMH: relevance head loss L_co + relevance_weight · KL(P_content ‖ Q_model)
    relevance_weight: float = Field(1.0, ge=0.0, description="w_r of the MTMH relevance head")
    content_temperature: float = Field(0.05, gt=0.0, description="τ_c of the content teacher")
    relevance_temperature: float = Field(
        0.05, gt=0.0, description="τ of the MTMH relevance head (unit vectors, cosine / τ)")


class RankConfig(_Section):
    """How lists are ranked from a trained single-head model (evaluate, export, recommend and
    single-trigger requests of serve). Not blended: two-head (MTMH) models (they mix relevance
    with alpha), session requests (several triggers) and, while items added at run time exist,
    served lists (noted in the response)."""
    content_blend: float = Field(
        0.0, ge=0.0, description="weight of the standardised content cosine added to the "
        "standardised model score over the candidate pool (0 = the model alone); "
        "`relrec tune-blend` picks it on validation")
    blend_modalities: list[Literal["text", "visual"]] = Field(default_factory=lambda: ["text"])
    ease_blend: float = Field(
        0.0, ge=0.0, description="weight of the standardised EASE weight of the pair (the "
        "model folder's neighbour table, relrec.rerank.neighbours) added the same way (0 = "
        "none); `--preset auto` scores it on validation")
    candidate_pool: int = Field(200, ge=1, description="model candidates re-scored by the blend")


class RerankConfig(_Section):
    """The CAViaR contextual re-ranker (``relrec train-reranker``, :mod:`relrec.train.reranker`):
    trained on validation-period slates of the main model's lists."""
    slate_size: int = Field(20, ge=2, description="slate = the trigger's top-N related list")
    context_size: int = Field(5, ge=1, description="recent session items (before the "
                              "trigger) the contextual model reads")
    dim: int = Field(32, ge=1, description="dimensions of the item space the features use "
                     "(content vectors PCA-reduced to at most this)")
    n_topics: int | None = Field(None, ge=1, description="derived topics (k-means clusters of "
                                 "content); None picks a number from the catalogue size")
    epochs: int = Field(6, ge=1, description="at most this many epochs; the epoch with the "
                        "best held-out normalized entropy is kept")
    batch_size: int = Field(512, ge=1, description="slots per gradient step")
    learning_rate: float = Field(0.005, gt=0.0, description="Adam step size (CAViaR §4)")
    max_triggers: int = Field(40000, ge=1, description="validation-session triggers sampled "
                              "for slates")
    alpha: float | None = Field(None, ge=0.0, le=1.0, description="MTMH: α of the main "
                                "ranking the slates are cut from (None: the model's default)")
    seed: int = 0


class EvaluateConfig(_Section):
    ks: list[int] = Field(default_factory=lambda: [10, 50, 100])
    n_bootstrap: int = Field(1000, ge=10)
    seed: int = 0
    popular_top_fraction: float = 0.01
    unpopular_bottom_fraction: float = 0.10


class RunConfig(_Section):
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    content: ContentConfig = Field(default_factory=ContentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    rank: RankConfig = Field(default_factory=RankConfig)
    rerank: RerankConfig = Field(default_factory=RerankConfig)

    @classmethod
    def from_toml(cls, path: str | Path) -> "RunConfig":
        with open(path, "rb") as handle:
            return cls.model_validate(tomllib.load(handle))


def load_config(path: str | Path | None, run_dir: str | Path | None = None) -> RunConfig:
    """The run's configuration: the TOML file at ``path``, else how ``run_dir`` was prepared
    (its manifest, without the training section), else the defaults."""
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: config file not found")
        try:
            return RunConfig.from_toml(path)
        except Exception as error:  # tomllib / pydantic errors: name the file
            raise ValueError(f"{path}: invalid config: {error}".replace("\n", " ")) from None
    if run_dir is not None and (Path(run_dir) / "manifest.json").exists():
        # keep how the run was prepared; training settings come from the preset and options
        recorded = dict(read_manifest(run_dir)["config"])
        recorded.pop("train", None)
        return RunConfig.model_validate(recorded)
    return RunConfig()
