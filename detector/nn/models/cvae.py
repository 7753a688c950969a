"""The conditional VAE (Sohn, Lee & Yan 2015): what is normal for a record given its context.

A context is a set of label columns, such as the host or the service, that decide what normal
looks like (host A runs near 20% CPU, host B near 80%) but are not themselves in question.
``train --model cvae --context host`` makes them inputs: the encoded record is
``[features | context one-hot]`` (``detector.features.encode``), the encoder is q(z | x, c), the
decoder p(x | z, c) sees ``[z, c]``, and every score estimates log p(x | c), so 80% CPU on
host A is as unlikely as it is for host A, however usual it is for the fleet.

Context dropout: in training, each context column's one-hot block is replaced by zeros with
probability ``context_dropout``, independently per row and column, so the same network also
learns p(x) given only the other context columns, or none. The scorer encodes a context value
never seen in training as that zero block and flags the row (``ScoreResult.context_unseen``):
such a record is scored against everything the model saw, not against a context it never saw.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from detector.nn.models.vae import VAE
from detector.nn.options import CVAEOptions, ModelOptions


@keras.saving.register_keras_serializable(package="detector")
class ConditionalVAE(VAE):
    """A VAE over ``(batch, n_numeric + sum(group_sizes) + sum(context_sizes))``: the modelled
    features followed by the context one-hot groups, one per context column of
    ``context_sizes[k]`` slots. Output terms (``feature_log_likelihood``) cover the features
    only, as ``Schema.feature_columns`` lists them."""

    options_class: type[ModelOptions] = CVAEOptions
    conditional = True

    def __init__(
        self,
        *,
        context_sizes: tuple[int, ...] | list[int],
        context_dropout: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.context_sizes = tuple(int(s) for s in context_sizes)
        self.context_dropout = float(context_dropout)
        self.feature_dim = self.input_dim
        self.context_dim = sum(self.context_sizes)
        self.input_dim = self.feature_dim + self.context_dim
        # (n_context_columns, context_dim): spreads one keep/drop draw per column over its slots.
        spread = np.zeros((len(self.context_sizes), self.context_dim), dtype=np.float32)
        start = 0
        for k, size in enumerate(self.context_sizes):
            spread[k, start : start + size] = 1.0
            start += size
        self._spread = spread

    @property
    def decoder_input_dim(self) -> int:
        return self.latent_dim + self.context_dim

    # ---- the probabilistic pieces ---------------------------------------------------------

    def feature_log_likelihood(self, x, z):  # type: ignore[no-untyped-def]
        """log p(x_j | z, c) per modelled term, shape ``(..., n_numeric + n_groups)``.

        The context ``c`` is the tail of ``x``; ``x`` may have a size-1 sample axis where ``z``
        has L samples, ``(n, 1, input_dim)`` against ``(n, L, latent_dim)``, and the context is
        broadcast over it.
        """
        context = x[..., self.feature_dim :] + ops.zeros_like(z[..., :1])
        return super().feature_log_likelihood(
            x[..., : self.feature_dim], ops.concatenate([z, context], axis=-1)
        )

    def decode_distribution(self, z, context=None):  # type: ignore[no-untyped-def]
        """The parameters of p(x | z, c) for ``z`` ``(batch, latent_dim)`` and a context one-hot
        ``(batch, context_dim)`` laid out as the schema encodes it (``encode(...).values[:,
        -context_dim:]``); ``None`` or all zeros is "no context", p(x | z) over every context
        seen in training. Returns numeric means and log-variances ``(batch, n_numeric)`` and
        categorical logits ``(batch, sum(group_sizes))``."""
        if context is None:
            context = ops.zeros((ops.shape(z)[0], self.context_dim), dtype=z.dtype)
        h = self.decoder_body(ops.concatenate([z, ops.cast(context, z.dtype)], axis=-1))
        return self._output_parameters(h)

    def call(self, inputs):  # type: ignore[no-untyped-def]
        """The deterministic reconstruction from the posterior mean given the row's context,
        ``(batch, n_numeric + sum(group_sizes))``: numeric means followed by logits."""
        mean, _ = self.encode(inputs)
        x_mean, _, logits = self.decode_distribution(mean, inputs[..., self.feature_dim :])
        return ops.concatenate([x_mean, logits], axis=-1)

    def drop_context(self, x):  # type: ignore[no-untyped-def]
        """``x`` ``(batch, input_dim)`` with each row's context blocks zeroed, each with
        probability ``context_dropout``, drawn independently per row and context column."""
        if self.context_dropout <= 0.0 or not self.context_sizes:
            return x
        draws = keras.random.uniform(
            (ops.shape(x)[0], len(self.context_sizes)), seed=self.seed_generator
        )
        keep = ops.cast(draws >= self.context_dropout, x.dtype)
        mask = ops.matmul(keep, ops.convert_to_tensor(self._spread, dtype=x.dtype))
        return ops.concatenate([x[:, : self.feature_dim], x[:, self.feature_dim :] * mask], axis=-1)

    # ---- hooks ----------------------------------------------------------------------------

    @classmethod
    def options(cls, config: Any) -> dict[str, Any]:
        return {
            **super().options(config),
            "context_dropout": config.context_dropout,
        }

    # ---- training ----------------------------------------------------------------------------

    def train_step(self, data):  # type: ignore[no-untyped-def]
        # Validation (test_step) keeps every context: it measures the model as it scores.
        x = data[0] if isinstance(data, tuple) else data
        return super().train_step(self.drop_context(x))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "context_sizes": list(self.context_sizes),
            "context_dropout": self.context_dropout,
        }
