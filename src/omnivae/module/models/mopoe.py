"""MoPoE-VAE: a mixture over the products of experts of every subset of modalities.

Sutter, Daunhawer & Vogt (2021), "Generalized Multimodal ELBO", ICLR.

With ``P(O)`` the non-empty subsets of a cell's observed modalities ``O`` and
``q_S = p(z) Π_{m ∈ S} q~_m`` (see :mod:`omnivae.module.fusion`), the posterior is
``q(z | X_O) = (1/|P(O)|) Σ_S q_S`` and the objective maximised is::

    L(X_O) = (1/|P(O)|) Σ_{S ∈ P(O)} ( E_{q_S}[ Σ_{m ∈ O} log p(x_m | z) ] - β KL(q_S || p) )

(every subset sampled once: stratified sampling of the mixture; the mixture's KL bounded by
the mean of its components' KLs, as in the paper's implementation). Missing modalities drop
out of ``O``. This is :class:`~omnivae.module.models.elbo.MixtureELBO` with its fusion fixed.
"""

from __future__ import annotations

from omnivae.module.models.elbo import MixtureELBO


class MoPoE(MixtureELBO):
    """MoPoE-VAE objective (see module docstring)."""

    name = "mopoe"
    fusions = ("mopoe",)
