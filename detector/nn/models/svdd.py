"""VAE-SVDD: a VAE whose encoder means are also pulled into a hypersphere (Deep SVDD).

Deep SVDD (Ruff et al., ICML 2018) trains an encoder to map normal data close to a fixed
centre ``c`` and scores a record by its squared distance to it. Here the encoder is the VAE's:
the loss is the negative ELBO (KL weight warmed up as for the VAE) plus
``svdd_weight * mean ||mu(x) - c||^2``, so normal records get both a high likelihood and a
compact latent code. Deep SVDD's known failure is the hypersphere collapse: every input mapped
to ``c`` (bias terms make it easy). The reconstruction term resists it but does not rule it
out: with a large ``svdd_weight`` (10, on the sample data and on the adVAE benchmark's letter
and cardio) the decoder learns to ignore z, the VAE's posterior collapse, and the means all
sit at ``c``.
``finish_training`` therefore refuses a model none of whose latent means varies across the
validation rows (``TrainingError``, naming the fix).

The centre is fixed once, as Deep SVDD does, after the KL warm-up: the mean of the encoder
means over the fit rows, with entries nearer zero than ``CENTRE_EPS`` pushed out to
``±CENTRE_EPS``. Until then the SVDD term has weight 0 (a non-trainable switch, so the compiled
train step is not retraced). With ``svdd_nu`` set, the soft-boundary objective is used
instead: ``R^2 + (1/nu) * mean(max(0, d - R^2))`` with ``R^2`` set after every epoch to the
``1 - nu`` quantile of the fit rows' squared distances (Ruff et al.'s update of R).

Scores, besides the VAE's four (each higher = more normal, as all estimates are):

- ``svdd_distance``: ``-||mu(x) - c||^2``;
- ``combined``: minus the sum of the negative ELBO and the distance, each standardised by its
  median and interquartile range on the validation rows (fitted in ``finish_training`` and
  stored as non-trainable weights, so they are in ``model.keras`` and in the scoring graph);
- ``either``: minus the larger of the same two standardised scores, so a record is as
  anomalous as the more alarmed of the two. The sum lets a score that is uninformative on a
  data set drag the other down (on the adVAE benchmark's letter and optdigits the anomalies
  sit *nearer* the centre than normal records); the maximum ignores a score that is not
  raised.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from detector.nn import losses
from detector.nn.models.vae import VAE
from detector.nn.options import SVDDOptions
from detector.wording import option

#: Centre entries nearer zero than this are pushed to ±CENTRE_EPS (Deep SVDD's guard: a
#: centre at zero is reachable by zeroing the last layer's weights).
CENTRE_EPS = 0.1
#: A latent unit whose posterior mean varies less than this across records carries nothing
#: (Burda et al. 2016's activity threshold on Cov_x E_q[z]); if no unit does, every record sits
#: at the centre: the hypersphere collapse.
ACTIVE_MEAN_VARIANCE = 0.01
#: Rows per encoder call when the centre or radius is computed from the fit rows.
_CHUNK = 65_536


@keras.saving.register_keras_serializable(package="detector")
class VAESVDD(VAE):
    """A VAE over encoded records ``(batch, n_features)`` trained with a Deep SVDD term on the
    encoder means ``(batch, latent_dim)``; see the module docstring."""

    options_class = SVDDOptions
    extra_score_kinds = ("svdd_distance", "combined", "either")
    #: Measured on the adVAE benchmark (seed 0, weight 0.1): elbo averaged AUROC .944 / AP
    #: .804, combined .932 / .741, svdd_distance .639 / .415; over 3 seeds either beat elbo
    #: there (.947 against .941) but lost on the ADBench sets (.933 against .942), README.
    default_score_kind = "elbo"
    #: The total validation loss (negative ELBO + weighted SVDD term), the objective trained,
    #: rather than the negative ELBO the term trades away for compactness. The term switches on
    #: at the end of the last KL warm-up epoch and early stopping starts watching at the next,
    #: so the jump is never compared: every epoch it compares includes the term.
    monitor = "val_loss"

    def __init__(
        self,
        *,
        svdd_weight: float = 0.1,
        svdd_nu: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.svdd_weight = float(svdd_weight)
        self.svdd_nu = None if svdd_nu is None else float(svdd_nu)
        # Non-trainable weights: saved in model.keras, read by the compiled graphs at run time.
        self.centre = keras.Variable(
            np.zeros(self.latent_dim, np.float32), trainable=False, name="svdd_centre"
        )
        # 0 until the centre is set, then 1.
        self.svdd_active = keras.Variable(0.0, trainable=False, name="svdd_active")
        self.radius_sq = keras.Variable(0.0, trainable=False, name="svdd_radius_sq")
        # Median and IQR of (negative ELBO, squared distance) on validation rows.
        self.combined_location = keras.Variable(
            np.zeros(2, np.float32), trainable=False, name="combined_location"
        )
        self.combined_scale = keras.Variable(
            np.ones(2, np.float32), trainable=False, name="combined_scale"
        )
        self.svdd_tracker = keras.metrics.Mean(name="svdd")

    @classmethod
    def options(cls, config: Any) -> dict[str, Any]:
        return {
            **super().options(config),
            "svdd_weight": config.svdd_weight,
            "svdd_nu": config.svdd_nu,
        }

    # ---- the centre and radius ---------------------------------------------------------------

    def encoder_means(self, x: np.ndarray) -> np.ndarray:
        """The posterior means ``(n, latent_dim)`` of encoded rows ``(n, n_features)``."""
        parts = [
            np.asarray(self.encode(x[i : i + _CHUNK])[0]) for i in range(0, max(len(x), 1), _CHUNK)
        ]
        return np.concatenate(parts)

    def distances(self, x: np.ndarray) -> np.ndarray:
        """Squared distances ``(n,)`` of encoded rows' means to the centre."""
        centre = np.asarray(self.centre.numpy())
        return np.sum(np.square(self.encoder_means(x) - centre), axis=1)  # type: ignore[no-any-return]

    def set_centre(self, x: np.ndarray) -> None:
        """Fix the centre at the mean encoder mean of rows ``x`` and switch the term on."""
        centre = self.encoder_means(x).mean(axis=0)
        near_zero = np.abs(centre) < CENTRE_EPS
        centre[near_zero] = np.where(centre[near_zero] < 0, -CENTRE_EPS, CENTRE_EPS)
        self.centre.assign(centre.astype(np.float32))
        self.svdd_active.assign(1.0)

    def update_radius(self, x: np.ndarray) -> None:
        """Soft-boundary only: R^2 = the (1 - nu) quantile of the squared distances of ``x``."""
        if self.svdd_nu is not None:
            self.radius_sq.assign(float(np.quantile(self.distances(x), 1.0 - self.svdd_nu)))

    def training_callbacks(self, fit_x: Any, config: Any) -> list[keras.callbacks.Callback]:
        return [_SVDDSchedule(self, fit_x, warmup_epochs=config.kl_warmup_epochs)]

    def finish_training(self, score: Any, val_x: Any) -> None:
        """Check for hypersphere collapse, then fit the ``combined`` score's median/IQR
        standardisation on the validation rows ``val_x`` ``(n, n_features)``."""
        from detector.errors import TrainingError

        spread = self.encoder_means(val_x).var(axis=0)
        if not np.isfinite(spread).all() or (spread <= ACTIVE_MEAN_VARIANCE).all():
            raise TrainingError(
                "hypersphere collapse: the encoder maps every validation record to (nearly) "
                f"the SVDD centre (variance of the latent means at most {ACTIVE_MEAN_VARIANCE} "
                "in every unit), so svdd_distance and combined cannot tell records apart; lower "
                f"{option('svdd_weight')} (now {self.svdd_weight}), or use "
                f"{option('model', 'vae')} if it also warns "
                "of posterior collapse on this data"
            )
        estimates = score(val_x)
        columns = np.stack([-estimates["elbo"], -estimates["svdd_distance"]], axis=1)
        location = np.median(columns, axis=0)
        # A zero IQR needs (nearly) constant scores, which training's spread check reports for
        # the chosen score; the floor only keeps the division finite.
        scale = np.maximum(np.subtract(*np.quantile(columns, [0.75, 0.25], axis=0)), 1e-12)
        self.combined_location.assign(location.astype(np.float32))
        self.combined_scale.assign(scale.astype(np.float32))

    # ---- scoring -----------------------------------------------------------------------------

    def score_extras(self, x, mean, log_var, z, estimates):  # type: ignore[no-untyped-def]
        distance = losses.squared_distance(mean, self.centre)
        standardised = (
            ops.stack([-estimates["elbo"], distance], axis=1) - self.combined_location
        ) / self.combined_scale
        return [-distance, -ops.sum(standardised, axis=1), -ops.max(standardised, axis=1)]

    # ---- training ----------------------------------------------------------------------------

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [*super().metrics, self.svdd_tracker]

    def _terms(self, x):  # type: ignore[no-untyped-def]
        """``elbo_terms`` plus the squared distance of each mean to the centre, each
        ``(batch,)``: one encoder pass for all three."""
        mean, log_var = self.encode(x)
        eps = keras.random.normal(ops.shape(mean), seed=self.seed_generator)
        z = mean + ops.exp(0.5 * log_var) * eps
        nll = -ops.sum(self.feature_log_likelihood(x, z), axis=-1)
        kl = ops.sum(losses.kl_to_standard_normal(mean, log_var), axis=-1)
        return nll, kl, losses.squared_distance(mean, self.centre)

    def _svdd_loss(self, distance):  # type: ignore[no-untyped-def]
        term = losses.svdd_objective(distance, self.radius_sq, self.svdd_nu)
        return self.svdd_weight * self.svdd_active * term

    def train_step(self, data):  # type: ignore[no-untyped-def]
        x = data[0] if isinstance(data, tuple) else data
        with tf.GradientTape() as tape:
            nll, kl, distance = self._terms(x)
            loss = ops.mean(nll + self.kl_weight * kl) + self._svdd_loss(distance)
        grads = tape.gradient(loss, self.trainable_weights)
        self.optimizer.apply(grads, self.trainable_weights)
        self.svdd_tracker.update_state(ops.mean(distance))
        return self._update_metrics(loss, nll, kl)

    def test_step(self, data):  # type: ignore[no-untyped-def]
        x = data[0] if isinstance(data, tuple) else data
        nll, kl, distance = self._terms(x)
        self.svdd_tracker.update_state(ops.mean(distance))
        # As the VAE: the true negative ELBO (beta = 1), plus the SVDD term once it is on.
        return self._update_metrics(ops.mean(nll + kl) + self._svdd_loss(distance), nll, kl)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "svdd_weight": self.svdd_weight, "svdd_nu": self.svdd_nu}


class _SVDDSchedule(keras.callbacks.Callback):  # type: ignore[misc]
    """Set the centre when the KL warm-up ends (at the start with no warm-up; at the end if
    training stops first), then keep the soft-boundary radius at the fit rows' (1 - nu)
    distance quantile after every epoch."""

    def __init__(self, model: VAESVDD, fit_x: np.ndarray, *, warmup_epochs: int) -> None:
        super().__init__()
        self.svdd = model
        self.fit_x = fit_x
        self.warmup_epochs = warmup_epochs

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.warmup_epochs <= 0:
            self._start()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch + 1 == self.warmup_epochs:
            self._start()
        elif epoch + 1 > self.warmup_epochs:
            self.svdd.update_radius(self.fit_x)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        # Fewer epochs than the warm-up: the distance score still needs a centre.
        if float(self.svdd.svdd_active.numpy()) == 0.0:
            self._start()

    def _start(self) -> None:
        self.svdd.set_centre(self.fit_x)
        self.svdd.update_radius(self.fit_x)
