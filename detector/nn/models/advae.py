"""adVAE, the self-adversarial VAE of Wang et al. (Knowledge-Based Systems 190, 2020;
arXiv:1903.00904), on this package's mixed numeric/categorical VAE.

Three networks: the VAE's encoder E, its decoder as the generator G, and a Gaussian
transformer T, a small MLP that maps a record's posterior ``N(mu, sigma^2)`` to a Gaussian
``N(mu_T, sigma_T^2)`` of "anomalous but near-normal" latent codes. With ``z ~ N(mu, sigma^2)``,
``z_T ~ N(mu_T, sigma_T^2)``, the regenerated records ``x_r = G(z)`` and ``x_T = G(z_T)``, and
``KL(E(v))`` short for ``KL(q(z|v) || N(0, I))``, every mini-batch makes two updates (the paper's
Algorithm 1):

1. G and T, with E frozen, on ``L_G + lambda * L_T``:

   - ``L_T = KL(N(mu, sigma^2) || N(mu_T, sigma_T^2))`` holds T's Gaussian near the normal one
     (the paper's Eq. 5, with the positive sign it means);
   - ``L_G = -log p(x|z) + gamma * KL(E(x_r))
     + [m_x - ||x_r - x_T||^2]^+ + gamma * [m_z - KL(E(x_T))]^+``: G reconstructs x, makes
     what it generates from z look normal to E, and makes what it generates from z_T differ
     from x_r by at least ``m_x`` and look anomalous to E. These terms also reach T through
     z_T and push it away from z, against ``lambda * L_T``.

2. E, with G and T fixed and ``x_r``, ``x_T`` regenerated and detached, on
   ``L_E = -log p(x|z) + beta * KL(E(x)) + gamma * ([m_z - KL(E(x_r))]^+ + [m_z - KL(E(x_T))]^+)``:
   the VAE's negative ELBO for real records, and every generated record, normal-looking or
   not, mapped at least ``m_z`` nats from the prior: E learns to tell real from generated.

Deviations, each so that the rest of the package keeps working: where the paper has the
squared error of a reconstruction in the ELBO terms, this model uses the package's likelihood
(a Gaussian with a bounded learned variance per numeric feature, a softmax per categorical
group), so the log-likelihood scores keep their meaning; ``beta`` is the KL warm-up weight
``train`` sets (1 after warm-up; the paper has none). ``x_r`` and ``x_T`` are decoder means
with each categorical group's softmax probabilities in place of its one-hot slots.

The paper's test score is ``recon_error``: the squared distance between x and the mean of the
L decoder means G(z_l), z_l ~ q(z|x), over the encoded features (standardised numerics, and for
a categorical group its one-hot slots against the softmax probabilities), negated so that
higher = more normal like the other estimates.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops

from detector.nn import losses
from detector.nn.layers import MLP
from detector.nn.models.vae import ENCODER_LOG_VAR_RANGE, VAE
from detector.nn.options import AdVAEOptions


@keras.saving.register_keras_serializable(package="detector")
class AdVAE(VAE):
    """adVAE over encoded records ``(batch, n_numeric + sum(group_sizes))``.

    ``transformer_weight`` is the paper's lambda, ``adversarial_weight`` its gamma,
    ``margin_x`` and ``margin_z`` its m_x (squared standardised units) and m_z (nats).
    """

    options_class = AdVAEOptions
    extra_score_kinds = ("recon_error",)
    default_score_kind = "elbo"

    def __init__(
        self,
        *,
        transformer_weight: float = 0.01,
        adversarial_weight: float = 0.001,
        margin_x: float = 2.0,
        margin_z: float = 40.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.transformer_weight = float(transformer_weight)
        self.adversarial_weight = float(adversarial_weight)
        self.margin_x = float(margin_x)
        self.margin_z = float(margin_z)
        # T reads (mu, log sigma^2) side by side, through two sigmoid layers twice the latent
        # width, as in the paper's released model.
        width = 2 * self.latent_dim
        self.transformer_body = MLP((width, width), "sigmoid", name="transformer_body")
        self.t_mean = keras.layers.Dense(self.latent_dim, name="t_mean")
        self.t_log_var = keras.layers.Dense(self.latent_dim, name="t_log_var")
        self.loss_g_tracker = keras.metrics.Mean(name="loss_g")
        self.loss_t_tracker = keras.metrics.Mean(name="loss_t")
        self.loss_e_tracker = keras.metrics.Mean(name="loss_e")
        self.encoder_optimizer: keras.optimizers.Optimizer | None = None

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self.transformer_body.build((None, 2 * self.latent_dim))
        self.t_mean.build((None, 2 * self.latent_dim))
        self.t_log_var.build((None, 2 * self.latent_dim))

    @classmethod
    def options(cls, config: Any) -> dict[str, Any]:
        return {
            **super().options(config),
            "transformer_weight": config.advae_lambda,
            "adversarial_weight": config.advae_gamma,
            "margin_x": config.advae_margin_x,
            "margin_z": config.advae_margin_z,
        }

    # ---- the three networks ----------------------------------------------------------------

    def transform(self, mean, log_var):  # type: ignore[no-untyped-def]
        """T: a posterior's mean and log-variance ``(batch, latent_dim)`` each -> the
        transformed Gaussian's mean and log-variance, the same shapes."""
        h = self.transformer_body(ops.concatenate([mean, log_var], axis=-1))
        return self.t_mean(h), ops.clip(self.t_log_var(h), *ENCODER_LOG_VAR_RANGE)

    def reconstruct(self, z):  # type: ignore[no-untyped-def]
        """G(z) as a record ``(..., input_dim)``: numeric decoder means, then each categorical
        group's softmax probabilities."""
        h = self.decoder_body(z)
        parts = []
        if self.x_mean is not None:
            parts.append(self.x_mean(h))
        if self.x_logits is not None:
            parts.append(losses.group_softmax(self.x_logits(h), self.group_sizes))
        return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)

    @property
    def encoder_weights(self) -> list[keras.Variable]:
        """E's trainable variables, the ones step 2 updates."""
        return [
            *self.encoder_body.trainable_weights,
            *self.z_mean.trainable_weights,
            *self.z_log_var.trainable_weights,
        ]

    @property
    def generator_weights(self) -> list[keras.Variable]:
        """G's and T's trainable variables, the ones step 1 updates."""
        heads = [h for h in (self.x_mean, self.x_log_var, self.x_logits) if h is not None]
        layers = [self.decoder_body, *heads, self.transformer_body, self.t_mean, self.t_log_var]
        return [w for layer in layers for w in layer.trainable_weights]

    # ---- scoring ------------------------------------------------------------------------------

    def score_extras(self, x, mean, log_var, z, estimates):  # type: ignore[no-untyped-def]
        """``recon_error``: -||x - mean_l G(z_l)||^2 over the L samples ``z`` ``(batch, L,
        latent)``, ``(batch,)``; higher = more normal."""
        average = ops.mean(self.reconstruct(z), axis=1)
        return [-ops.sum(ops.square(x - average), axis=-1)]

    # ---- training ------------------------------------------------------------------------------

    def compile(
        self,
        optimizer: Any = "adam",
        *,
        encoder_optimizer: keras.optimizers.Optimizer | None = None,
        **kwargs: Any,
    ) -> None:
        """As ``keras.Model.compile``; ``optimizer`` updates G and T, ``encoder_optimizer`` E
        (default: a fresh copy of ``optimizer`` with the same settings)."""
        super().compile(optimizer=optimizer, **kwargs)
        if encoder_optimizer is None:
            encoder_optimizer = type(self.optimizer).from_config(self.optimizer.get_config())
        self.encoder_optimizer = encoder_optimizer
        if self.built:
            # Built here, not in the first traced step, so its slots exist before fit compiles.
            self.encoder_optimizer.build(self.encoder_weights)

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [*super().metrics, self.loss_g_tracker, self.loss_t_tracker, self.loss_e_tracker]

    def _sample(self, mean, log_var):  # type: ignore[no-untyped-def]
        eps = keras.random.normal(ops.shape(mean), seed=self.seed_generator)
        return mean + ops.exp(0.5 * log_var) * eps

    def _prior_kl(self, x):  # type: ignore[no-untyped-def]
        """KL(E(x) || N(0, I)) per record, ``(batch,)``."""
        mean, log_var = self.encode(x)
        return ops.sum(losses.kl_to_standard_normal(mean, log_var), axis=-1)

    def _nll(self, x, z):  # type: ignore[no-untyped-def]
        return -ops.sum(self.feature_log_likelihood(x, z), axis=-1)

    def _generator_loss(self, nll, x_r, x_t, kl_r, kl_t):  # type: ignore[no-untyped-def]
        """L_G per record ``(batch,)``."""
        gap = ops.sum(ops.square(x_r - x_t), axis=-1)
        return (
            nll
            + self.adversarial_weight * kl_r
            + ops.relu(self.margin_x - gap)
            + self.adversarial_weight * ops.relu(self.margin_z - kl_t)
        )

    def _encoder_loss(self, nll, kl, kl_r, kl_t, beta):  # type: ignore[no-untyped-def]
        """L_E per record ``(batch,)``."""
        hinges = ops.relu(self.margin_z - kl_r) + ops.relu(self.margin_z - kl_t)
        return nll + beta * kl + self.adversarial_weight * hinges

    def _transformer_loss(self, mean, log_var, t_mean, t_log_var):  # type: ignore[no-untyped-def]
        """L_T per record ``(batch,)``."""
        return ops.sum(losses.kl_between_gaussians(mean, log_var, t_mean, t_log_var), axis=-1)

    def _record(self, loss, nll, kl, loss_g, loss_t, loss_e) -> dict[str, Any]:  # type: ignore[no-untyped-def]
        self.loss_g_tracker.update_state(ops.mean(loss_g))
        self.loss_t_tracker.update_state(ops.mean(loss_t))
        self.loss_e_tracker.update_state(ops.mean(loss_e))
        return self._update_metrics(loss, nll, kl)

    def train_step(self, data):  # type: ignore[no-untyped-def]
        if self.encoder_optimizer is None:
            raise RuntimeError("compile the model before training it")
        x = data[0] if isinstance(data, tuple) else data

        # Step 1: G and T. E's output is a constant here.
        mean, log_var = self.encode(x)
        mean, log_var = ops.stop_gradient(mean), ops.stop_gradient(log_var)
        with tf.GradientTape() as tape:
            z = self._sample(mean, log_var)
            t_mean, t_log_var = self.transform(mean, log_var)
            x_r = self.reconstruct(z)
            x_t = self.reconstruct(self._sample(t_mean, t_log_var))
            loss_t = self._transformer_loss(mean, log_var, t_mean, t_log_var)
            loss_g = self._generator_loss(
                self._nll(x, z), x_r, x_t, self._prior_kl(x_r), self._prior_kl(x_t)
            )
            step_1 = ops.mean(loss_g + self.transformer_weight * loss_t)
        weights = self.generator_weights
        self.optimizer.apply(tape.gradient(step_1, weights), weights)

        # Step 2: E, on records the updated G and T regenerate.
        with tf.GradientTape() as tape:
            mean, log_var = self.encode(x)
            z = self._sample(mean, log_var)
            nll = self._nll(x, z)
            kl = ops.sum(losses.kl_to_standard_normal(mean, log_var), axis=-1)
            t_mean, t_log_var = self.transform(ops.stop_gradient(mean), ops.stop_gradient(log_var))
            x_r = ops.stop_gradient(self.reconstruct(z))
            x_t = ops.stop_gradient(self.reconstruct(self._sample(t_mean, t_log_var)))
            loss_e = self._encoder_loss(
                nll, kl, self._prior_kl(x_r), self._prior_kl(x_t), self.kl_weight
            )
            step_2 = ops.mean(loss_e)
        weights = self.encoder_weights
        self.encoder_optimizer.apply(tape.gradient(step_2, weights), weights)
        return self._record(step_1 + step_2, nll, kl, loss_g, loss_t, loss_e)

    def test_step(self, data):  # type: ignore[no-untyped-def]
        x = data[0] if isinstance(data, tuple) else data
        mean, log_var = self.encode(x)
        z = self._sample(mean, log_var)
        t_mean, t_log_var = self.transform(mean, log_var)
        x_r = self.reconstruct(z)
        x_t = self.reconstruct(self._sample(t_mean, t_log_var))
        kl_r, kl_t = self._prior_kl(x_r), self._prior_kl(x_t)
        nll = self._nll(x, z)
        kl = ops.sum(losses.kl_to_standard_normal(mean, log_var), axis=-1)
        loss_t = self._transformer_loss(mean, log_var, t_mean, t_log_var)
        loss_g = self._generator_loss(nll, x_r, x_t, kl_r, kl_t)
        # As for the VAE, validation reports the objectives at KL weight 1.
        loss_e = self._encoder_loss(nll, kl, kl_r, kl_t, 1.0)
        loss = ops.mean(loss_g + self.transformer_weight * loss_t) + ops.mean(loss_e)
        return self._record(loss, nll, kl, loss_g, loss_t, loss_e)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "transformer_weight": self.transformer_weight,
            "adversarial_weight": self.adversarial_weight,
            "margin_x": self.margin_x,
            "margin_z": self.margin_z,
        }
