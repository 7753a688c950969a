"""Small Keras layers the models are built from."""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="detector")
class BoundedLogVariance(keras.layers.Layer):
    """A learned log-variance per feature, held inside ``[log(min_scale^2), log(max_scale^2)]``.

    A free variance shrinks onto near-constant or discrete columns until the likelihood rewards
    memorisation (the lesson in BENCHMARKS.md section 2); a floor keeps every feature's
    likelihood informative, and a ceiling keeps a hard feature from being explained away.
    The output ignores the values of its input and takes only its batch shape:
    ``(..., units)`` in, ``(..., units)`` out.
    """

    def __init__(self, units: int, *, min_scale: float, max_scale: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = units
        self.min_scale = min_scale
        self.max_scale = max_scale
        self._low = 2.0 * math.log(min_scale)
        self._high = 2.0 * math.log(max_scale)

    def build(self, input_shape: Any) -> None:
        # Start at unit variance (log-variance 0), the variance of standardised data.
        start = (0.0 - self._low) / (self._high - self._low)
        start = min(max(start, 1e-3), 1.0 - 1e-3)
        self.raw = self.add_weight(
            shape=(self.units,),
            initializer=keras.initializers.Constant(math.log(start / (1.0 - start))),
            name="raw",
        )

    def log_variance(self):  # type: ignore[no-untyped-def]
        """The ``(units,)`` log-variances themselves. Likelihoods should broadcast this rather
        than ``call``'s batch-shaped copy: an ``exp`` over every (row, sample, feature) costs
        a third of the scoring graph's time for nothing."""
        return self._low + (self._high - self._low) * ops.sigmoid(self.raw)

    def call(self, inputs):  # type: ignore[no-untyped-def]
        return ops.zeros_like(inputs[..., :1]) + self.log_variance()

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (*input_shape[:-1], self.units)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "units": self.units,
            "min_scale": self.min_scale,
            "max_scale": self.max_scale,
        }


@keras.saving.register_keras_serializable(package="detector")
class MLP(keras.layers.Layer):
    """Dense layers applied in turn to the last axis, for inputs of any rank: ``(..., d_in)``
    -> ``(..., units[-1])``. (A ``keras.Sequential`` fixes the input rank when built, and
    scoring feeds the decoder ``(batch, samples, latent)``.)"""

    def __init__(self, units: tuple[int, ...] | list[int], activation: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = tuple(int(u) for u in units)
        self.activation = activation
        self.dense = [keras.layers.Dense(u, activation=activation) for u in self.units]

    def build(self, input_shape: Any) -> None:
        width = input_shape[-1]
        for layer in self.dense:
            layer.build((None, width))
            width = layer.units

    def call(self, inputs):  # type: ignore[no-untyped-def]
        h = inputs
        for layer in self.dense:
            h = layer(h)
        return h

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (*input_shape[:-1], self.units[-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": list(self.units), "activation": self.activation}
