"""The detector models by the name ``anomaly train --model`` takes.

Every model is a ``VAE`` subclass, so all share one scoring graph, calibration and bundle
format; a model registers itself here by name.
"""

from __future__ import annotations

from detector.nn.models.advae import AdVAE
from detector.nn.models.conv import ConvVAE
from detector.nn.models.cvae import ConditionalVAE
from detector.nn.models.fae import FAE
from detector.nn.models.iwae import IWAE
from detector.nn.models.lsvae import LSVAE
from detector.nn.models.svdd import VAESVDD
from detector.nn.models.vae import VAE

MODELS: dict[str, type[VAE]] = {
    "vae": VAE,
    "advae": AdVAE,
    "cvae": ConditionalVAE,
    "vae-svdd": VAESVDD,
    "iwae": IWAE,
    "lsvae": LSVAE,
    "fae": FAE,
    "conv-vae": ConvVAE,
}


def model_class(name: str) -> type[VAE]:
    from detector.errors import ConfigError

    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None
