"""Preprocessing that travels inside the logged model: features -> a float matrix.

Categorical features become integer codes learned at fit time (unknown or missing -> NaN,
which LightGBM routes as missing); numeric and flag features pass through as floats. Two
entry points share one mapping: :meth:`FeatureEncoder.transform` for DataFrames (training,
batch) and :meth:`FeatureEncoder.encode_rows` for a few dict rows without pandas (serving).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin


class FeatureEncoder(TransformerMixin, BaseEstimator):
    """Encode a frame of model features into a float64 matrix.

    Args:
        features: Feature names, in model order.
        categorical: The subset of ``features`` that are categorical.
    """

    def __init__(self, features: Sequence[str] = (), categorical: Sequence[str] = ()) -> None:
        self.features = features
        self.categorical = categorical

    def fit(self, X: pd.DataFrame, y: object = None) -> FeatureEncoder:
        """Learn the categories of each categorical feature (sorted, nulls excluded)."""
        missing = [f for f in self.features if f not in X.columns]
        if missing:
            raise ValueError(f"training frame lacks feature columns: {missing}")
        self.feature_names_in_ = np.array(list(self.features), dtype=object)
        self.categories_: dict[str, list[str]] = {
            name: sorted(str(v) for v in X[name].dropna().unique()) for name in self.categorical
        }
        self.codes_: dict[str, dict[str, float]] = {
            name: {value: float(i) for i, value in enumerate(values)}
            for name, values in self.categories_.items()
        }
        self.categorical_indices_ = [list(self.features).index(c) for c in self.categorical]
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """Encode a DataFrame holding every feature column."""
        out = np.empty((len(X), len(self.features)), dtype=np.float64)
        for j, name in enumerate(self.features):
            column = X[name]
            if name in self.codes_:
                codes = column.astype(object).map(self.codes_[name])
                out[:, j] = pd.to_numeric(codes, errors="coerce").to_numpy(dtype=np.float64)
            else:
                out[:, j] = pd.to_numeric(column, errors="coerce").to_numpy(
                    dtype=np.float64, na_value=np.nan
                )
        return out

    def encode_rows(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Encode dict rows (feature name -> value) without pandas: the serving fast path."""
        out = np.empty((len(rows), len(self.features)))
        names = self.features
        codes = self.codes_
        categorical = [(j, codes[name]) for j, name in enumerate(names) if name in codes]
        nan = np.nan
        for i, row in enumerate(rows):
            values = list(map(row.get, names))
            for j, mapping in categorical:
                value = values[j]
                values[j] = nan if value is None else mapping.get(str(value), nan)
            # A row assigned at once (far cheaper than item by item); numpy reads None as NaN
            # and converts numbers and numeric text as float() does.
            out[i] = values
        return out
