"""LightGBM on a Dask cluster: the same booster, trained where the data does not fit one machine.

``training.dask_scheduler`` chooses it: ``local`` starts a local cluster for the run (two
worker processes, one thread each: what the tests use), any other value is the address of a
running scheduler (``tcp://scheduler:8786``). The encoded training matrix is split into
``training.dask_partitions`` chunks, each worker trains on its share (LightGBM's data-parallel
tree learner) and the result is an ordinary :class:`lightgbm.Booster`, calibrated and
registered exactly like one trained locally.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import lightgbm as lgb
import numpy as np

logger = logging.getLogger(__name__)

LOCAL = "local"
DASK_CONNECT_SECONDS = 10
"""How long to wait for a scheduler before giving up."""


@contextmanager
def dask_client(scheduler: str) -> Iterator[Any]:
    """A Dask client for ``scheduler`` (``local``: a local cluster for the duration)."""
    from distributed import Client, LocalCluster

    if scheduler == LOCAL:
        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    try:
        client = Client(scheduler, timeout=DASK_CONNECT_SECONDS)
    except OSError as e:
        raise ValueError(
            f"training.dask_scheduler: cannot reach the Dask scheduler at {scheduler!r}: {e}"
        ) from e
    with client:
        yield client


def train_on_dask(
    *,
    X: np.ndarray,
    y: np.ndarray,
    params: Mapping[str, Any],
    num_boost_round: int,
    feature_names: Sequence[str],
    categorical_indices: Sequence[int],
    scheduler: str,
    partitions: int,
) -> lgb.Booster:
    """Train a binary LightGBM booster on Dask.

    Args:
        X: Encoded training matrix (rows x features).
        y: Labels (0/1).
        params: LightGBM parameters (as for ``lightgbm.train``).
        num_boost_round: Boosting rounds.
        feature_names: Feature names, in column order.
        categorical_indices: Columns LightGBM treats as categorical.
        scheduler: ``local`` or a scheduler address.
        partitions: Chunks the rows are split into (at least one per worker is useful).

    Returns:
        The trained booster, local to this process.
    """
    import dask.array as da

    if partitions < 1:
        raise ValueError(f"training.dask_partitions must be at least 1, not {partitions}")
    rows = max(1, -(-len(X) // partitions))
    local = {k: v for k, v in params.items() if k not in ("num_threads", "objective")}
    with dask_client(scheduler) as client:
        dX = da.from_array(X, chunks=(rows, X.shape[1]))
        dy = da.from_array(np.asarray(y), chunks=rows)
        model = lgb.DaskLGBMClassifier(
            client=client, n_estimators=num_boost_round, tree_learner="data", **local
        )
        model.fit(
            dX, dy, feature_name=list(feature_names), categorical_feature=list(categorical_indices)
        )
        booster: lgb.Booster = model.booster_
    logger.info(
        "trained %d trees on Dask (%s, %d partitions)", booster.num_trees(), scheduler, partitions
    )
    return booster
