"""A VAE whose encoder reads the series window as a sequence (``--model conv-vae``).

A series model's record is its row and the ``window - 1`` rows before it, flattened
(``detector.series.windows``): the plain VAE's MLP sees those as unrelated columns. This
encoder sees them in time: the numeric features, laid out step by step (``cpu, mem``, then
``cpu[-1], mem[-1]``, ...), become a ``(steps, features)`` sequence, oldest first, and a causal
Conv1D (kernel ``min(3, steps)``) runs along it before the MLP, so a pattern is recognised
wherever in the window it sits. OmniAnomaly (Su et al., KDD 2019) encodes windows with a GRU; a
convolution does the same job here because it converts to LiteRT's builtin operators with no
loop, and a window is a few rows. Categorical one-hot groups join after the convolution.
The decoder is the plain VAE's, over the whole flattened window, so every score keeps its
meaning.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from detector.errors import ConfigError
from detector.nn.models.vae import ENCODER_LOG_VAR_RANGE, VAE
from detector.nn.options import ConvVAEOptions
from detector.wording import option


@keras.saving.register_keras_serializable(package="detector")
class ConvVAE(VAE):
    """A VAE with a causal Conv1D encoder over ``steps`` window steps of the numeric features
    (``n_numeric`` must be ``steps`` times the row's numeric width)."""

    options_class = ConvVAEOptions

    def __init__(self, *, steps: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.steps = int(steps)
        if self.steps < 2 or self.n_numeric % self.steps:
            raise ValueError(
                f"{self.n_numeric} numeric features do not make {self.steps} window steps"
            )
        self.step_width = self.n_numeric // self.steps
        self.convolution = keras.layers.Conv1D(
            self.hidden_units[0],
            kernel_size=min(3, self.steps),
            padding="causal",
            activation=self.activation,
            name="convolution",
        )
        # After the convolution, the MLP's other layers (one Dense layer of the first width
        # when the network has a single hidden layer).
        self.encoder_body = keras.layers.Dense(
            self.hidden_units[-1], activation=self.activation, name="encoder_body"
        )

    @classmethod
    def options(cls, config: Any) -> dict[str, Any]:
        if getattr(config, "time_column", None) is None or config.window < 2:
            raise ConfigError(
                "model 'conv-vae' reads a series window: give "
                f"{option('time_column', 'COL')} (and {option('window', 'W')} of 2 or more)"
            )
        return {**super().options(config), "steps": config.window}

    def build(self, input_shape: Any) -> None:
        self.convolution.build((None, self.steps, self.step_width))
        n_other = self.input_dim - self.n_numeric
        self.encoder_body.build((None, self.steps * self.hidden_units[0] + n_other))
        self.build_after_encoder_body()

    def encode(self, x):  # type: ignore[no-untyped-def]
        """q(z|x) as the plain VAE's, from the convolved window."""
        numbers = ops.reshape(x[:, : self.n_numeric], (-1, self.steps, self.step_width))
        sequence = ops.flip(numbers, axis=1)  # the newest step first in the record, last here
        convolved = ops.reshape(self.convolution(sequence), (-1, self.steps * self.hidden_units[0]))
        h = self.encoder_body(ops.concatenate([convolved, x[:, self.n_numeric :]], axis=-1))
        log_var = ops.clip(self.z_log_var(h), *ENCODER_LOG_VAR_RANGE)
        return self.z_mean(h), log_var

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "steps": self.steps}
