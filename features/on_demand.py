"""On-demand features: what changes with the clock alone, computed at request time.

The same transform runs in training (request time = the snapshot moment) and in serving
(request time = now), so recency and decay mean the same in both.
"""

from typing import Any

from feast import Field
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64

from features.data_sources import scoring_request
from features.feature_views import lead_behaviour, lead_lifecycle
from leadscore.feature_catalog import ON_DEMAND_FEATURES


@on_demand_feature_view(
    sources=[lead_behaviour, lead_lifecycle, scoring_request],
    # No field descriptions: Feast compares the declared fields with the ones it infers by
    # running the transform, description included (the catalog documents these features).
    schema=[Field(name=f.name, dtype=Float64) for f in ON_DEMAND_FEATURES],
    mode="python",
    description="Recency, decayed engagement and time in stage at the moment of scoring.",
)
def lead_recency(inputs: dict[str, Any]) -> dict[str, Any]:
    # Feast ships this function's source to where it runs: it must not use module globals.
    day = 86_400.0

    def days_since(moments: list[Any], now: list[Any]) -> list[float | None]:
        return [
            None if m is None or t is None or m != m else max(t - m, 0.0) / day
            for m, t in zip(moments, now, strict=True)
        ]

    now = inputs["request_ts"]
    engagement: list[float | None] = []
    for score, as_of, half_life, t in zip(
        inputs["engagement_at_as_of"],
        inputs["as_of_ts"],
        inputs["engagement_half_life_days"],
        now,
        strict=True,
    ):
        if score is None or as_of is None or half_life is None or t is None:
            engagement.append(None)
        else:
            engagement.append(score * 2.0 ** (-max(t - as_of, 0.0) / day / half_life))
    return {
        "days_since_last_activity": days_since(inputs["last_activity_at"], now),
        "days_since_first_activity": days_since(inputs["first_activity_at"], now),
        "engagement_score": engagement,
        "days_in_stage": days_since(inputs["stage_entered_at"], now),
    }
