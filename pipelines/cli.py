"""The ``leadscore`` command line: one sub-command per job.

Heavy libraries (Feast, MLflow, Great Expectations, LightGBM) are imported inside the commands
that need them so that ``leadscore --help`` answers at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from leadscore.settings import Settings, get_settings

if TYPE_CHECKING:
    from pipelines.feature_store import FeatureTables
    from pipelines.train_flow import TrainingResult
    from training.promotion import Decision

app = typer.Typer(
    name="leadscore",
    help="Predictive lead scoring: calibrated, fresh, explained.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
features_app = typer.Typer(help="Feature store: apply definitions, build tables, materialize.")
app.add_typer(features_app, name="features")
quarantine_app = typer.Typer(help="Rows rejected by ingest: list them, replay them once fixed.")
app.add_typer(quarantine_app, name="quarantine")
keys_app = typer.Typer(help="API keys of the scoring API: create, list, revoke.")
app.add_typer(keys_app, name="keys")
audit_app = typer.Typer(help="The audit log of every score the API served: export it.")
app.add_typer(audit_app, name="audit")
webhooks_app = typer.Typer(help="Hot-lead webhook deliveries: list them, send failed ones again.")
app.add_typer(webhooks_app, name="webhooks")
console = Console(stderr=True)
T = TypeVar("T")

TABLE_NAMES = ("leads", "events", "stage_changes", "outcomes")


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False,
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file",
            help="Settings file (LEADSCORE_... = value lines), e.g. one per data set; "
            "variables already set in the environment win.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Predictive lead scoring: calibrated, fresh, explained.

    Typical first run (what `make run` does): `leadscore run-all`.
    """
    if env_file is not None:
        from dotenv import load_dotenv

        load_dotenv(env_file, override=False)
        get_settings.cache_clear()
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        # Libraries' routine chatter (registry refreshes, deprecation notices) hides our output.
        for noisy in ("feast", "py.warnings", "alembic", "mlflow.store", "great_expectations"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


@contextmanager
def _step(description: str) -> Iterator[None]:
    """Show a spinner with elapsed time while a long step runs."""
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task(description, total=None)
        yield
        progress.update(task, description=f"{description}: done")


def _run(description: str, fn: Callable[[], T]) -> T:
    """Run one step; a bad input or missing prerequisite ends the command with its message."""
    try:
        with _step(description):
            return fn()
    except (ValueError, LookupError, FileNotFoundError) as e:
        raise _fail(f"{description} failed: {e}") from e


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=1)


def _find_sources(directory: Path) -> dict[str, Path]:
    sources: dict[str, Path] = {}
    for name in TABLE_NAMES:
        for suffix in (".parquet", ".csv", ".csv.gz"):
            candidate = directory / f"{name}{suffix}"
            if candidate.exists():
                sources[name] = candidate
                break
    return sources


@app.command("demo-data")
def demo_data(
    n_leads: Annotated[int | None, typer.Option(help="Number of leads.", min=1)] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (same seed, same data).")] = None,
    end_date: Annotated[
        datetime | None, typer.Option(formats=["%Y-%m-%d"], help="Last day of history.")
    ] = None,
    bad_row_share: Annotated[
        float | None, typer.Option(help="Share of rows corrupted on purpose.", min=0, max=0.5)
    ] = None,
    file_format: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
    out: Annotated[Path | None, typer.Option(help="Output folder (default: raw dir).")] = None,
) -> None:
    """Generate a realistic synthetic CRM and marketing history.

    Writes leads, events, stage_changes and outcomes (plus truth.parquet with each lead's true
    conversion probability) to the raw folder.

    Examples:

        leadscore demo-data --n-leads 100000 --seed 7

        leadscore demo-data --bad-row-share 0.02 --format csv --out /tmp/export
    """
    from pipelines.demo_data import generate_demo_data, write_demo_data

    if file_format not in ("parquet", "csv"):
        raise _fail(f"--format must be parquet or csv, not {file_format!r}")
    fmt: Literal["parquet", "csv"] = "csv" if file_format == "csv" else "parquet"
    cfg = get_settings().demo
    # The default history ends with yesterday, the last full day, so nothing lies in the future.
    day = end_date.date() if end_date else (cfg.end_date or date.today() - timedelta(days=1))
    data = _run(
        "generating demo data",
        lambda: generate_demo_data(
            n_leads=n_leads or cfg.n_leads,
            seed=cfg.seed if seed is None else seed,
            end_date=day,
            months=cfg.months,
            bad_row_share=cfg.bad_row_share if bad_row_share is None else bad_row_share,
        ),
    )
    paths = write_demo_data(data, out_dir=out or get_settings().paths.raw, file_format=fmt)
    for name, path in paths.items():
        console.print(f"{name}: {path}")


@app.command()
def ingest(
    source_dir: Annotated[
        Path | None, typer.Option(help="Folder with leads/events/stage_changes/outcomes files.")
    ] = None,
    leads: Annotated[Path | None, typer.Option(help="Leads file (CSV or Parquet).")] = None,
    events: Annotated[Path | None, typer.Option(help="Events file.")] = None,
    stage_changes: Annotated[Path | None, typer.Option(help="Stage changes file.")] = None,
    outcomes: Annotated[Path | None, typer.Option(help="Outcomes file.")] = None,
    mapping: Annotated[
        Path | None,
        typer.Option(help="Mapping file (YAML) of a CRM export in its own shape."),
    ] = None,
) -> None:
    """Validate input tables; good rows to the warehouse, bad rows to quarantine.

    Nothing is dropped silently: every rejected row is kept in quarantine with the rules it
    broke. Re-ingesting merges by key with what is already stored, so loading the same
    export twice changes nothing.

    Examples:

        leadscore ingest                       # the raw folder (demo data)

        leadscore ingest --source-dir exports/2026-11

        leadscore ingest --leads leads.csv --outcomes deals.parquet

        leadscore ingest --mapping examples/bank-marketing/mapping.yaml
    """
    from pipelines.ingest import ingest_mapping, ingest_tables

    settings = get_settings()
    if mapping is not None:
        if any(p is not None for p in (source_dir, leads, events, stage_changes, outcomes)):
            raise _fail("--mapping names its own sources: leave out --source-dir and --leads ...")
        mapped = _run(
            "mapping, validating and ingesting",
            lambda: ingest_mapping(
                mapping,
                warehouse_dir=settings.paths.warehouse,
                quarantine_dir=settings.paths.quarantine,
            ),
        )
        typer.echo(mapped.summary())
        return
    explicit = {
        name: path
        for name, path in zip(TABLE_NAMES, (leads, events, stage_changes, outcomes), strict=True)
        if path is not None
    }
    sources = explicit or _find_sources(source_dir or settings.paths.raw)
    if not sources:
        raise _fail(
            f"no input tables found in {source_dir or settings.paths.raw}: expected "
            "leads/events/stage_changes/outcomes as .parquet, .csv or .csv.gz (or pass --leads "
            "FILE ...); run `leadscore demo-data` for demo data"
        )
    report = _run(
        "validating and ingesting",
        lambda: ingest_tables(
            sources=sources,
            warehouse_dir=settings.paths.warehouse,
            quarantine_dir=settings.paths.quarantine,
        ),
    )
    typer.echo(report.summary())


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="What the key is for (e.g. the CRM's name).")],
    scope: Annotated[
        list[str],
        typer.Option(
            help="Scope the key carries (repeat the option): score:read, events:write, "
            "outcomes:write, reports:read, metrics:read, admin (admin implies all)."
        ),
    ],
) -> None:
    """Create an API key and print it once: only its hash is stored, so it cannot be shown
    again (revoke it and create another if it is lost).

    Examples:

        leadscore keys create --name crm-sync --scope score:read --scope events:write

        leadscore keys create --name ops --scope admin
    """
    from leadscore.auth import ApiKeyStore

    settings = get_settings()
    try:
        key, record = ApiKeyStore(settings.auth_db_url).create(name, scope)
    except ValueError as e:
        raise _fail(str(e)) from e
    console.print(
        f"created key {record.prefix} ({record.name}) with scopes "
        f"{', '.join(sorted(record.scopes))}; it is shown once, store it now:"
    )
    typer.echo(key)


def _moment(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 date or time from an option (UTC unless it names a zone)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as e:
        raise _fail(f"{option}: {value!r} is not an ISO 8601 date or time") from e
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@audit_app.command("export")
def audit_export(
    out: Annotated[Path, typer.Option(help="File to write (.csv, .jsonl or .parquet).")],
    since: Annotated[
        str | None, typer.Option(help="Only scores served at or after this (ISO 8601, UTC).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Only scores served before this (ISO 8601, UTC).")
    ] = None,
    lead_id: Annotated[int | None, typer.Option(help="Only this lead's scores.")] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="csv, jsonl or parquet (default: from the suffix)."),
    ] = None,
) -> None:
    """Export served scores (lead, time, model version, probability, band, reasons, feature
    values, request id) in the order they were served.

    Examples:

        leadscore audit export --out audit-2026-11.csv --since 2026-11-01 --until 2026-12-01

        leadscore audit export --out lead-42.jsonl --lead-id 42
    """
    from leadscore.audit_export import format_of, write_export
    from leadscore.score_log import ScoreLog

    settings = get_settings()
    try:
        chosen = format_of(out, fmt)
    except ValueError as e:
        raise _fail(str(e)) from e
    start, end = _moment(since, "--since"), _moment(until, "--until")
    if start is not None and end is not None and end <= start:
        raise _fail(f"--until ({until}) must be after --since ({since})")
    scores = ScoreLog(settings.event_log_url).iter_scores(since=start, until=end, lead_id=lead_id)
    rows = write_export(scores, out, chosen)
    console.print(f"wrote {rows} served score(s) to {out}")


@webhooks_app.command("list")
def webhooks_list(
    status: Annotated[
        str | None, typer.Option(help="Only deliveries of this status: pending, delivered, failed.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Most deliveries listed.")] = 50,
) -> None:
    """Hot-lead webhook deliveries, newest first: status, attempts, last answer or error.

    Examples:

        leadscore webhooks list --status failed
    """
    from rich.table import Table

    from leadscore.webhooks import STATUSES, WebhookLog

    if status is not None and status not in STATUSES:
        raise _fail(f"--status: {status!r} is not one of {', '.join(STATUSES)}")
    log = WebhookLog(get_settings().event_log_url)
    counts = log.counts()
    table = Table("delivery", "lead", "status", "attempts", "created", "last answer")
    for d in log.list(status=status, limit=limit):
        answer = d.last_error or (str(d.response_status) if d.response_status else "-")
        table.add_row(
            d.delivery_id,
            str(d.lead_id),
            d.status,
            str(d.attempts),
            d.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            answer,
        )
    console.print(table)
    console.print(", ".join(f"{n} {s}" for s, n in counts.items()))


@webhooks_app.command("retry")
def webhooks_retry(
    delivery_id: Annotated[str, typer.Argument(help="The delivery to send again.")],
) -> None:
    """Send a failed delivery again, with a fresh budget of attempts (the running API sends it
    within seconds).

    Examples:

        leadscore webhooks retry 3f2a9c...
    """
    from leadscore.webhooks import WebhookLog

    if not WebhookLog(get_settings().event_log_url).retry(delivery_id):
        raise _fail(f"no undelivered webhook delivery {delivery_id!r}")
    console.print(f"delivery {delivery_id} is pending again")


@keys_app.command("list")
def keys_list() -> None:
    """Every API key: prefix, id, name, scopes, created, last used and revoked (never the key).

    Examples:

        leadscore keys list
    """
    from rich.table import Table

    from leadscore.auth import ApiKeyStore

    keys = ApiKeyStore(get_settings().auth_db_url).list()
    table = Table("prefix", "id", "name", "scopes", "created", "last used", "revoked")

    def when(moment: datetime | None) -> str:
        return moment.strftime("%Y-%m-%d %H:%M:%S") if moment is not None else "-"

    for k in keys:
        table.add_row(
            k.prefix,
            k.key_id,
            k.name,
            " ".join(sorted(k.scopes)),
            when(k.created_at),
            when(k.last_used_at),
            when(k.revoked_at),
        )
    Console(width=160).print(table)
    console.print(f"{len(keys)} keys, {sum(k.active for k in keys)} active")


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key's prefix (ls_xxxxxxxx) or id.")],
) -> None:
    """Revoke an API key: the API refuses it within auth.cache_seconds.

    Examples:

        leadscore keys revoke ls_AbCd1234
    """
    from leadscore.auth import ApiKeyStore, UnknownKeyError

    try:
        record = ApiKeyStore(get_settings().auth_db_url).revoke(key)
    except UnknownKeyError as e:
        raise _fail(str(e)) from e
    typer.echo(f"revoked {record.prefix} ({record.name}) at {record.revoked_at}")


@quarantine_app.command("list")
def quarantine_list(
    table: Annotated[str | None, typer.Option(help="Only this table's rows.")] = None,
    rule: Annotated[
        str | None, typer.Option(help="Only rows that broke this rule, e.g. range:age.")
    ] = None,
    show_all: Annotated[
        bool, typer.Option("--all", help="Also rows already replayed or superseded.")
    ] = False,
    limit: Annotated[int, typer.Option(help="Rows shown (the summary counts all).", min=0)] = 20,
    export: Annotated[
        Path | None, typer.Option(help="Write the selected rows (all columns) to this CSV.")
    ] = None,
) -> None:
    """Show quarantined rows: a count per table and rule, then each row with its reasons and
    the values the source held.

    Examples:

        leadscore quarantine list

        leadscore quarantine list --table events --rule lead_exists:lead_id --limit 5

        leadscore quarantine list --export bad_rows.csv
    """
    from rich.table import Table

    from pipelines.ingest import OPEN, TABLES, list_quarantine

    if table is not None and table not in TABLES:
        raise _fail(f"--table must be one of {', '.join(TABLES)}, not {table!r}")
    rows = list_quarantine(get_settings().paths.quarantine)
    if not show_all:
        rows = rows[rows["status"] == OPEN]
    if table is not None:
        rows = rows[rows["table"] == table]
    if rule is not None:
        rows = rows[rows["rules"].str.split(";").map(lambda rules: rule in rules)]
    if rows.empty:
        console.print("the quarantine holds no such rows")
        return
    counts = rows.assign(rule=rows["rules"].str.split(";")).explode("rule")
    summary = Table("table", "rule", "rows")
    sizes = counts.groupby(["table", "rule"]).size().reset_index(name="n")
    for name, broken, n in sizes.itertuples(index=False):
        summary.add_row(str(name), str(broken), f"{n:,}")
    out = Console()
    out.width = max(out.width, 140)
    out.print(summary)
    detail = Table("table", "source", "row", "status", "why", "original row")
    for r in rows.head(limit).itertuples(index=False):
        detail.add_row(
            str(r.table),
            Path(str(r.source)).name,
            str(r.row_number),
            str(r.status),
            str(r.messages),
            str(r.original_row),
        )
    out.print(detail)
    console.print(f"{len(rows):,} rows" + (f" (first {limit} shown)" if len(rows) > limit else ""))
    if export is not None:
        rows.to_csv(export, index=False)
        console.print(f"written to {export}")


@quarantine_app.command("replay")
def quarantine_replay(
    table: Annotated[str | None, typer.Option(help="Only this table's rows.")] = None,
) -> None:
    """Re-ingest the open quarantined rows from their sources, once the sources are fixed.

    Each row is read again from its source (through its mapping file, if it came through
    one) at the same row position and validated against what is stored now: rows that pass
    are stored and marked replayed; rows that fail again stay quarantined with fresh reasons.
    Fix the rows in place, or fix the mapping, or ingest what they refer to, then replay.

    Examples:

        leadscore quarantine replay

        leadscore quarantine replay --table events
    """
    from pipelines.ingest import replay_quarantine

    settings = get_settings()
    report = _run(
        "replaying quarantined rows",
        lambda: replay_quarantine(
            warehouse_dir=settings.paths.warehouse,
            quarantine_dir=settings.paths.quarantine,
            table=table,
        ),
    )
    typer.echo(report.summary())


@features_app.command("list")
def features_list(
    view: Annotated[
        str | None, typer.Option(help="Only this view, e.g. lead_behaviour or lead_recency.")
    ] = None,
    model_only: Annotated[
        bool, typer.Option("--model-only", help="Hide internal columns of on-demand inputs.")
    ] = False,
) -> None:
    """List every feature: its view, kind, description and the label used in score reasons.

    Examples:

        leadscore features list

        leadscore features list --view lead_recency
    """
    from rich.table import Table

    from leadscore.feature_catalog import ALL_FEATURES

    specs = [
        f
        for f in ALL_FEATURES
        if (view is None or f.view == view) and not (model_only and f.kind == "internal")
    ]
    if not specs:
        views = sorted({f.view for f in ALL_FEATURES})
        raise _fail(f"no feature in view {view!r}; views: {', '.join(views)}")
    table = Table("feature", "view", "kind", "description", "reason label")
    table.columns[0].no_wrap = True
    for f in specs:
        table.add_row(f.name, f.view, f.kind, f.description, f.label)
    out = Console()
    out.width = max(out.width, 140)  # a readable table even when piped
    out.print(table)
    console.print(f"{len(specs)} features")


@features_app.command("build")
def features_build(
    as_of: Annotated[
        datetime | None, typer.Option(help="The present (default: latest timestamp in data).")
    ] = None,
) -> None:
    """Compute the profile, behaviour and lifecycle feature tables from the warehouse and
    the live event log. Run it (then `features materialize`) daily so that window counts of
    idle leads move on; recency and decay are computed at request time anyway.

    Examples:

        leadscore features build
    """
    result = _build_tables(get_settings(), as_of)
    console.print(
        f"{result.n_leads} leads, {result.n_behaviour_rows} behaviour rows as of {result.as_of}"
    )


def _build_tables(settings: Settings, as_of: datetime | None) -> FeatureTables:
    from leadscore.event_log import EventLog, all_events
    from pipelines.feature_store import (
        build_feature_tables,
        dataset_attributes,
        publish_offline_tables,
    )
    from pipelines.ingest import load_attributes, load_outcomes, load_table

    tables = {name: load_table(settings.paths.warehouse, name) for name in TABLE_NAMES}
    # Live events received by the API since the last ingest count too.
    tables["events"] = all_events(warehouse=tables["events"], log=EventLog(settings.event_log_url))
    # And so do the outcomes posted to the API (POST /v1/outcomes).
    tables["outcomes"] = load_outcomes(settings.paths.warehouse, settings.event_log_url)
    if tables["leads"].empty:
        raise _fail("the warehouse has no leads: run `leadscore ingest` first")
    result = _run(
        "building feature tables",
        lambda: build_feature_tables(
            tables=tables,
            repo_dir=settings.paths.feature_repo,
            snapshot_days=settings.training.snapshot_days,
            half_life_days=settings.feast.half_life_days,
            horizon_days=settings.training.horizon_days,
            as_of=as_of,
            attributes=load_attributes(settings.paths.warehouse),
            attribute_specs=dataset_attributes(settings),
        ),
    )
    if settings.feast.offline_store == "postgres":
        _run("publishing feature tables", lambda: publish_offline_tables(settings, result))
    return result


@features_app.command("apply")
def features_apply() -> None:
    """Register entities, sources, feature views and services in the Feast registry.

    Examples:

        leadscore features apply
    """
    from pipelines.feature_store import apply_definitions, dataset_attributes, open_store

    settings = get_settings()
    names = _run(
        "applying feature definitions",
        lambda: apply_definitions(open_store(settings), dataset_attributes(settings)),
    )
    console.print("applied: " + ", ".join(names))


@features_app.command("materialize")
def features_materialize(
    end: Annotated[
        datetime | None, typer.Option(help="Load rows up to this moment (default: now).")
    ] = None,
) -> None:
    """Load the newest feature rows into the online store (incremental after the first run).

    Examples:

        leadscore features materialize
    """
    from pipelines.feature_store import materialize_features, open_store

    moment = end or datetime.now().astimezone()
    _run(
        "materializing online features",
        lambda: materialize_features(open_store(get_settings()), end=moment),
    )


@app.command()
def train(
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude",
            metavar="COLUMN",
            help="Leave this feature out of the model (repeatable); adds to "
            "training.exclude_features.",
        ),
    ] = None,
    confirm: Annotated[
        list[str] | None,
        typer.Option(
            "--confirm",
            metavar="COLUMN",
            help="Confirm this feature is known before the outcome, whatever its ROC AUC "
            "alone (repeatable); adds to training.confirmed_features.",
        ),
    ] = None,
) -> None:
    """Train, calibrate, evaluate and register a model from the feature store.

    Before fitting, every feature is audited on the training period: constant ones are
    dropped, and one that alone predicts the outcome almost perfectly (ROC AUC above
    training.leakage_auc_max) is refused as a likely leak until it is excluded or confirmed.
    Training also refuses too few won or lost leads (training.min_won / training.min_lost).
    The new version is the `challenger` (and `champion` only when there is none yet): it is
    judged against the champion on the same test period and promoted by `leadscore promote`.
    The run logs the test metrics with bootstrap intervals, the logistic-regression
    baseline's, a rolling-origin backtest, the review plots and the model.

    Examples:

        leadscore train

        leadscore train --exclude deal_stage --confirm lead_score_legacy

        LEADSCORE_TRAINING__HORIZON_DAYS=90 leadscore train
    """
    from pipelines.train_flow import run_training

    settings = get_settings()
    cfg = settings.training
    if exclude or confirm:
        cfg = cfg.model_copy(
            update={
                "exclude_features": [*cfg.exclude_features, *(exclude or [])],
                "confirmed_features": [*cfg.confirmed_features, *(confirm or [])],
            }
        )
        settings = settings.model_copy(update={"training": cfg})
    result = _run("training", lambda: run_training(settings))
    m = result.metrics
    console.print(
        f"examples: {result.labels.examples} ({result.labels.positives} converted; left out: "
        f"{result.labels.immature} immature, {result.labels.after_outcome} after outcome)\n"
        f"{result.audit.summary()}\n"
        + (
            (
                "split: at random by lead (training.split=random): compare with published "
                "cross-validation, not with how the model holds up on later leads\n"
                if settings.training.split == "random"
                else "split: at random (every example has the same moment)\n"
            )
            if result.split == "random"
            else ""
        )
        + f"test period: ROC AUC {m['roc_auc']:.3f}, PR AUC {m['pr_auc']:.3f}, "
        f"Brier {m['brier']:.4f}, log loss {m['log_loss']:.4f}, ECE {m['ece']:.4f}\n"
        f"calibration: {result.calibration_method}; bands: hot from "
        f"{result.bands['hot_min']:.3f}, warm from {result.bands['warm_min']:.3f}\n"
        f"registered {result.model.name} version {result.model.version}"
        + (f" ({', '.join(result.model.aliases)})" if result.model.aliases else "")
    )
    typer.echo(_metrics_table(result))


def _metrics_table(result: TrainingResult) -> str:
    """Test-period metrics with their bootstrap intervals, the baseline's, and the backtest."""
    names = ("roc_auc", "pr_auc", "brier", "log_loss", "ece", "lift_top_decile")
    models = [("lightgbm", result.evaluation)]
    if result.baseline is not None:
        models.append(("baseline", result.baseline))
    lines = [f"{'test period (95% CI)':<22}" + "".join(f"{n:>24}" for n in names)]
    for label, evaluation in models:
        cells = []
        for n in names:
            low, high = evaluation.intervals.get(n, (float("nan"), float("nan")))
            cells.append(f"{evaluation.metrics[n]:.3f} [{low:.3f}-{high:.3f}]".rjust(24))
        lines.append(f"{label:<22}" + "".join(cells))
    if result.backtest is not None:
        summary = result.backtest.summary()
        lines.append(
            f"backtest ({result.backtest.n_folds} folds, mean ± sd): "
            + ", ".join(
                f"{metric} {row['mean']:.3f} ± {row['std']:.3f}"
                for metric, row in summary.iterrows()
            )
        )
    return "\n".join(lines)


models_app = typer.Typer(help="Registered model versions: champion decisions and their history.")
app.add_typer(models_app, name="models")


def _print_decision(decision: Decision) -> None:
    typer.echo(decision.summary())


@app.command()
def promote(
    version: Annotated[
        str | None, typer.Option(help="Version to promote (default: the challenger).")
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Promote even if the rule refuses it (needs --reason)."),
    ] = False,
    reason: Annotated[
        str | None, typer.Option(help="Why (required with --force); recorded in the history.")
    ] = None,
) -> None:
    """Make the challenger (or --version) the champion if it is not worse than the champion.

    The rule compares both models on the challenger's test period, as measured when it was
    trained: on each of promotion.metrics (default ROC AUC and Brier score) the challenger may
    be worse by at most promotion.tolerance. A refusal exits with status 1 and lists each
    metric, both values, the tolerance and the verdict. If the champion changed since the
    challenger was trained, train again (`leadscore retrain --anyway`) or force. Every
    decision is recorded (`leadscore models history`); the API serves the new champion within
    serving.reload_seconds.

    Examples:

        leadscore promote

        leadscore promote --version 7 --force --reason "Q4 campaign mix; approved by sales ops"
    """
    from training.promotion import promote as promote_version

    if force and not (reason and reason.strip()):
        raise _fail("--force needs --reason: say why the rule is overridden (it is recorded)")
    settings = get_settings()
    decision = _run(
        "applying the promotion rule",
        lambda: promote_version(settings, version=version, force=force, reason=reason),
    )
    _print_decision(decision)
    if decision.action == "refused":
        console.print(
            f"to promote it anyway: leadscore promote --version {decision.version} --force "
            '--reason "..."'
        )
        raise typer.Exit(code=1)


@app.command()
def rollback(
    reason: Annotated[str | None, typer.Option(help="Why; recorded in the history.")] = None,
) -> None:
    """Restore the previous champion: the one the current champion replaced.

    Undoes the last champion change recorded in the history: after versions 1, 2 and 3 were
    promoted in turn, a rollback restores 2 and a second one 1. The API serves it within
    serving.reload_seconds.

    Examples:

        leadscore rollback --reason "conversion of hot leads dropped after the release"
    """
    from training.promotion import rollback as rollback_champion

    settings = get_settings()
    decision = _run("rolling back", lambda: rollback_champion(settings, reason=reason))
    _print_decision(decision)


@models_app.command("history")
def models_history(
    limit: Annotated[int, typer.Option(help="Newest decisions shown.", min=1)] = 20,
) -> None:
    """Every champion decision, newest first: when, what, which version, the champion before,
    the metrics compared, the reason and who (OS user). Kept in the model registry.

    Examples:

        leadscore models history

        leadscore models history --limit 5
    """
    from rich.table import Table

    from training.promotion import read_history

    decisions = _run("reading the history", lambda: read_history(get_settings(), limit=None))
    if not decisions:
        console.print("no decision recorded yet")
        return
    table = Table(
        "time (UTC)", "action", "version", "previous champion", "metrics", "reason", "who"
    )
    for d in decisions[:limit]:
        table.add_row(
            f"{d.at:%Y-%m-%d %H:%M:%S}",
            d.action,
            d.version,
            d.previous_champion or "-",
            d.metrics_text().replace("; ", "\n") or "-",
            "\n".join(text for text in (d.reason, d.detail) if text),
            d.user,
        )
    out = Console()
    out.width = max(out.width, 160)  # a readable table even when piped
    out.print(table)
    shown = min(limit, len(decisions))
    console.print(
        f"{len(decisions)} decisions"
        + (f" ({shown} newest shown)" if shown < len(decisions) else "")
    )


@app.command()
def retrain(
    anyway: Annotated[
        bool, typer.Option("--anyway", help="Train even if no outcome arrived since last time.")
    ] = False,
) -> None:
    """Retrain on the outcomes fed back since the last training, then apply the promotion rule.

    Counts the outcomes in the warehouse that the last training did not see (ingest them
    first; run `leadscore features build` and `features materialize` for fresh features),
    stops if there are none, else trains a challenger (compared with the champion on its own
    test period) and promotes it if it is not worse (`leadscore promote`'s rule). Prints the
    new outcomes, both models' metrics and the decision; a refusal is a normal end (status 0).

    Examples:

        leadscore ingest --outcomes deals_this_week.csv && leadscore retrain

        leadscore retrain --anyway
    """
    from pipelines.ingest import load_outcomes
    from pipelines.train_flow import run_training
    from training.promotion import new_outcomes
    from training.promotion import promote as promote_version

    settings = get_settings()
    fresh = _run(
        "counting new outcomes",
        lambda: new_outcomes(
            settings, load_outcomes(settings.paths.warehouse, settings.event_log_url)
        ),
    )
    typer.echo(fresh.describe())
    if fresh.count == 0 and not anyway:
        typer.echo("no new outcomes: nothing to retrain on (--anyway trains all the same)")
        return
    result = _run("training", lambda: run_training(settings))
    m = result.metrics
    typer.echo(
        f"trained version {result.model.version} on {result.labels.examples} examples "
        f"({result.labels.positives} converted): test ROC AUC {m['roc_auc']:.4f}, "
        f"Brier {m['brier']:.4f}"
    )
    if settings.mlflow.champion_alias in result.model.aliases:
        typer.echo(f"bootstrap: version {result.model.version} is the champion (there was none)")
        return
    decision = _run(
        "applying the promotion rule",
        lambda: promote_version(settings, version=result.model.version),
    )
    _print_decision(decision)


@app.command("score-batch")
def score_batch(
    output: Annotated[
        Path | None,
        typer.Option(help="Scores file, .csv or .parquet (upserted by lead_id).", metavar="PATH"),
    ] = None,
    postgres_url: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL URL of the scores table (upserted by lead_id).", metavar="URL"
        ),
    ] = None,
    table: Annotated[
        str | None,
        typer.Option(
            help="Scores table, schema.table (default: writeback.postgres_table).", metavar="NAME"
        ),
    ] = None,
    include_closed: Annotated[
        bool, typer.Option("--include-closed", help="Score leads with an outcome too.")
    ] = False,
) -> None:
    """Score every open lead from the offline feature tables and hand the scores to the CRM.

    Uses the model version behind the serving alias and each lead's latest feature rows
    (run `leadscore features build` first for fresh ones). Each row holds lead_id, probability,
    band, reasons (JSON), model_version and scored_at; existing rows of other leads are kept.
    Without --output or --postgres-url, the writeback settings decide, else
    data/scores/lead_scores.parquet.

    Examples:

        leadscore score-batch

        leadscore score-batch --output exports/lead_scores.csv --include-closed

        leadscore score-batch --postgres-url postgresql://crm@db/crm --table sales.lead_scores
    """
    from pipelines.score_batch import score_open_leads, write_scores
    from pipelines.writeback import FILE_SUFFIXES

    if output is not None and not output.name.lower().endswith(FILE_SUFFIXES):
        raise _fail(f"--output must be a {' or '.join(FILE_SUFFIXES)} file, not {output}")
    settings = get_settings()
    scores = _run(
        "scoring leads", lambda: score_open_leads(settings, include_closed=include_closed)
    )
    written = _run(
        "writing scores",
        lambda: write_scores(
            settings,
            scores,
            # A path typed on the command line is relative to where it is typed.
            output=output.resolve() if output is not None else None,
            postgres_url=postgres_url,
            table=table,
        ),
    )
    counts = scores["band"].value_counts()
    bands = ", ".join(f"{band} {int(counts.get(band, 0))}" for band in ("hot", "warm", "cold"))
    kind = "leads (open and closed)" if include_closed else "open leads"
    typer.echo(f"scored {len(scores)} {kind}: {bands}")
    for where in written:
        typer.echo(where.describe())


# --- marketing reports (issue #7) -------------------------------------------------------------
REPORTS_KEY_NAME = "demo-reports"


@app.command("report")
def report(
    names: Annotated[
        list[str],
        typer.Argument(help="calibration, bands, channels, drift (one or more), or all."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for the HTML, PNG and CSV files.")],
    start: Annotated[
        str | None, typer.Option(help="First day of lead creation (YYYY-MM-DD).")
    ] = None,
    end: Annotated[str | None, typer.Option(help="Last day of lead creation (YYYY-MM-DD).")] = None,
    channel: Annotated[str | None, typer.Option(help="Only leads of this source channel.")] = None,
    scores: Annotated[
        str, typer.Option(help="Scores of calibration and bands: holdout or served.")
    ] = "holdout",
) -> None:
    """Write reports as static HTML with PNG charts and CSV tables (for e-mail or archiving).

    Examples:

        leadscore report calibration --out reports-out

        leadscore report all --out reports-out --start 2026-01-01 --channel webinar

        leadscore report bands --scores served --out reports-out
    """
    from pydantic import ValidationError

    from reports.data import ReportData
    from reports.export import export_reports
    from reports.model import REPORT_NAMES
    from reports.settings import ReportSettings
    from reports.web import parse_filters
    from serving.errors import InvalidInputError

    chosen = list(REPORT_NAMES) if "all" in names else list(dict.fromkeys(names))
    unknown = [n for n in chosen if n not in REPORT_NAMES]
    if unknown:
        raise _fail(f"report: {unknown[0]!r} is not one of {', '.join(REPORT_NAMES)} or all")
    try:
        filters = parse_filters(start, end, channel)
        cfg = ReportSettings.model_validate({"scores": scores})
    except InvalidInputError as e:
        raise _fail(e.message) from e
    except ValidationError as e:
        raise _fail(f"--scores: {scores!r} is not holdout or served") from e
    data = ReportData(get_settings(), cfg)
    written = _run(
        f"building {', '.join(chosen)}",
        lambda: export_reports(chosen, data, out, filters=filters),
    )
    for done in written:
        typer.echo(
            f"{done.name}: {done.page} ({len(done.charts)} charts, {len(done.tables)} CSV tables)"
        )


def _report_lines(settings: Settings) -> list[str]:
    """The report URLs and a fresh reports:read key to log in with (run-all prints them)."""
    from leadscore.auth import REPORTS_READ, ApiKeyStore
    from reports.model import REPORT_NAMES

    base = f"http://{settings.serving.host}:{settings.serving.port}/reports"
    lines = ["# marketing reports (in a browser):"]
    if settings.auth.required:
        keys = ApiKeyStore(settings.auth_db_url)
        for old in keys.list():
            if old.name == REPORTS_KEY_NAME and old.active:
                keys.revoke(old.key_id)
        key, _ = keys.create(REPORTS_KEY_NAME, [REPORTS_READ])
        lines.append(f"#   log in at {base}/login with the key {key}")
    lines += [f"#   {base}/{name}" for name in REPORT_NAMES]
    return lines


# --- end of marketing reports ------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
) -> None:
    """Serve the scoring API (FastAPI + uvicorn).

    Examples:

        leadscore serve --port 8000

        leadscore keys create --name crm --scope score:read

        curl -s localhost:8000/v1/score -H 'content-type: application/json' \\
            -H 'authorization: Bearer ls_...' -d '{"lead_id": 1}'
    """
    import uvicorn

    from serving.observability import log_config

    cfg = get_settings().serving
    uvicorn.run(
        "serving.app:create_app",
        factory=True,
        host=host or cfg.host,
        port=port or cfg.port,
        log_config=log_config(cfg.log_format, cfg.log_level),
        access_log=False,  # the app logs each request itself: route template, no query string
    )


DEMO_KEY_NAME = "demo"


def _demo_key(settings: Settings) -> str:
    """A fresh score:read + events:write key named ``demo`` for the printed curl lines.

    Keys are stored hashed, so an earlier demo key cannot be shown again: it is revoked and
    replaced, which leaves exactly one active demo key.
    """
    from leadscore.auth import EVENTS_WRITE, SCORE_READ, ApiKeyStore

    keys = ApiKeyStore(settings.auth_db_url)
    for old in keys.list():
        if old.name == DEMO_KEY_NAME and old.active:
            keys.revoke(old.key_id)
    key, _ = keys.create(DEMO_KEY_NAME, [SCORE_READ, EVENTS_WRITE])
    return key


@app.command("run-all")
def run_all(
    serve_after: Annotated[
        bool, typer.Option("--serve/--no-serve", help="Start the API at the end.")
    ] = True,
) -> None:
    """The whole loop on the embedded default: demo data (if none), ingest, features, train,
    then serve with ready-to-paste curl commands for a hot and a cold lead.

    Examples:

        leadscore run-all

        leadscore run-all --no-serve
    """
    from pipelines.feature_store import (
        apply_definitions,
        dataset_attributes,
        materialize_features,
        open_store,
    )
    from pipelines.train_flow import run_training

    settings = get_settings()
    if "leads" not in _find_sources(settings.paths.raw):
        demo_data(None, None, None, None, "parquet", None)
    ingest(None, None, None, None, None, None)
    tables = _build_tables(settings, None)
    store = open_store(settings)
    attributes = dataset_attributes(settings)
    _run("applying feature definitions", lambda: apply_definitions(store, attributes))
    moment = max(datetime.now().astimezone(), tables.as_of + timedelta(seconds=1))
    _run("materializing online features", lambda: materialize_features(store, end=moment))
    result = _run("training", lambda: run_training(settings))
    console.print(
        f"model {result.model.name} v{result.model.version}: test ROC AUC "
        f"{result.metrics['roc_auc']:.3f}, Brier {result.metrics['brier']:.4f}"
    )
    from pipelines.examples import example_leads

    hot, cold = example_leads(settings)
    url = f"http://{settings.serving.host}:{settings.serving.port}/v1/score"
    auth = ""
    if settings.auth.required:
        auth = f" -H 'authorization: Bearer {_demo_key(settings)}'"
    for kind, lead_id in (("hot", hot), ("cold", cold)):
        typer.echo(
            f"# a {kind} lead:\ncurl -s -X POST {url} -H 'content-type: application/json'"
            f"{auth} -d '{{\"lead_id\": {lead_id}}}'"
        )
    for line in _report_lines(settings):
        typer.echo(line)
    if serve_after:
        serve(None, None)


if __name__ == "__main__":
    app()
