"""The variational fair autoencoder (Louizos, Swersky, Li, Welling & Zemel 2016): latent codes
that do not reveal a nuisance column s.

``anomaly train DATA --model vfae --nuisance-column datacenter``: s (a datacenter, a hardware
type, a customer) is an input to the encoder q(z | x, s) and the decoder p(x | z, s), as the
conditional VAE's context is, and training adds ``mmd_weight`` times the maximum mean
discrepancy between the codes z of each value of s and the codes of all records
(``detector.nn.losses.group_mmd``, per batch). What s explains about a record the decoder
takes from s itself; the codes carry the rest, alike whatever s is. So a record is judged by
what is unusual about it for any value of s: "is this unusual for a host, whatever its
hardware?". Scores, attribution and context handling (a value of s never seen in training is
scored without it and flagged ``context_unseen``) are the conditional VAE's.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops

from detector.nn import losses
from detector.nn.models.cvae import ConditionalVAE
from detector.nn.options import VFAEOptions


@keras.saving.register_keras_serializable(package="detector")
class VFAE(ConditionalVAE):
    """A conditional VAE on one nuisance column whose codes are pulled together across the
    column's values by an MMD penalty of weight ``mmd_weight``."""

    options_class = VFAEOptions

    def __init__(self, *, mmd_weight: float = 10.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mmd_weight = float(mmd_weight)
        self.mmd_tracker = keras.metrics.Mean(name="mmd")

    @classmethod
    def options(cls, config: Any) -> dict[str, Any]:
        return {**super().options(config), "mmd_weight": config.mmd_weight}

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [*super().metrics, self.mmd_tracker]

    def terms(self, x, groups):  # type: ignore[no-untyped-def]
        """``(nll, kl, mmd)``: the ELBO's terms ``(batch,)`` as ``elbo_terms`` gives them and
        the batch's MMD between the codes of the nuisance's values ``groups`` (one-hot, a
        scalar)."""
        nll, kl, z = self.elbo_terms_and_codes(x)
        return nll, kl, losses.group_mmd(z, groups)

    def train_step(self, data):  # type: ignore[no-untyped-def]
        x = data[0] if isinstance(data, tuple) else data
        # The groups come from every row's own value, also where context dropout hid it from
        # the network: a code that told the value apart there would leak it as much.
        groups = x[:, self.feature_dim :]
        with tf.GradientTape() as tape:
            nll, kl, mmd = self.terms(self.drop_context(x), groups)
            loss = ops.mean(nll + self.kl_weight * kl) + self.mmd_weight * mmd
        grads = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply(grads, self.trainable_weights)
        self.mmd_tracker.update_state(mmd)
        return self._update_metrics(loss, nll, kl)

    def test_step(self, data):  # type: ignore[no-untyped-def]
        x = data[0] if isinstance(data, tuple) else data
        nll, kl, mmd = self.terms(x, x[:, self.feature_dim :])
        self.mmd_tracker.update_state(mmd)
        return self._update_metrics(ops.mean(nll + kl), nll, kl)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mmd_weight": self.mmd_weight}
