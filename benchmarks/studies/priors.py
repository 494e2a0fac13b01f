"""KL cost and cell-type structure of the latent under the three priors (normal, mog, vamp).

Usage::

    python benchmarks/run.py --study priors [--dataset neurips2021_bmmc_cite_starter] \\
        [--seeds 0 1 ...]

Trains the default model (batch-conditioned decoders, mopoe fusion) with each prior and
seed on all cells, then measures on every cell:

* ``kl``: KL(q(z | x) || p(z)) per cell in nats (exact for the normal prior; for the
  mixtures the mean of 20 one-sample Monte Carlo estimates per cell), averaged over the
  fusion's components exactly as in the ELBO;
* ``nll``: the reconstruction term (negative log-likelihood of every modality, per cell) at
  one posterior draw; ``elbo`` = nll + kl (lower is better);
* ``knn_type_acc``: 5-fold cross-validated 15-nearest-neighbour accuracy of the cell type from
  the posterior means (how separated the cell types are), and Leiden ``ari``/``nmi`` against
  the cell types (scib-style best resolution, 3 Leiden seeds averaged).

Writes ``benchmarks/results/priors.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: suite, studies

import omnivae
from omnivae import metrics
from omnivae.data.setup import obs_column
from omnivae.module.records import Gaussian
from suite.report import markdown_table

RESULTS = Path(__file__).resolve().parents[1] / "results"


@torch.no_grad()
def kl_and_nll(model, n_draws: int = 20) -> tuple[float, float]:
    data, module = model.cells, model.module
    batch = data.batch(np.arange(data.n_cells))
    record = module.loss(batch)  # nll + kl at one draw, fusion components weighted
    mixture = module.posterior(batch)
    q = mixture.components
    kl = torch.stack([module.prior.kl(Gaussian(q.loc, q.logvar), q.rsample())
                      for _ in range(n_draws)]).mean(0)
    kl_cell = (mixture.weights * kl).sum(0).mean()
    return float(kl_cell), float(record.elbo - record.kl)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="neurips2021_bmmc_cite_starter")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    mdata = omnivae.datasets.load(args.dataset)
    labels = obs_column(mdata, "cell_type").astype(str).to_numpy()
    rows = []
    for seed in args.seeds:
        for prior in ("normal", "mog", "vamp"):
            start = time.perf_counter()
            model = omnivae.Model(mdata, batch_key="batch", prior=prior, seed=seed)
            model.train(max_epochs=args.epochs, progress_bar=False)
            seconds = time.perf_counter() - start
            kl, nll = kl_and_nll(model)
            z = model.get_latent_representation()
            acc = cross_val_score(KNeighborsClassifier(15), z, labels, cv=5).mean()
            agreement = metrics.leiden_agreement(z, labels, n_repeats=3)
            rows.append({"prior": prior, "seed": seed, "kl": kl, "nll": nll, "elbo": kl + nll,
                         "knn_type_acc": float(acc), "ari": agreement["ari"],
                         "nmi": agreement["nmi"],
                         "active_units": int(model.diagnostics(warn=False)
                                             .loc["joint", "active_units"]),
                         "train_s": seconds})
            print(rows[-1], flush=True)
            write_report(rows, args.dataset, mdata.n_obs, len(set(labels)))


def write_report(rows: list[dict], dataset: str, n_cells: int, n_types: int) -> None:
    """Write ``priors.md`` from the runs so far (called after every run)."""
    table = pd.DataFrame(rows)
    seeds = sorted(set(table["seed"]))
    mean = table.drop(columns="seed").groupby("prior", sort=False).mean().reset_index()
    normal_kl = table[table.prior == "normal"].set_index("seed")["kl"]
    ratio = [{"prior": p, "kl_vs_normal_per_seed": ", ".join(
        f"{row.kl / normal_kl[row.seed]:.2f}" for row in table[table.prior == p].itertuples()
        if row.seed in normal_kl.index)} for p in ("mog", "vamp") if (table.prior == p).any()]
    text = [f"# Priors on {dataset} (benchmarks/run.py --study priors)", "",
            __doc__.split("Usage::")[1].split("Writes")[0].split("\n\n", 2)[2].strip(), "",
            f"{n_cells} cells, {n_types} cell types, seeds {seeds}; "
            "50 mixture components / pseudo-cells. `train_s` is wall time on a shared machine "
            "(2 cores, often many other jobs): not a speed comparison.", "",
            "## Mean over seeds", "", markdown_table(mean.to_dict(orient="records")), "",
            "## KL relative to the normal prior, per seed", "",
            markdown_table(ratio) if ratio else "(no learned prior run yet)", "",
            "## Every run", "", markdown_table(rows)]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "priors.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
