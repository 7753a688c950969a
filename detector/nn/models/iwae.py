"""The importance-weighted autoencoder (Burda, Grosse & Salakhutdinov 2016): the VAE's network
trained on a tighter bound than the ELBO.

With k samples z_1..z_k from q(z|x), the bound is

    L_k(x) = log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x)

L_1 is the ELBO (with a sampled rather than analytic KL), L_k <= L_{k+1} <= log p(x), and
L_k -> log p(x) as k grows. Training on it lets the posterior be broader than the ELBO allows
and fits a better density model; scoring with the same bound (``iwae``, L = the bundle's
sample count) is the model's default score. The KL warm-up scales the log p(z)/q(z|x) part of
each weight, as it scales the ELBO's KL.

Everything else (encoder, decoder, output terms, scoring graph, bundle) is the plain VAE's.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops

from detector.nn import losses
from detector.nn.models.vae import VAE
from detector.nn.options import IWAEOptions


@keras.saving.register_keras_serializable(package="detector")
class IWAE(VAE):
    """A VAE whose training loss is minus the importance-weighted bound with ``iwae_samples``
    samples per record."""

    options_class = IWAEOptions
    default_score_kind = "iwae"
    #: Early stopping on the validation bound the network is trained on.
    monitor = "val_loss"

    def __init__(self, *, iwae_samples: int = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.iwae_samples = int(iwae_samples)

    @classmethod
    def options(cls, config: Any) -> dict[str, Any]:
        return {**super().options(config), "iwae_samples": config.iwae_samples}

    def importance_bound(self, x, eps, prior_weight=1.0):  # type: ignore[no-untyped-def]
        """``(bound, nll, kl)``, each ``(batch,)``: L_k(x) for the noise ``eps``
        ``(batch, k, latent_dim)``, with log p(z)/q(z|x) scaled by ``prior_weight``; the mean
        over the k samples of -log p(x|z) and the analytic KL, for the ELBO metrics."""
        mean, log_var = self.encode(x)
        z = mean[:, None, :] + ops.exp(0.5 * log_var)[:, None, :] * eps
        log_lik = ops.sum(self.feature_log_likelihood(x[:, None, :], z), axis=-1)  # (batch, k)
        log_prior = ops.sum(losses.standard_normal_log_density(z), axis=-1)
        log_q = ops.sum(
            losses.gaussian_log_density(z, mean[:, None, :], log_var[:, None, :]), axis=-1
        )
        bound = losses.log_mean_exp(log_lik + prior_weight * (log_prior - log_q), axis=1)
        kl = ops.sum(losses.kl_to_standard_normal(mean, log_var), axis=-1)
        return bound, -ops.mean(log_lik, axis=1), kl

    def _noise(self, x):  # type: ignore[no-untyped-def]
        shape = (ops.shape(x)[0], self.iwae_samples, self.latent_dim)
        return keras.random.normal(shape, seed=self.seed_generator)

    def train_step(self, data):  # type: ignore[no-untyped-def]
        x = data[0] if isinstance(data, tuple) else data
        with tf.GradientTape() as tape:
            bound, nll, kl = self.importance_bound(x, self._noise(x), self.kl_weight)
            loss = -ops.mean(bound)
        grads = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply(grads, self.trainable_weights)
        return self._update_metrics(loss, nll, kl)

    def test_step(self, data):  # type: ignore[no-untyped-def]
        x = data[0] if isinstance(data, tuple) else data
        bound, nll, kl = self.importance_bound(x, self._noise(x))
        return self._update_metrics(-ops.mean(bound), nll, kl)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "iwae_samples": self.iwae_samples}
