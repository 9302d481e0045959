"""The ``relrec`` command line: prepare → embed → train → evaluate → export / recommend.

Every command takes ``--config FILE.toml`` (a :class:`relrec.config.RunConfig`); options given
on the command line override single fields. Errors in the user's input print one line and
exit with status 2, never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from relrec.config import RunConfig, load_config
from relrec.errors import InputError, RelrecError
from relrec.content.stage import ensure_content
from relrec.data.movielens import download_movielens
from relrec.data.prepare import prepare_run
from relrec.evaluate.evaluation import format_interval
from relrec.related import RelatedItems
from relrec.run import RunData
from relrec.serve.server import run_server
from relrec.studies.caviar import run_caviar_study
from relrec.studies.mtmh import run_mtmh_study
from relrec.studies.paper import run_paper_study
from relrec.studies.report import markdown_table
from relrec.studies.run_evaluation import interval_notes, metrics_table, \
    operating_point_table, paired_table
from relrec.studies.run_evaluation import run_evaluation
from relrec.train.blend_tuning import DEFAULT_WEIGHTS, tune_content_blend
from relrec.train.pipeline import train_preset
from relrec.train.reranker import train_reranker
from relrec.train.setup import TrainingInterrupted, discard_checkpoint, interrupt_message
from relrec.train.trainer import resolve_device

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Related-item lists balancing engagement, relevance and popularity.")
console = Console()
error_console = Console(stderr=True)

ConfigOption = typer.Option(None, "--config", help="TOML file with a RunConfig")
ProgressOption = typer.Option(True, "--progress/--no-progress", help="show progress bars")
AlphaOption = typer.Option(
    None, "--alpha", min=0.0, max=1.0,
    help="MTMH: share of slots from the engagement head (ignored for one head)")
BlendOption = typer.Option(
    None, "--content-blend", min=0.0,
    help="weight of content similarity blended into the model score (0 = model alone; "
         "default: the run's [rank] config, set by `relrec tune-blend`)")


def user_errors(command):
    """Turn errors in the user's input into one line on stderr and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (RelrecError, OSError, ValueError, KeyError) as error:
            message = error.args[0] if isinstance(error, KeyError) and error.args else error
            error_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _set(section, **values):
    """Apply command-line overrides that were given (not None) to a config section."""
    for name, value in values.items():
        if value is not None:
            setattr(section, name, value)


@app.command()
@user_errors
def download(name: str = typer.Argument("ml-latest-small",
                                        help="official MovieLens set, e.g. ml-latest-small, "
                                        "ml-100k, ml-1m"),
             cache_dir: Optional[Path] = typer.Option(
                 None, help="default: $RELREC_CACHE/datasets or ~/.cache/relrec/datasets")):
    """Fetch a public MovieLens data set from its official site into the cache (once)."""
    with console.status(f"downloading {name}"):
        directory = download_movielens(name, cache_dir)
    console.print(f"{name}: {directory}  (relrec prepare --movielens {directory} --out RUN)")


@app.command()
@user_errors
def prepare(
    out: Path = typer.Option(..., "--out", help="run directory to create"),
    interactions: Optional[Path] = typer.Option(None, help="interactions CSV/Parquet/JSONL"),
    items: Optional[Path] = typer.Option(None, help="items CSV/Parquet/JSONL"),
    movielens: Optional[Path] = typer.Option(None, help="a MovieLens directory"),
    images: Optional[Path] = typer.Option(
        None, help="the one folder item images/videos are read from (MovieLens: "
        "<movieId>.jpg posters; generic: relative paths in the items file are taken under it, "
        "local paths outside it are rejected; http(s) URLs are kept)"),
    annotations: Optional[Path] = typer.Option(
        None, help="dated item tags CSV/Parquet/JSONL (item_id,tag,timestamp[,user_id]); "
        "only those before the content cut enter the items' tags"),
    content_cut: Optional[str] = typer.Option(
        None, help="train_end (default: dated content before the validation period) or "
        "data_end (all up to the last interaction: a final refit for serving)"),
    session_gap: Optional[int] = typer.Option(None, help="seconds (default 1800)"),
    window: Optional[int] = typer.Option(None, help="following groups paired (default 3)"),
    valid_fraction: Optional[float] = typer.Option(None),
    test_fraction: Optional[float] = typer.Option(None),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="--out is an existing run: delete the whole run folder "
        "(model, exports, evaluations) and prepare it anew"),
    config_path: Optional[Path] = ConfigOption,
):
    """Ingest and validate data, build sessions, pairs and the time split."""
    config = load_config(config_path)
    _set(config.prepare, session_gap_seconds=session_gap, window=window,
         valid_fraction=valid_fraction, test_fraction=test_fraction, content_cut=content_cut)
    config = RunConfig.model_validate(config.model_dump())
    with console.status("preparing"):
        manifest = prepare_run(out, config, interactions=interactions, items=items,
                               movielens=movielens, images=images, annotations=annotations,
                               overwrite=overwrite)
    rejected = manifest["rejected"]
    console.print(f"[green]prepared[/green] {out}: {manifest['rows']['items']} items, "
                  f"{manifest['rows']['interactions']} interactions, "
                  f"{manifest['pairs']['train_pairs_total']} training pairs, "
                  f"{manifest['pairs']['test_pairs']} test pairs "
                  f"({manifest['pairs']['test_pairs_cold']} cold)")
    cut = manifest["content_cut"]
    if cut["annotations_total"]:
        console.print(f"content cut {cut['rule']} ({cut['condition']}): "
                      f"{cut['annotations_used']} of {cut['annotations_total']} dated "
                      f"annotations used, {cut['annotations_held_back']} held back")
    if rejected:
        console.print(f"rejected rows: {rejected} (details in {out}/data/rejected_rows.csv)")


@app.command()
@user_errors
def embed(run_dir: Path = typer.Argument(...),
          modality: list[str] = typer.Option(["text", "visual"], help="text and/or visual"),
          force: bool = typer.Option(False, help="recompute even if present"),
          config_path: Optional[Path] = ConfigOption, progress: bool = ProgressOption):
    """Compute item content embeddings (cached by content hash and model)."""
    config = load_config(config_path, run_dir)
    notes: dict = {}
    available = ensure_content(RunData(run_dir), list(modality), config.content,
                               progress=progress, notes=notes, force=force)
    console.print(f"content: {available}  notes: {notes}")


@app.command()
@user_errors
def train(run_dir: Path = typer.Argument(...),
          preset: Optional[str] = typer.Option(
              None, help="auto (default: cf and content candidates, the operating point chosen "
              "on validation), cf, mtl, full, mtmh; balanced = auto"),
          prefer: Optional[str] = typer.Option(
              None, help="auto: relevance (default; most on-topic within the recall "
              "tolerance) or engagement (highest recall within the topic tolerance)"),
          tolerance: Optional[float] = typer.Option(
              None, help="auto: fraction of cf's validation metric a candidate may lose "
              "(default 0.02)"),
          epochs: Optional[int] = typer.Option(
              None, help="max epochs: a cap (the default cosine schedule is the train section's "
              "schedule_epochs long, 3)"),
          batch_size: Optional[int] = typer.Option(None),
          temperature: Optional[float] = typer.Option(None),
          seed: Optional[int] = typer.Option(None),
          w_sem: Optional[float] = typer.Option(None, help="semantic weight (w_co = 1)"),
          logq: Optional[bool] = typer.Option(None, "--logq/--no-logq"),
          opc: Optional[bool] = typer.Option(None, "--opc/--no-opc"),
          device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:N, mps or auto"),
          restart: bool = typer.Option(False, "--restart", help="discard the model's training "
                                       "checkpoint and train from the start"),
          config_path: Optional[Path] = ConfigOption, progress: bool = ProgressOption):
    """Train the two-tower model of a preset; resumes from a checkpoint after a kill or
    Ctrl-C (run the same command again)."""
    config = load_config(config_path, run_dir)
    overrides = {k: v for k, v in {"max_epochs": epochs, "batch_size": batch_size,
                                   "temperature": temperature, "seed": seed, "w_sem": w_sem,
                                   "logq_correction": logq, "opc": opc,
                                   "device": device, "auto_prefer": prefer,
                                   "auto_tolerance": tolerance}.items() if v is not None}
    try:  # an unknown or absent device fails before any work
        resolve_device(overrides.get("device", config.train.device))
    except RuntimeError as error:  # torch's own message for a string it cannot parse
        raise ValueError(f"--device: {error}") from None
    if restart:
        discarded = discard_checkpoint(run_dir)
        console.print(f"--restart: discarded the checkpoint {discarded}" if discarded
                      else "--restart: no checkpoint to discard")
    explicit_rank = config_path is not None and "rank" in config.model_fields_set
    try:
        summary = train_preset(run_dir, config, preset=preset, overrides=overrides,
                               explicit_rank=explicit_rank, progress=progress,
                               say=lambda line: console.print(line, highlight=False))
    except KeyboardInterrupt as interrupt:  # Ctrl-C: where it stopped, how to go on; 130
        message = str(interrupt) if isinstance(interrupt, TrainingInterrupted) \
            else interrupt_message(run_dir)
        error_console.print(message, highlight=False, soft_wrap=True, markup=False)
        raise typer.Exit(130) from None
    if summary.get("checkpoint_ignored"):
        console.print(f"note: {summary['checkpoint_ignored']}", highlight=False)
    elif summary.get("resumed_from_epoch") is not None:
        console.print(f"resumed from the checkpoint at epoch {summary['resumed_from_epoch'] + 1}")
    console.print(f"[green]trained[/green] preset {summary['preset']}: best epoch "
                  f"{summary['best_epoch']}, validation recall@{summary['early_stopping_k']} "
                  f"{summary['best_valid_recall']:.4f} ({summary['seconds']:.0f}s)")
    console.print(summary["rank"])


@app.command()
@user_errors
def evaluate(run_dir: Path = typer.Argument(...),
             as_json: bool = typer.Option(False, "--json", help="print JSON"),
             test: bool = typer.Option(False, "--test", help="score the sealed test period "
                                       "(counted in the manifest and the test-read ledger); "
                                       "default: validation"),
             peers: bool = typer.Option(True, "--peers/--no-peers",
                                        help="also score the peers (popularity, co-visitation, "
                                        "EASE, ALS, item2vec), each tuned on validation"),
             bootstrap: Optional[int] = typer.Option(None, help="bootstrap resamples"),
             against: Optional[list[Path]] = typer.Option(
                 None, help="another run dir of the same prepared data: its model is scored "
                 "and paired with this one (repeatable)"),
             content_blend: Optional[float] = BlendOption,
             config_path: Optional[Path] = ConfigOption):
    """Offline metrics with 95% bootstrap intervals, against reference systems."""
    config = load_config(config_path, run_dir)
    if bootstrap is not None:
        config.evaluate.n_bootstrap = bootstrap
    for other in against or []:
        if not (other / "model").is_dir():
            raise InputError(f"{other}: no trained model (run `relrec train {other}` first)")
    result = run_evaluation(run_dir, config.evaluate, split="test" if test else "valid",
                            include_peers=peers, against=against or [],
                            content_blend=content_blend)
    record = RunData(run_dir).manifest.get("operating_point")
    if as_json:
        if record and not test:
            result["operating_point"] = record
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return

    console.print(metrics_table(result))
    if result["paired_differences"]:
        console.print(paired_table(result))
    if record and not test:  # validation rows: what the choice was made on
        console.print(operating_point_table(record))
    for line in interval_notes(result):
        console.print(line)


@app.command("tune-blend")
@user_errors
def tune_blend(run_dir: Path = typer.Argument(...),
               weight: Optional[list[float]] = typer.Option(
                   None, "--weight", min=0.0, help="grid of blend weights (repeatable; "
                   "default 0, 0.125, 0.25, 0.5, 1, 2)"),
               modality: Optional[list[str]] = typer.Option(
                   None, "--modality", help="text and/or visual (default: text)"),
               apply: bool = typer.Option(True, "--apply/--no-apply",
                                          help="write the choice into the run's [rank] config"),
               bootstrap: Optional[int] = typer.Option(None, help="bootstrap resamples"),
               config_path: Optional[Path] = ConfigOption):
    """Choose the content-blend weight on validation; later commands rank with it."""
    config = load_config(config_path, run_dir)
    if bootstrap is not None:
        config.evaluate.n_bootstrap = bootstrap
    modalities = modality or ["text"]
    unknown = set(modalities) - {"text", "visual"}
    if unknown:
        raise ValueError(f"unknown modality {sorted(unknown)[0]!r}: choose text or visual")
    result = tune_content_blend(run_dir, config, weight or DEFAULT_WEIGHTS, modalities,
                                apply=apply)
    table = Table(title="content blend on the validation period, % with 95% intervals")
    columns = [c for c in ("recall@10", "topic_match_rate@10", "popular_share@10")
               if c in result["rows"][0]]
    for column in ("weight", *columns):
        table.add_column(column)
    for row in result["rows"]:
        marker = " ←" if row["content_blend"] == result["chosen"] else ""
        table.add_row(f"{row['content_blend']:g}{marker}",
                      *[format_interval(row[c]) for c in columns])
    console.print(table)
    console.print(f"chosen {result['chosen']:g}: {result['rule']}"
                  + ("" if apply else " (not applied)"))


@app.command()
@user_errors
def study(run_dir: Path = typer.Argument(...),
          name: str = typer.Argument("paper", help="paper (Tables I-III) or mtmh"),
          test: bool = typer.Option(False, "--test", help="report the sealed test period "
                                    "(counted; selection always uses validation); default: "
                                    "validation"),
          epochs: Optional[int] = typer.Option(None, help="max epochs per variant"),
          system: Optional[list[str]] = typer.Option(None, help="only these rows"),
          peers: bool = typer.Option(True, "--peers/--no-peers"),
          report_only: bool = typer.Option(False, help="report the rows finished so far"),
          bootstrap: Optional[int] = typer.Option(None, help="bootstrap resamples"),
          config_path: Optional[Path] = ConfigOption, progress: bool = ProgressOption):
    """Run a study: every variant and peer on the same split; Markdown + JSON + HTML report."""
    config = load_config(config_path, run_dir)
    if epochs is not None:
        config.train.max_epochs = epochs
    if bootstrap is not None:
        config.evaluate.n_bootstrap = bootstrap
    split = "test" if test else "valid"
    if name == "paper":
        result = run_paper_study(run_dir, config, split=split, include_peers=peers,
                                 systems=system or None, progress=progress,
                                 report_only=report_only)
    elif name == "mtmh":
        result = run_mtmh_study(run_dir, config, split=split, progress=progress)
    elif name == "caviar":
        if not test:
            raise InputError("the CAViaR study trains its re-ranker on validation-period "
                             "slates and scores it on test-period slates: pass --test "
                             "(the read is counted)")
        result, _ = run_caviar_study(run_dir, config)
    else:
        raise ValueError(f"unknown study {name!r}: choose paper, mtmh or caviar")

    console.print(markdown_table(result))
    console.print(f"report: {run_dir}/study/{name}/report.html")


@app.command()
@user_errors
def export(run_dir: Path = typer.Argument(...),
           out: Path = typer.Option(..., "--out", help="Parquet file to write"),
           k: int = typer.Option(100, "--k", min=1, max=10000),
           alpha: Optional[float] = AlphaOption,
           diversify: bool = typer.Option(False, "--diversify",
                                          help="CAViaR re-rank of the first K slots"),
           page: int = typer.Option(10, "--page", min=1, help="with --diversify: page size p"),
           window: int = typer.Option(20, "--window", min=1, help="with --diversify: window n"),
           content_blend: Optional[float] = BlendOption,
           progress: bool = ProgressOption):
    """Write every item's top-K related list: trigger, item, rank, score."""
    from rich.progress import Progress

    model = RelatedItems.load(run_dir, content_blend=content_blend)
    if alpha is not None and not model.two_heads:
        console.print("note: --alpha ignored: this model has a single head")
        alpha = None
    with Progress(disable=not progress) as bar:
        task = bar.add_task("export", total=int(model.eligible.sum()))
        result = model.export(out, k, progress=lambda n: bar.advance(task, n), alpha=alpha,
                              diversify=diversify, window=window, page_size=page)
    console.print(f"[green]wrote[/green] {result['rows']} rows to {out}")


@app.command()
@user_errors
def recommend(run_dir: Path = typer.Argument(...), item_id: str = typer.Argument(...),
              k: int = typer.Option(10, "--k", min=1, max=1000),
              alpha: Optional[float] = AlphaOption,
              diversify: bool = typer.Option(False, "--diversify",
                                             help="CAViaR re-rank, one page of k at a time"),
              page: int = typer.Option(1, "--page", min=1,
                                       help="with --diversify: show page P (pages 1..P placed)"),
              window: int = typer.Option(20, "--window", min=1,
                                         help="with --diversify: search window n"),
              content_blend: Optional[float] = BlendOption):
    """Print an item's related list with titles."""
    import pandas as pd

    model = RelatedItems.load(run_dir, content_blend=content_blend)
    notes = model.query_notes(alpha, diversify)
    for note in notes:
        console.print(f"note: {note}")
    diversify = diversify and model.has_reranker
    ids, scores = model.similar_items([item_id], k, alpha=alpha, diversify=diversify,
                                      page=page - 1, window=window)
    if diversify:
        console.print(f"note: diversified: page {page} of size {k}, window {window}")
    titles = model.run.items.set_index("item_id")["title"]
    first = (page - 1) * k + 1 if diversify else 1
    frame = pd.DataFrame([{"rank": first + r, "item": str(i), "title": titles.get(i, ""),
                           "score": float(s)}
                          for r, (i, s) in enumerate(zip(ids[0], scores[0])) if i])
    frame = frame if len(frame) else pd.DataFrame(columns=["rank", "item", "title", "score"])
    title = model.run.items.set_index("item_id")["title"].get(item_id, "")
    table = Table(title=f"related to {item_id}: {title}")
    for column in ("rank", "item", "title", "score"):
        table.add_column(column)
    for row in frame.itertuples():
        table.add_row(str(row.rank), row.item, row.title, f"{row.score:.3f}")
    console.print(table)


@app.command("train-reranker")
@user_errors
def train_reranker_command(
        run_dir: Path = typer.Argument(...),
        alpha: Optional[float] = typer.Option(None, "--alpha", min=0.0, max=1.0,
                                              help="MTMH main ranking's α"),
        slate_size: Optional[int] = typer.Option(
            None, help="slate = the trigger's top-N related list"),
        epochs: Optional[int] = typer.Option(None, min=1),
        topics: Optional[int] = typer.Option(
            None, help="derived topics (k-means clusters of content)"),
        seed: Optional[int] = typer.Option(None),
        config_path: Optional[Path] = ConfigOption):
    """Train the CAViaR contextual re-ranker (and its point-wise baseline) into RUN_DIR/rerank
    from validation-period sessions; test sessions are never read. Settings: the [rerank]
    section of --config (else the run's), options override single fields."""
    config = load_config(config_path, run_dir).rerank
    _set(config, alpha=alpha, slate_size=slate_size, epochs=epochs, n_topics=topics, seed=seed)
    summary = train_reranker(run_dir, config)
    console.print(f"[green]re-ranker trained[/green]: {summary['slots']} slots from "
                  f"{summary['slates']} validation slates, positive rate "
                  f"{summary['positive_rate']:.3f} ({summary['seconds']:.0f}s)")
    verdict = summary["default"]
    ne, topics = verdict["holdout_ne"], verdict["distinct_derived_topics"]
    console.print(
        f"diversify by default: {'recommended' if verdict['recommended'] else 'not recommended'}"
        f" — holdout NE contextual {ne['contextual']:.4f} vs point-wise {ne['pointwise']:.4f}, "
        f"distinct derived topics in the first page {topics['diversified']:.2f} vs "
        f"{topics['main']:.2f} without it (validation sessions). `diversify` stays a request "
        "option, off unless asked.")


@app.command()
@user_errors
def serve(run_dir: Path = typer.Argument(..., help="trained run to serve"),
          compare: Optional[Path] = typer.Option(None, "--compare", help="a second run, side by side"),
          host: str = typer.Option("127.0.0.1"), port: int = typer.Option(8000),
          precomputed: Optional[Path] = typer.Option(
              None, help="exported related lists (default: RUN_DIR/export/related.parquet if present)"),
          exact: bool = typer.Option(False, "--exact", help="ignore exported lists; always the index"),
          images: Optional[Path] = typer.Option(
              None, help="the only folder image files are served from (default: the run's "
              "images folder, from prepare --images)"),
          state_dir: Optional[Path] = typer.Option(None, help="snapshots (default RUN_DIR/serve_state)"),
          admin_token: Optional[str] = typer.Option(
              None, envvar="RELREC_ADMIN_TOKEN",
              help="enables /admin/* (Bearer token, at least 32 characters)"),
          ssl_keyfile: Optional[Path] = typer.Option(None, help="TLS private key (PEM)"),
          ssl_certfile: Optional[Path] = typer.Option(None, help="TLS certificate (PEM)"),
          insecure_admin: bool = typer.Option(
              False, "--insecure-admin",
              help="allow /admin/* on a non-loopback host without TLS (token in clear)"),
          allow_model_download: bool = typer.Option(
              False, "--allow-model-download",
              help="let the run's text model be downloaded (default: local models only)"),
          blocklist: Optional[Path] = typer.Option(None, help="item ids never recommended, one a line"),
          watch: bool = typer.Option(False, "--watch", help="reload when the bundle files change"),
          max_k: int = typer.Option(200, min=1), max_batch: int = typer.Option(100, min=1),
          max_body_bytes: int = typer.Option(256 * 1024, min=1024),
          max_concurrent_requests: int = typer.Option(
              64, min=0, help="requests in flight at once, past it 503 (0: no limit)"),
          max_content_requests: int = typer.Option(
              2, min=0, help="by-content (encoder) calls at once, past it 429 (0: no limit)"),
          header_timeout: float = typer.Option(
              10.0, min=0, help="seconds a client has to send its request, else closed (0: off)"),
          keep_alive_timeout: float = typer.Option(5.0, min=0.1, help="idle keep-alive seconds"),
          max_connections: int = typer.Option(
              1000, min=0, help="open connections; past it the longest idle one is closed "
              "(0: only the open-file limit)"),
          log_rate: int = typer.Option(
              20, min=0, help="log records a second per message, the rest counted (0: all)"),
          http: str = typer.Option(
              "httptools", help="HTTP parser: httptools (the faster) or h11 (pure Python)"),
          search_batch: int = typer.Option(
              16, min=1, help="index-path requests in flight together answered by one search, "
              "at most (1: each alone; up to 19 the scores are bit-identical to a lone search)"),
          log_level: str = typer.Option("info")):
    """HTTP service + web explorer (FastAPI/uvicorn); see src/relrec/serve."""
    run_server(run_dir, host=host, port=port, log_level=log_level, ssl_keyfile=ssl_keyfile,
               ssl_certfile=ssl_certfile, insecure_admin=insecure_admin,
               allow_model_download=allow_model_download, compare_dir=compare,
               precomputed=precomputed, use_precomputed=not exact, image_root=images,
               state_dir=state_dir, admin_token=admin_token, blocklist=blocklist, watch=watch,
               max_k=max_k, max_batch=max_batch, max_body_bytes=max_body_bytes,
               max_concurrent_requests=max_concurrent_requests or None,
               max_content_requests=max_content_requests or None,
               header_timeout=header_timeout or None, keep_alive_timeout=keep_alive_timeout,
               max_connections=max_connections or None, log_rate=log_rate or None,
               search_batch=search_batch, http=http)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
