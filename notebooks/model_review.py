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
