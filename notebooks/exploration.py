# %% [markdown]
# # Exploration: the leads, their channels and the funnel
#
# A percent-format notebook (Jupyter + jupytext, VS Code or PyCharm, or
# `python notebooks/exploration.py`). It reads the validated tables of the warehouse the
# settings point at (`LEADSCORE_*` variables, as the CLI), so it explores the demo data after
# `make run` or your own export after `leadscore ingest --mapping ...`. The tests run it.

# %%
import pandas as pd

from leadscore.settings import get_settings
from pipelines.funnel import channel_funnel, monthly_cohorts
from pipelines.ingest import list_quarantine, load_outcomes, load_table

settings = get_settings()
warehouse = settings.paths.warehouse
tables = {name: load_table(warehouse, name) for name in ("leads", "events", "stage_changes")}
# Outcomes ingested and those the CRM posted to the API (POST /v1/outcomes).
tables["outcomes"] = load_outcomes(warehouse, settings.event_log_url)
for name, frame in tables.items():
    print(f"{name:<14} {len(frame):>10,} rows")

# %% [markdown]
# ## What ingest refused

# %%
quarantine = list_quarantine(settings.paths.quarantine)
refused = (
    quarantine.assign(rule=quarantine["rules"].str.split(";"))
    .explode("rule")
    .groupby(["table", "rule"])
    .size()
    .rename("rows")
)
print(refused.to_string() if len(refused) else "nothing quarantined")

# %% [markdown]
# ## Channels: volume and the funnel (lead -> MQL -> SQL -> opportunity -> won)

# %%
funnel = channel_funnel(tables["leads"], tables["stage_changes"], tables["outcomes"])
print(funnel.round(3).to_string())

# %% [markdown]
# ## Cohorts by month of creation (recent months are still maturing)

# %%
cohorts = monthly_cohorts(tables["leads"], tables["stage_changes"], tables["outcomes"])
print(cohorts.round(3).to_string())

# %% [markdown]
# ## Behaviour: the most common events and how converted leads differ

# %%
events = tables["events"]
won = set(tables["outcomes"].loc[tables["outcomes"]["result"] == "won", "lead_id"])
per_lead = events.groupby(["lead_id", "event_type"]).size().unstack(fill_value=0)
per_lead = per_lead.reindex(tables["leads"]["lead_id"], fill_value=0)
behaviour = pd.DataFrame(
    {
        "events": events["event_type"].value_counts(),
        "per won lead": per_lead[per_lead.index.isin(won)].mean(),
        "per other lead": per_lead[~per_lead.index.isin(won)].mean(),
    }
).sort_values("events", ascending=False)
print(behaviour.round(2).to_string() if len(events) else "no event stream in this data set")
