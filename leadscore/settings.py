"""The one settings object of leadscore.

Every path, store, model name, alias and threshold lives here. Values come from defaults,
from environment variables with the ``LEADSCORE_`` prefix (nested sections joined with
``__``, e.g. ``LEADSCORE_SERVING__PORT=9000``) or from a ``.env`` file in the working
directory. Nothing else in the code base reads the environment: steps receive what they need
as arguments, and entry points (CLI, app factory) call :func:`get_settings`.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class PathsSettings(BaseModel):
    """Where data lives on disk (relative paths are resolved against ``root``)."""

    root: Path = Field(default=PROJECT_ROOT, description="Base for every relative path below.")
    raw_dir: Path = Field(
        default=Path("data/raw"), description="Input CSV/Parquet exports (demo data lands here)."
    )
    warehouse_dir: Path = Field(
        default=Path("data/warehouse"), description="Validated tables (the offline store input)."
    )
    quarantine_dir: Path = Field(
        default=Path("data/quarantine"), description="Rejected rows with their reasons."
    )
    feature_repo_dir: Path = Field(
        default=Path("data/feature_repo"),
        description="Runtime Feast repo: rendered feature_store.yaml, feature tables, registry.",
    )

    def resolve(self, path: Path) -> Path:
        """Return ``path`` made absolute against ``root``."""
        return path if path.is_absolute() else (self.root / path).resolve()

    @property
    def raw(self) -> Path:
        return self.resolve(self.raw_dir)

    @property
    def warehouse(self) -> Path:
        return self.resolve(self.warehouse_dir)

    @property
    def quarantine(self) -> Path:
        return self.resolve(self.quarantine_dir)

    @property
    def feature_repo(self) -> Path:
        return self.resolve(self.feature_repo_dir)


class DemoSettings(BaseModel):
    """Synthetic CRM history produced by ``leadscore demo-data``."""

    n_leads: int = Field(default=20_000, gt=0, description="Leads `demo-data` generates.")
    seed: int = Field(default=42, description="Random seed: same seed and end date, same data.")
    months: int = Field(default=18, gt=0, description="Length of the history.")
    end_date: date | None = Field(
        default=None, description="Last day of the history (UTC); default: yesterday."
    )
    bad_row_share: float = Field(
        default=0.0, ge=0.0, le=0.5, description="Share of rows corrupted on purpose."
    )


class FeastSettings(BaseModel):
    """Feature store backends (embedded default: SQLite online, files offline)."""

    project: str = Field(default="leadscore", description="Feast project name.")
    online_store: Literal["sqlite", "redis"] = Field(
        default="sqlite", description="Online store backend."
    )
    offline_store: Literal["file", "duckdb", "postgres"] = Field(
        default="duckdb",
        description="Offline store: DuckDB or Dask over the Parquet feature tables, or "
        "PostgreSQL (tables published by `features build`).",
    )
    redis_connection_string: str = Field(
        default="127.0.0.1:6379", description="Redis online store (when online_store=redis)."
    )
    postgres_host: str = Field(default="127.0.0.1", description="PostgreSQL offline store host.")
    postgres_port: int = Field(default=5432, gt=0, lt=65536, description="PostgreSQL port.")
    postgres_database: str = Field(
        default="test", description="Database of the published feature tables."
    )
    postgres_user: str = Field(
        default="postgres", description="Role that publishes and reads the feature tables."
    )
    postgres_password: str = Field(
        default="", description="Its password (empty: trust/peer authentication)."
    )
    postgres_schema: str = Field(
        default="leadscore",
        description="Schema of the feature tables (one per Parquet file, named after it).",
    )
    postgres_sslmode: str = Field(
        default="prefer", description="libpq sslmode (Feast's own default, require, needs TLS)."
    )
    sqlite_path: Path = Field(
        default=Path("online_store.db"), description="Relative to the feature repo dir."
    )
    registry_path: Path = Field(
        default=Path("registry.db"), description="Relative to the feature repo dir."
    )
    feature_service: str = Field(
        default="lead_scoring_v2", description="Feature service the next training run uses."
    )
    half_life_days: float = Field(
        default=14.0, gt=0, description="Half-life of the engagement score's time decay."
    )


class MlflowSettings(BaseModel):
    """Tracking store and model registry."""

    tracking_uri: str | None = Field(
        default=None, description="Default: sqlite:///<root>/mlflow/mlflow.db."
    )
    artifact_dir: Path = Field(
        default=Path("mlflow/artifacts"), description="Where new experiments keep artifacts."
    )
    experiment: str = Field(default="leadscore", description="MLflow experiment of training runs.")
    model_name: str = Field(default="leadscore", description="Registered model name.")
    champion_alias: str = Field(
        default="champion", description="Alias of the production model version."
    )
    challenger_alias: str = Field(
        default="challenger", description="Alias of a candidate model version."
    )


class BandSettings(BaseModel):
    """How the hot / warm / cold bands are cut (the cut-offs are stored with each model version).

    ``cutoffs`` uses ``hot_min`` / ``warm_min`` as they are; ``top_share`` and ``top_n_per_day``
    turn a share of leads, or a number of leads per day, into probability cut-offs at training,
    from the calibrated scores of the calibration period (see :mod:`leadscore.bands`).
    """

    policy: Literal["cutoffs", "top_share", "top_n_per_day"] = Field(
        default="cutoffs",
        description="cutoffs: hot_min/warm_min as set; top_share: the top hot_share of leads are "
        "hot, the next warm_share warm; top_n_per_day: hot_per_day leads a day are hot, the next "
        "warm_per_day warm.",
    )
    hot_min: float = Field(default=0.20, gt=0.0, lt=1.0, description="Hot from this probability.")
    warm_min: float = Field(
        default=0.07, gt=0.0, lt=1.0, description="Warm from this probability (else cold)."
    )
    hot_share: float = Field(
        default=0.10, gt=0.0, lt=1.0, description="top_share: share of leads that are hot."
    )
    warm_share: float = Field(
        default=0.20, gt=0.0, lt=1.0, description="top_share: share of leads that are warm."
    )
    hot_per_day: float = Field(
        default=5.0, gt=0.0, description="top_n_per_day: hot leads a day (sales' call capacity)."
    )
    warm_per_day: float = Field(
        default=15.0, gt=0.0, description="top_n_per_day: warm leads a day."
    )

    @model_validator(mode="after")
    def _ordered(self) -> BandSettings:
        if self.warm_min >= self.hot_min:
            raise ValueError(
                f"bands.warm_min ({self.warm_min}) must be below bands.hot_min ({self.hot_min})"
            )
        if self.hot_share + self.warm_share >= 1.0:
            raise ValueError(
                f"bands.hot_share + bands.warm_share ({self.hot_share} + {self.warm_share}) "
                "must be below 1: some leads must stay cold"
            )
        return self


class TrainingSettings(BaseModel):
    """How training examples are built and how the model is fitted."""

    snapshot_days: list[int] = Field(
        default=[1, 7, 30], description="Snapshots taken this many days after lead creation."
    )
    target: Literal["lead_to_won", "sql_to_won", "lead_to_sql"] = Field(
        default="lead_to_won",
        description="What converting means: lead -> won (every lead), SQL -> won (the sales "
        "pipeline: only leads from their SQL moment), or lead -> SQL.",
    )
    horizon_days: int = Field(
        default=120, gt=0, description="A snapshot is positive if the target happens within this."
    )
    test_share: float = Field(default=0.2, gt=0.0, lt=0.5, description="Newest share for test.")
    split: Literal["time", "random"] = Field(
        default="time",
        description="time: train on the past, test on the newest examples (the honest test); "
        "random: by lead at random, only to compare with published cross-validation figures.",
    )
    calibration_share: float = Field(
        default=0.15, gt=0.0, lt=0.5, description="Slice before the test period for calibration."
    )
    n_estimators: int = Field(default=250, gt=0, description="LightGBM boosting rounds.")
    num_leaves: int = Field(default=15, gt=1, description="LightGBM leaves per tree.")
    learning_rate: float = Field(default=0.05, gt=0.0, description="LightGBM learning rate.")
    min_child_samples: int = Field(default=50, gt=0, description="Fewest examples per leaf.")
    lambda_l2: float = Field(default=5.0, ge=0.0, description="L2 regularisation of leaf values.")
    feature_fraction: float = Field(
        default=0.9, gt=0.0, le=1.0, description="LightGBM share of features tried per tree."
    )
    calibration: Literal["auto", "sigmoid", "isotonic"] = Field(
        default="auto",
        description="Calibration of the raw scores on the calibration slice: sigmoid (Platt "
        "scaling), isotonic, or auto (the lower cross-fitted log loss on the slice; isotonic "
        "only with at least 200 won and 200 not won examples there).",
    )
    search_seconds: float = Field(
        default=0.0,
        ge=0.0,
        description="Time budget of the LightGBM hyper-parameter search (0: no search, the "
        "parameters above are used).",
    )
    baseline: bool = Field(
        default=True, description="Also fit the logistic-regression baseline and log its metrics."
    )
    bootstrap_samples: int = Field(
        default=200, ge=0, description="Bootstrap resamples of the test metrics' intervals."
    )
    backtest_folds: int = Field(
        default=4, ge=0, description="Rolling-origin backtest folds (0: none)."
    )
    backtest_test_share: float = Field(
        default=0.08, gt=0.0, lt=0.25, description="Share of the examples each fold tests on."
    )
    dask_scheduler: str | None = Field(
        default=None,
        description="Train LightGBM on Dask: `local` (a local cluster) or a scheduler address "
        "(tcp://host:8786); default: in process.",
    )
    dask_partitions: int = Field(default=4, gt=0, description="Row chunks on Dask.")
    search_max_trials: int = Field(
        default=20, ge=1, description="Most trials of the search (the configured parameters first)."
    )
    seed: int = Field(default=7, description="Training random seed.")
    min_won: int = Field(
        default=40, ge=1, description="Fewest distinct won leads among the examples to train."
    )
    min_lost: int = Field(
        default=40, ge=1, description="Fewest distinct lost (never won) leads to train."
    )
    leakage_auc_max: float = Field(
        default=0.95,
        gt=0.5,
        le=1.0,
        description="A feature predicting the label alone above this ROC AUC is refused as a "
        "likely leak unless confirmed (1.0 turns the check off).",
    )
    exclude_features: list[str] = Field(
        default=[], description="Features left out of the model (e.g. leaky columns)."
    )
    confirmed_features: list[str] = Field(
        default=[],
        description="Features confirmed to be known before the outcome despite a high AUC.",
    )


class EventsSettings(BaseModel):
    """Live behaviour events."""

    log_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the live event log; default: "
        "sqlite:///<root>/data/live/events.db (PostgreSQL: postgresql+psycopg://...).",
    )
    max_per_request: int = Field(default=500, gt=0, description="Events per POST /v1/events.")


class ServingSettings(BaseModel):
    """The FastAPI scoring service."""

    host: str = Field(default="127.0.0.1", description="Bind address of `leadscore serve`.")
    port: int = Field(default=8000, gt=0, lt=65536, description="Port of `leadscore serve`.")
    model_alias: str = Field(default="champion", description="Registry alias the API serves.")
    top_reasons: int = Field(default=5, gt=0, le=20, description="Reasons per score.")
    reload_seconds: float = Field(
        default=30.0,
        ge=0.0,
        description="How often the API asks the registry which version the alias points to "
        "and swaps in a new one (0: never; the model loaded at start-up is served).",
    )
    max_batch: int = Field(default=1000, gt=0, description="Lead ids per POST /v1/score/batch.")
    score_log_queue: int = Field(
        default=10_000,
        gt=0,
        description="Served scores waiting to be written to the score log; beyond that they "
        "are dropped (and counted) rather than slowing requests.",
    )
    max_body_bytes: int = Field(
        default=1_048_576, gt=0, description="Largest request body accepted (413 beyond)."
    )
    max_in_flight: int = Field(
        default=64,
        ge=0,
        description="Requests one API process works on at once; beyond that it answers 503 "
        "`overloaded` with Retry-After at once (0: no limit; /health and /ready always answer).",
    )
    cors_origins: list[str] = Field(
        default=[],
        description="Browser origins allowed to call the API (CORS), e.g. "
        '["https://crm.example.com"]; empty: no cross-origin calls.',
    )
    log_format: Literal["json", "text"] = Field(
        default="json",
        description="`leadscore serve` logs: one JSON object per line (with request ids), or text.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Level of the service's logs (INFO: one line per request)."
    )


class WebhookSettings(BaseModel):
    """Hot-lead webhooks: a signed POST to the CRM when a lead's band rises to hot."""

    url: str | None = Field(
        default=None,
        description="Where hot-lead notifications are POSTed (http or https); none: no webhooks.",
    )
    secret: SecretStr | None = Field(
        default=None,
        description="Shared secret of the HMAC-SHA256 signature (required with a url).",
    )
    max_attempts: int = Field(
        default=6, ge=1, le=50, description="Attempts before a delivery is marked failed."
    )
    backoff_seconds: float = Field(
        default=2.0, gt=0.0, description="Wait before the 2nd attempt; doubled after each failure."
    )
    max_backoff_seconds: float = Field(
        default=600.0, gt=0.0, description="Longest wait between two attempts."
    )
    timeout_seconds: float = Field(default=5.0, gt=0.0, description="Timeout of one attempt.")

    @model_validator(mode="after")
    def _secret_with_url(self) -> WebhookSettings:
        if self.url is not None:
            if not self.url.startswith(("http://", "https://")):
                raise ValueError(f"webhooks.url must be an http(s) URL, not {self.url!r}")
            if self.secret is None or not self.secret.get_secret_value():
                raise ValueError("webhooks.secret is required when webhooks.url is set")
        return self


class AuthSettings(BaseModel):
    """API keys of the scoring API (``leadscore keys``)."""

    required: bool = Field(
        default=True,
        description="Every /v1 route needs an API key with the route's scope (false: open API).",
    )
    db_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the api_keys table; default: the live event log's database.",
    )
    cache_seconds: float = Field(
        default=10.0,
        ge=0.0,
        description="How long a verified key is trusted without asking the database (a "
        "revocation takes effect within this time).",
    )
    max_failures_per_minute: int = Field(
        default=20,
        ge=0,
        description="Failed authentications a client (IP address) may make in a minute before "
        "it gets 429 until the minute is over (0: no limit).",
    )


PromotionMetric = Literal["roc_auc", "pr_auc", "brier", "log_loss", "ece"]


class PromotionSettings(BaseModel):
    """When a challenger may replace the champion (`leadscore promote`, `leadscore retrain`)."""

    metrics: list[PromotionMetric] = Field(
        default=["roc_auc", "brier"],
        min_length=1,
        description="Test metrics on which the challenger must not be worse than the champion "
        "(both measured on the challenger's test period).",
    )
    tolerance: dict[PromotionMetric, float] = Field(
        default={"roc_auc": 0.005, "brier": 0.002},
        description="How much worse than the champion a metric may be and still pass "
        "(0 for a metric not listed here).",
    )

    @model_validator(mode="after")
    def _non_negative(self) -> PromotionSettings:
        negative = sorted(f"{k}={v}" for k, v in self.tolerance.items() if v < 0)
        if negative:
            raise ValueError(f"promotion.tolerance must not be negative: {', '.join(negative)}")
        return self


class WritebackSettings(BaseModel):
    """Where `leadscore score-batch` hands the scores back to the CRM."""

    output_path: Path | None = Field(
        default=None,
        description="Scores file (.csv or .parquet, relative to paths.root); default: "
        "data/scores/lead_scores.parquet when no PostgreSQL URL is set either.",
    )
    postgres_url: str | None = Field(
        default=None, description="PostgreSQL URL of the scores table (postgresql+psycopg://...)."
    )
    postgres_table: str = Field(
        default="leadscore.lead_scores", description="Scores table (schema.table) in PostgreSQL."
    )


class Settings(BaseSettings):
    """All configuration of leadscore."""

    model_config = SettingsConfigDict(
        env_prefix="LEADSCORE_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    paths: PathsSettings = PathsSettings()
    demo: DemoSettings = DemoSettings()
    feast: FeastSettings = FeastSettings()
    mlflow: MlflowSettings = MlflowSettings()
    bands: BandSettings = BandSettings()
    training: TrainingSettings = TrainingSettings()
    serving: ServingSettings = ServingSettings()
    events: EventsSettings = EventsSettings()
    auth: AuthSettings = AuthSettings()
    webhooks: WebhookSettings = WebhookSettings()
    writeback: WritebackSettings = WritebackSettings()
    promotion: PromotionSettings = PromotionSettings()

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking and registry URI (SQLite under ``mlflow/`` unless configured)."""
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        return f"sqlite:///{self.paths.resolve(Path('mlflow/mlflow.db'))}"

    @property
    def event_log_url(self) -> str:
        """Where live events are logged (SQLite under ``data/live`` unless configured)."""
        if self.events.log_url:
            return self.events.log_url
        return f"sqlite:///{self.paths.resolve(Path('data/live/events.db'))}"

    @property
    def auth_db_url(self) -> str:
        """Where API keys are stored (the live event log's database unless configured)."""
        return self.auth.db_url or self.event_log_url

    @property
    def artifact_dir(self) -> Path:
        return self.paths.resolve(self.mlflow.artifact_dir)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Build the settings once per process (never at import time)."""
    return Settings()
