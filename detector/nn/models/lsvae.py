"""The least-squares VAE with regularisation (Ramachandra, "Least Square Variational Bayesian
Autoencoder with Regularization", 2017).

The paper replaces the VAE's learned reconstruction likelihood by a least-squares loss and adds
an L2 penalty on the network's weights. Per batch of n records the loss is

    (1/n) sum_i [ 1/2 ||x_i - f(z_i)||^2 + beta * KL(q(z|x_i) || N(0, I)) ]
        + lsvae_weight_decay * sum_W ||W||^2

over the numeric features, with z_i ~ q(z|x_i) and W every kernel (not bias) of the encoder and
decoder. Half the squared error is, up to a constant, the negative log-density of a Gaussian
with unit variance, so the model is this package's VAE with the decoder's variance held at 1
(in standardised units) instead of learned: every likelihood score keeps its meaning, now
under a least-squares likelihood. Categorical groups keep their softmax likelihood, as squared
error has no meaning for a category (our choice; the paper's data are images).
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops

from detector.nn.layers import BoundedLogVariance
from detector.nn.models.vae import VAE
from detector.nn.options import LSVAEOptions


@keras.saving.register_keras_serializable(package="detector")
class LSVAE(VAE):
    """A VAE with a unit-variance (least-squares) decoder and an L2 weight penalty of weight
    ``weight_decay``."""

    options_class = LSVAEOptions

    def __init__(self, *, weight_decay: float = 1e-4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.weight_decay = float(weight_decay)
        if self.n_numeric:
            # Held at log-variance 0 (its starting value; the bounds only need to hold 0):
            # the least-squares loss has no variance to learn.
            self.x_log_var = BoundedLogVariance(
                self.n_numeric, min_scale=0.5, max_scale=2.0, name="x_log_var", trainable=False
            )

    @classmethod
    def options(cls, config: Any) -> dict[str, Any]:
        return {**super().options(config), "weight_decay": config.lsvae_weight_decay}

    def weight_penalty(self):  # type: ignore[no-untyped-def]
        """sum ||W||^2 over every kernel of the encoder and decoder (biases are not
        penalised, as in weight decay)."""
        kernels = [w for w in self.trainable_weights if w.path.endswith("kernel")]
        return ops.sum(ops.stack([ops.sum(ops.square(w)) for w in kernels]))

    def loss_terms(self, x, beta):  # type: ignore[no-untyped-def]
        """``(loss, nll, kl)``: the batch loss above and its per-record ``(batch,)`` terms."""
        nll, kl = self.elbo_terms(x)
        return ops.mean(nll + beta * kl) + self.weight_decay * self.weight_penalty(), nll, kl

    def train_step(self, data):  # type: ignore[no-untyped-def]
        x = data[0] if isinstance(data, tuple) else data
        with tf.GradientTape() as tape:
            loss, nll, kl = self.loss_terms(x, self.kl_weight)
        grads = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply(grads, self.trainable_weights)
        return self._update_metrics(loss, nll, kl)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "weight_decay": self.weight_decay}
