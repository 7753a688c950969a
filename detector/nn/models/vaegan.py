"""VAE-GAN (Larsen, Sønderby, Larochelle & Winther, "Autoencoding beyond pixels using a learned
similarity metric", ICML 2016) on tables.

Three networks: the VAE's encoder E and decoder G, and a discriminator D, an MLP over records
whose last hidden layer D_l gives the features the reconstruction is measured in. For a batch,
with z ~ q(z|x), x~ = G(z) and x_p = G(z_p), z_p ~ N(0, I) (G's output as a record: numeric
means, each categorical group's softmax probabilities):

- L_like = 1/2 ||D_l(x) - D_l(x~)||^2, the reconstruction error in D's feature space (a
  unit-variance Gaussian there: the paper's "learned similarity");
- L_GAN = -log D(x) - log(1 - D(x~)) - log(1 - D(x_p)), D's cross-entropy on real records and
  the two kinds of generated ones.

Each batch makes the paper's three updates, each network on its own loss:

1. E on ``nll + beta * KL + gan_feature_weight * L_like``;
2. G on ``nll + gan_feature_weight * L_like + gan_weight * L_fool``, where
   L_fool = -log D(x~) - log D(x_p) (the non-saturating form of -L_GAN);
3. D on L_GAN.

``nll`` is -log p(x|z), the package's likelihood: the paper drops it for L_like, this model keeps
it beside L_like so the likelihood scores (``elbo`` and the others) keep their meaning.

**Training recipe for tables**, each against a failure seen with GANs on small tabular data:

- *instance noise*: D sees every record, real or generated, with N(0, gan_noise^2) added. A
  real record's categorical slots are exactly one-hot and a generated one's are probabilities,
  so without noise D separates them at once and G's adversarial gradient vanishes;
- *one-sided label smoothing*: D's target for real records is 0.9, so D never grows certain;
- *the adversarial term is light* (gan_weight 0.1): the likelihood leads, D refines;
- *D has its own Adam* at the same learning rate, and the same hidden widths as the encoder.

Failure checks: the metrics ``d_real`` and ``d_fake`` (mean D(x) and D(x~)) are logged every
epoch; a D that has won (d_fake near 0, d_real near 1) or collapsed (both near 0.5 from the
start) shows there, and a test trains a small model and checks both stay off 0 and 1 with every
loss finite.

It scores by the ELBO like the plain VAE. The paper's other two scores were measured on every
dev family and lost everywhere (tests/benchmarks/README.md, "The remaining variants"), so they
are not offered: the error in D's feature space (-mean_l ||D_l(x) - D_l(G(z_l))||^2) ranks below
the ELBO on every family, and D's confidence that a record is real ranks anomalies as *more*
real (ADBench AUROC .196): D learns "generated or not", and an anomaly, far from anything G
generates, looks real to it.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops

from detector.nn import losses
from detector.nn.layers import MLP
from detector.nn.models.vae import VAE
from detector.nn.options import VAEGANOptions

#: D's target for a real record (one-sided label smoothing).
REAL_TARGET = 0.9


@keras.saving.register_keras_serializable(package="detector")
class VAEGAN(VAE):
    """A VAE with a discriminator; ``adversarial_weight`` is gan_weight, ``feature_weight``
    gan_feature_weight, ``noise`` gan_noise."""

    options_class = VAEGANOptions

    def __init__(
        self,
        *,
        adversarial_weight: float = 0.1,
        feature_weight: float = 1.0,
        noise: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.adversarial_weight = float(adversarial_weight)
        self.feature_weight = float(feature_weight)
        self.noise = float(noise)
        self.discriminator_body = MLP(self.hidden_units, self.activation, name="discriminator")
        self.discriminator_logit = keras.layers.Dense(1, name="discriminator_logit")
        self.discriminator_optimizer: keras.optimizers.Optimizer | None = None
        self.trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ("loss_e", "loss_g", "loss_d", "feature", "d_real", "d_fake")
        }

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self.discriminator_body.build((None, self.input_dim))
        self.discriminator_logit.build((None, self.hidden_units[-1]))

    @classmethod
    def options(cls, config: Any) -> dict[str, Any]:
        return {
            **super().options(config),
            "adversarial_weight": config.gan_weight,
            "feature_weight": config.gan_feature_weight,
            "noise": config.gan_noise,
        }

    # ---- the networks ------------------------------------------------------------------------

    def reconstruct(self, z):  # type: ignore[no-untyped-def]
        """G(z) as a record ``(..., input_dim)``: numeric means, then each categorical group's
        softmax probabilities."""
        lead = ops.shape(z)[:-1]
        h = self.decoder_body(ops.reshape(z, (-1, self.latent_dim)))
        parts = []
        if self.x_mean is not None:
            parts.append(self.x_mean(h))
        if self.x_logits is not None:
            parts.append(losses.group_softmax(self.x_logits(h), self.group_sizes))
        record = parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)
        return ops.reshape(record, (*lead, self.input_dim))

    def discriminate(self, x):  # type: ignore[no-untyped-def]
        """``(features, logit)``: D_l(x) ``(..., hidden_units[-1])`` and D's logit ``(...,)``
        that x is a real record."""
        lead = ops.shape(x)[:-1]
        features = self.discriminator_body(ops.reshape(x, (-1, self.input_dim)))
        logit = self.discriminator_logit(features)[:, 0]
        return ops.reshape(features, (*lead, ops.shape(features)[-1])), ops.reshape(logit, lead)

    def _noisy(self, x):  # type: ignore[no-untyped-def]
        return x + self.noise * keras.random.normal(ops.shape(x), seed=self.seed_generator)

    @property
    def encoder_weights(self) -> list[keras.Variable]:
        layers = [self.encoder_body, self.z_mean, self.z_log_var]
        return [w for layer in layers for w in layer.trainable_weights]

    @property
    def decoder_weights(self) -> list[keras.Variable]:
        heads = [h for h in (self.x_mean, self.x_log_var, self.x_logits) if h is not None]
        return [w for layer in (self.decoder_body, *heads) for w in layer.trainable_weights]

    @property
    def discriminator_weights(self) -> list[keras.Variable]:
        layers = [self.discriminator_body, self.discriminator_logit]
        return [w for layer in layers for w in layer.trainable_weights]

    # ---- the losses --------------------------------------------------------------------------

    def losses_of(self, x, beta):  # type: ignore[no-untyped-def]
        """Every term for a batch (``gan_terms``), with z ~ q(z|x), z_p ~ N(0, I) and D's input
        noise drawn here."""
        nll, kl, z = self.elbo_terms_and_codes(x)
        prior_z = keras.random.normal(ops.shape(z), seed=self.seed_generator)
        real = self.discriminate(self._noisy(x))
        rec = self.discriminate(self._noisy(self.reconstruct(z)))
        prior = self.discriminate(self._noisy(self.reconstruct(prior_z)))
        return self.gan_terms(nll, kl, real, rec, prior[1], beta)

    def gan_terms(self, nll, kl, real, rec, prior_logit, beta):  # type: ignore[no-untyped-def]
        """``loss_e``, ``loss_g``, ``loss_d`` (scalars), ``nll``, ``kl``, ``feature`` (each
        ``(batch,)``), ``d_real`` and ``d_fake`` (mean probabilities) from the ELBO terms,
        D's ``(features, logit)`` on the real and the reconstructed records and its logit on
        the records generated from the prior."""
        (real_features, real_logit), (rec_features, rec_logit) = real, rec
        feature = 0.5 * ops.sum(ops.square(real_features - rec_features), axis=-1)
        real_loss = losses.sigmoid_cross_entropy(real_logit, REAL_TARGET)
        fake_loss = losses.sigmoid_cross_entropy(rec_logit, 0.0)
        fake_loss += losses.sigmoid_cross_entropy(prior_logit, 0.0)
        fool = losses.sigmoid_cross_entropy(rec_logit, 1.0)
        fool += losses.sigmoid_cross_entropy(prior_logit, 1.0)
        like = nll + self.feature_weight * feature
        return {
            "loss_e": ops.mean(like + beta * kl),
            "loss_g": ops.mean(like + self.adversarial_weight * fool),
            "loss_d": ops.mean(real_loss + fake_loss),
            "nll": nll,
            "kl": kl,
            "feature": feature,
            "d_real": ops.mean(ops.sigmoid(real_logit)),
            "d_fake": ops.mean(ops.sigmoid(rec_logit)),
        }

    # ---- training ----------------------------------------------------------------------------

    def compile(
        self,
        optimizer: Any = "adam",
        *,
        discriminator_optimizer: keras.optimizers.Optimizer | None = None,
        **kwargs: Any,
    ) -> None:
        """As ``keras.Model.compile``; ``optimizer`` updates E and G (each step on its own
        loss), ``discriminator_optimizer`` D (default: a copy of ``optimizer``'s settings)."""
        super().compile(optimizer=optimizer, **kwargs)
        if discriminator_optimizer is None:
            settings = self.optimizer.get_config()
            discriminator_optimizer = type(self.optimizer).from_config(settings)
        self.discriminator_optimizer = discriminator_optimizer
        if self.built:
            self.discriminator_optimizer.build(self.discriminator_weights)

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [*super().metrics, *self.trackers.values()]

    def _record(self, terms: dict[str, Any]) -> dict[str, Any]:
        for name, tracker in self.trackers.items():
            tracker.update_state(ops.mean(terms[name]))
        loss = terms["loss_e"] + terms["loss_g"] + terms["loss_d"]
        return self._update_metrics(loss, terms["nll"], terms["kl"])

    def train_step(self, data):  # type: ignore[no-untyped-def]
        if self.discriminator_optimizer is None:
            raise RuntimeError("compile the model before training it")
        x = data[0] if isinstance(data, tuple) else data
        with tf.GradientTape(persistent=True) as tape:
            terms = self.losses_of(x, self.kl_weight)
        # E and G share one Adam: their variables are disjoint, so its slots are too.
        pairs = ((self.encoder_weights, "loss_e"), (self.decoder_weights, "loss_g"))
        grads, weights = [], []
        for variables, name in pairs:
            grads += tape.gradient(terms[name], variables)
            weights += variables
        self.optimizer.apply(grads, weights)
        d_weights = self.discriminator_weights
        self.discriminator_optimizer.apply(tape.gradient(terms["loss_d"], d_weights), d_weights)
        del tape
        return self._record(terms)

    def test_step(self, data):  # type: ignore[no-untyped-def]
        x = data[0] if isinstance(data, tuple) else data
        return self._record(self.losses_of(x, 1.0))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "adversarial_weight": self.adversarial_weight,
            "feature_weight": self.feature_weight,
            "noise": self.noise,
        }
