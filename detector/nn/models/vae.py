"""The variational autoencoder (Kingma & Welling 2014) for mixed numeric/categorical records.

Encoder: MLP -> mean and log-variance of q(z|x). Decoder: MLP -> the parameters of p(x|z): a
Gaussian mean per numeric feature with a learned, bounded per-feature variance, and softmax
logits per categorical one-hot group. Trained by maximising the ELBO
``E_q[log p(x|z)] - beta * KL(q(z|x) || N(0, I))`` with ``beta`` warmed up from 0 to 1.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import ops

from detector.nn import losses
from detector.nn.layers import MLP, BoundedLogVariance
from detector.nn.options import ModelOptions, VAEOptions

#: Encoder log-variances are held in this range so exp() can neither vanish nor overflow.
ENCODER_LOG_VAR_RANGE = (-12.0, 6.0)


@keras.saving.register_keras_serializable(package="detector")
class VAE(keras.Model):
    """A VAE over encoded records of shape ``(batch, n_numeric + sum(group_sizes))``.

    The other models (VAE-SVDD, adVAE, the conditional VAE) subclass it and change what the
    hooks below say; training, scoring, calibration and bundles only talk to these hooks.
    """

    #: The options this model adds to ``TrainingOptions`` (``detector.nn.options.MODEL_OPTIONS``
    #: registers the same class under the model's name).
    options_class: type[ModelOptions] = VAEOptions
    #: Scores this model adds to the four log-likelihood estimates, in ``score_extras`` order.
    extra_score_kinds: tuple[str, ...] = ()
    #: Whether the model takes context columns (``train --context``) as unmodelled inputs.
    conditional = False
    #: The score a bundle of this model uses unless told otherwise.
    default_score_kind = "elbo"
    #: The validation metric early stopping watches (lower is better).
    monitor = "val_neg_elbo"

    def __init__(
        self,
        *,
        n_numeric: int,
        group_sizes: tuple[int, ...] | list[int] = (),
        latent_dim: int,
        hidden_units: tuple[int, ...] | list[int],
        activation: str = "relu",
        min_scale: float = 0.3,
        max_scale: float = 2.0,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.n_numeric = int(n_numeric)
        self.group_sizes = tuple(int(g) for g in group_sizes)
        self.latent_dim = int(latent_dim)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.activation = activation
        self.min_scale = float(min_scale)
        self.max_scale = float(max_scale)
        self.seed = int(seed)
        self.input_dim = self.n_numeric + sum(self.group_sizes)

        self.encoder_body = MLP(self.hidden_units, activation, name="encoder_body")
        self.z_mean = keras.layers.Dense(self.latent_dim, name="z_mean")
        self.z_log_var = keras.layers.Dense(self.latent_dim, name="z_log_var")
        self.decoder_body = MLP(self.hidden_units[::-1], activation, name="decoder_body")
        # Only the heads the data needs: a head that no loss term reaches gets no gradient.
        self.x_mean = keras.layers.Dense(self.n_numeric, name="x_mean") if self.n_numeric else None
        self.x_log_var = (
            BoundedLogVariance(
                self.n_numeric,
                min_scale=self.min_scale,
                max_scale=self.max_scale,
                name="x_log_var",
            )
            if self.n_numeric
            else None
        )
        n_logits = sum(self.group_sizes)
        self.x_logits = keras.layers.Dense(n_logits, name="x_logits") if n_logits else None
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        # KL weight beta: a non-trainable variable so a callback can warm it up between epochs
        # without retracing the compiled train step.
        self.kl_weight = keras.Variable(1.0, trainable=False, name="kl_weight")

        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.nll_tracker = keras.metrics.Mean(name="nll")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.neg_elbo_tracker = keras.metrics.Mean(name="neg_elbo")

    def build(self, input_shape: Any) -> None:
        self.encoder_body.build((None, self.input_dim))
        self.build_after_encoder_body()

    def build_after_encoder_body(self) -> None:
        """Build the latent heads, the decoder and its output heads (a model with another
        encoder builds that, then calls this)."""
        encoded = (None, self.hidden_units[-1])
        decoded = (None, self.hidden_units[0])
        self.z_mean.build(encoded)
        self.z_log_var.build(encoded)
        self.decoder_body.build((None, self.decoder_input_dim))
        for head in (self.x_mean, self.x_log_var, self.x_logits):
            if head is not None:
                head.build(decoded)
        self.built = True

    @property
    def decoder_input_dim(self) -> int:
        """The decoder's input width: the codes (a conditional model adds its context)."""
        return self.latent_dim

    # ---- the probabilistic pieces ---------------------------------------------------------

    def encode(self, x):  # type: ignore[no-untyped-def]
        """q(z|x): mean and log-variance, each ``(batch, latent_dim)``."""
        h = self.encoder_body(x)
        log_var = ops.clip(self.z_log_var(h), *ENCODER_LOG_VAR_RANGE)
        return self.z_mean(h), log_var

    def feature_log_likelihood(self, x, z):  # type: ignore[no-untyped-def]
        """log p(x_j | z) per output term, shape ``(..., n_numeric + n_groups)``.

        ``x`` (encoded records) and ``z`` share their leading axes. Numeric terms come first,
        then one term per categorical group, matching ``Schema.feature_columns``.
        """
        # The decoder runs on rows, ``(n * L, latent_dim)``: a Dense layer given ``(n, L, d)``
        # computes a tensordot (transposes and a batched matmul), measured 40% slower than
        # one matmul over the flattened rows; scoring's decoder is most of its time.
        lead = ops.shape(z)[:-1]
        h = self.decoder_body(ops.reshape(z, (-1, ops.shape(z)[-1])))

        def unflatten(head_output):  # type: ignore[no-untyped-def]
            return ops.reshape(head_output, (*lead, ops.shape(head_output)[-1]))

        terms = []
        if self.x_mean is not None and self.x_log_var is not None:
            x_num = x[..., : self.n_numeric]
            log_var = self.x_log_var.log_variance()  # (n_numeric,), broadcast by the density
            terms.append(losses.gaussian_log_density(x_num, unflatten(self.x_mean(h)), log_var))
        if self.x_logits is not None:
            terms.append(
                losses.categorical_log_prob(
                    x[..., self.n_numeric :], unflatten(self.x_logits(h)), self.group_sizes
                )
            )
        return terms[0] if len(terms) == 1 else ops.concatenate(terms, axis=-1)

    def decode_distribution(self, z, context=None):  # type: ignore[no-untyped-def]
        """The parameters of p(x|z) for latent codes ``z`` ``(batch, latent_dim)``: numeric means
        and log-variances, each ``(batch, n_numeric)`` in standardised units, and categorical
        logits ``(batch, sum(group_sizes))``, one softmax block per group (its last slot is the
        group's "unseen" category). A model that conditions on a context overrides this to
        take one; this model conditions on nothing, so a context is an error."""
        if context is not None:
            raise ValueError(f"{type(self).__name__} does not condition on a context")
        return self._output_parameters(self.decoder_body(z))

    def _output_parameters(self, h):  # type: ignore[no-untyped-def]
        """The output heads on the decoder's last hidden layer ``h``: numeric means and
        log-variances and categorical logits, an empty ``(batch, 0)`` for a head the data
        lacks."""
        empty = ops.zeros((ops.shape(h)[0], 0), dtype=h.dtype)
        mean = self.x_mean(h) if self.x_mean is not None else empty
        log_var = self.x_log_var(h) if self.x_log_var is not None else empty
        logits = self.x_logits(h) if self.x_logits is not None else empty
        return mean, log_var, logits

    def elbo_terms(self, x):  # type: ignore[no-untyped-def]
        """One-sample estimates of -E_q[log p(x|z)] and the analytic KL, each ``(batch,)``."""
        nll, kl, _ = self.elbo_terms_and_codes(x)
        return nll, kl

    def elbo_terms_and_codes(self, x):  # type: ignore[no-untyped-def]
        """``elbo_terms`` and the sampled codes z ``(batch, latent_dim)`` they came from."""
        mean, log_var = self.encode(x)
        eps = keras.random.normal(ops.shape(mean), seed=self.seed_generator)
        z = mean + ops.exp(0.5 * log_var) * eps
        nll = -ops.sum(self.feature_log_likelihood(x, z), axis=-1)
        kl = ops.sum(losses.kl_to_standard_normal(mean, log_var), axis=-1)
        return nll, kl, z

    def call(self, inputs):  # type: ignore[no-untyped-def]
        """The deterministic reconstruction from the posterior mean, ``(batch, n_outputs)``:
        numeric means followed by categorical logits."""
        mean, _ = self.encode(inputs)
        h = self.decoder_body(mean)
        heads = [head(h) for head in (self.x_mean, self.x_logits) if head is not None]
        return heads[0] if len(heads) == 1 else ops.concatenate(heads, axis=-1)

    # ---- hooks for subclasses ----------------------------------------------------------------

    @classmethod
    def from_training(cls, *, config: Any, **shape: Any) -> VAE:
        """The model ``train`` builds: ``shape`` holds the data's widths (``n_numeric``,
        ``group_sizes``, ``latent_dim``, ``hidden_units``, and ``context_sizes`` for a
        conditional model), ``config`` (a ``TrainingConfig``) the rest via ``options``."""
        return cls(**shape, **cls.options(config))

    @classmethod
    def options(cls, config: Any) -> dict[str, Any]:
        """This model's constructor arguments taken from a ``TrainingConfig``; subclasses
        add their own to these."""
        return {
            "activation": config.activation,
            "min_scale": config.min_scale,
            "max_scale": config.max_scale,
            "seed": config.random_state,
        }

    def score_extras(self, x, mean, log_var, z, estimates):  # type: ignore[no-untyped-def]
        """Extra per-record scores, one ``(batch,)`` tensor per ``extra_score_kinds`` entry,
        each oriented like the log-likelihood estimates (higher = more normal). ``z`` holds
        the L samples ``(batch, L, latent)``; ``estimates`` the four estimates by name."""
        return []

    def training_callbacks(self, fit_x: Any, config: Any) -> list[keras.callbacks.Callback]:
        """Extra callbacks ``fit`` runs with (e.g. setting a centre after a warm-up)."""
        return []

    def finish_training(self, score: Any, val_x: Any) -> None:
        """Called once after ``fit`` with the scoring function (encoded rows -> named
        estimates) and the validation rows, to fit anything scoring needs from data."""

    # ---- training, as in the Keras guide on customising fit() ------------------------------

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.loss_tracker, self.nll_tracker, self.kl_tracker, self.neg_elbo_tracker]

    def _update_metrics(self, loss, nll, kl) -> dict[str, Any]:  # type: ignore[no-untyped-def]
        self.loss_tracker.update_state(loss)
        self.nll_tracker.update_state(ops.mean(nll))
        self.kl_tracker.update_state(ops.mean(kl))
        self.neg_elbo_tracker.update_state(ops.mean(nll + kl))
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):  # type: ignore[no-untyped-def]
        x = data[0] if isinstance(data, tuple) else data
        with tf.GradientTape() as tape:
            nll, kl = self.elbo_terms(x)
            loss = ops.mean(nll + self.kl_weight * kl)
        grads = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply(grads, self.trainable_weights)
        return self._update_metrics(loss, nll, kl)

    def test_step(self, data):  # type: ignore[no-untyped-def]
        x = data[0] if isinstance(data, tuple) else data
        nll, kl = self.elbo_terms(x)
        # Validation reports the true negative ELBO (beta = 1) whatever the warm-up stage.
        return self._update_metrics(ops.mean(nll + kl), nll, kl)

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n_numeric": self.n_numeric,
            "group_sizes": list(self.group_sizes),
            "latent_dim": self.latent_dim,
            "hidden_units": list(self.hidden_units),
            "activation": self.activation,
            "min_scale": self.min_scale,
            "max_scale": self.max_scale,
            "seed": self.seed,
        }
