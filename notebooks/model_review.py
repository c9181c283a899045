# %% [markdown]
# # Model review: the champion, its test metrics and today's leads
#
# A percent-format notebook (open it with Jupyter + jupytext, VS Code or PyCharm, or run it
# with `python notebooks/model_review.py`). It reads the same settings as the CLI
# (`LEADSCORE_*` variables), so it reviews whatever `leadscore train` last registered. The
# test suite runs it against the end-to-end stack.

# %%
import pandas as pd
from mlflow.tracking import MlflowClient

from leadscore.settings import get_settings
from leadscore.tracking import connect_tracking
from pipelines.examples import current_features, load_champion

settings = get_settings()
connect_tracking(settings.tracking_uri)
client = MlflowClient()
version = client.get_model_version_by_alias(
    settings.mlflow.model_name, settings.serving.model_alias
)
run = client.get_run(version.run_id)

# %% [markdown]
# ## Test-period metrics of the champion (forward-in-time split)

# %%
test_metrics = pd.Series(
    {k.removeprefix("test_"): v for k, v in run.data.metrics.items() if k.startswith("test_")}
).sort_index()
print(f"{settings.mlflow.model_name} version {version.version}")
print(test_metrics.round(4).to_string())

# %% [markdown]
# ## Today's leads by band

# %%
scorer = load_champion(settings)
leads = current_features(settings)
leads["probability"] = scorer.predict_proba_frame(leads)
leads["band"] = scorer.band_of(leads["probability"].to_numpy())
bands = (
    leads.groupby("band")["probability"]
    .agg(leads="size", mean_probability="mean", min_probability="min")
    .reindex(["hot", "warm", "cold"])
)
print(bands.round(3).to_string())

# %% [markdown]
# ## What the model relies on (total gain per feature)

# %%
importance = (
    pd.Series(scorer.booster.feature_importance("gain"), index=scorer.features)
    .sort_values(ascending=False)
    .head(15)
)
print((importance / importance.sum()).round(3).to_string())

# %% [markdown]
# ## Calibration on the test period: predicted against observed, with 95% intervals
#
# The test period is rebuilt exactly as training split it; in each tenth of the leads by
# predicted probability the observed conversion should fall inside its interval around the
# mean prediction.

# %%
from pipelines.train_flow import newest_period  # noqa: E402
from training.evaluate import metrics_with_intervals, reliability_table  # noqa: E402

test = newest_period(settings)
test_probability = scorer.predict_proba_frame(test)
calibration = reliability_table(test["label"].to_numpy(), test_probability)
print(calibration.round(4).to_string(index=False))
review = metrics_with_intervals(
    labels=test["label"].to_numpy(),
    probabilities=test_probability,
    bands=scorer.band_of(test_probability),
    n_boot=100,
)
print(review.table().round(4).to_string(index=False))

# %% [markdown]
# ## Why: the reasons behind the hottest and the coldest lead today

# %%
ranked = leads.sort_values("probability")
examples = pd.concat([ranked.tail(1), ranked.head(1)])
explained = scorer.explain_frame(examples, top_k=5)
for lead_id, row in zip(examples["lead_id"], explained.itertuples(), strict=True):
    print(f"lead {lead_id}: {row.probability:.1%} ({row.band})")
    for reason in row.reasons:
        print(f"  {reason['contribution']:+.3f}  {reason['label']}")
