"""Classifier two-sample test (C2ST) of omnivae's synthetic cells against real cells.

Usage::

    python benchmarks/run.py --study synthetic_cells [--epochs N] [--seed 0]

For each NeurIPS 2021 starter, the default model is trained on all cells, then as many cells
as the data has are generated three ways, every modality at once:

* ``aggregated posterior`` — :meth:`omnivae.Model.sample` (a Gaussian mixture per cell type
  fitted to the posterior draws of the training cells; cell types and batches drawn at their
  real frequencies);
* ``prior`` — the same decoders fed z ~ N(0, I) (what sampling a VAE naively gives);
* ``reconstruction`` — each real cell's own posterior draw decoded at its own batch and depth
  (the floor set by the decoders' noise model: no sampler of z can do better).

Each set is compared with the real cells by a C2ST: cells are represented by 20 principal
components per modality of log-normalised counts (PCA fitted on the real cells), and a
logistic regression and a 5-nearest-neighbour classifier are scored by 5-fold cross-validated
accuracy at telling real from synthetic (0.5: indistinguishable). ``type_accuracy``: a
nearest-neighbour cell-type classifier trained on the real cells labels the synthetic cells;
the fraction that get the cell type they were generated for (for real cells: cross-validated).

Writes ``benchmarks/results/synthetic_cells.md`` and ``synthetic_cells.png``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: suite, studies

import omnivae
from omnivae.data.setup import obs_column
from omnivae.model.synthetic import (
    LatentDensity,
    fit_latent_density,
    group_labels,
    sample_cells,
)
from suite.report import markdown_table

RESULTS = Path(__file__).resolve().parents[1] / "results"
DATASETS = ("neurips2021_bmmc_cite_starter", "neurips2021_bmmc_multiome_starter")


class PriorDraws:
    """Stands in for a group's mixture: z ~ N(0, I)."""

    def __init__(self, n_latent: int, seed: int) -> None:
        self.n_latent, self.random_state = n_latent, seed

    def sample(self, k: int):
        rng = np.random.default_rng(self.random_state)
        return rng.standard_normal((k, self.n_latent)).astype(np.float32), None


def log_norm(x) -> np.ndarray:
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    return np.log1p(x / np.maximum(x.sum(1, keepdims=True), 1) * 1e4)


def featurize(real, others: list, modalities) -> tuple[np.ndarray, list[np.ndarray]]:
    blocks_real, blocks_other = [], [[] for _ in others]
    for m in modalities:
        pca = PCA(20, random_state=0).fit(log_norm(real[m].X))
        blocks_real.append(pca.transform(log_norm(real[m].X)))
        for i, other in enumerate(others):
            blocks_other[i].append(pca.transform(log_norm(other[m].X)))
    return np.hstack(blocks_real), [np.hstack(b) for b in blocks_other]


def c2st(real: np.ndarray, fake: np.ndarray, seed: int) -> dict[str, float]:
    x = np.vstack([real, fake])
    y = np.r_[np.zeros(len(real)), np.ones(len(fake))]
    out = {}
    for name, clf in (("c2st_logistic", LogisticRegression(max_iter=3000)),
                      ("c2st_knn", KNeighborsClassifier(5))):
        pipe = make_pipeline(StandardScaler(), clf)
        out[name] = float(cross_val_score(pipe, x, y, cv=5).mean())
    return out


@torch.no_grad()
def reconstructions(model, seed: int):
    """Each real cell's posterior draw decoded at its own batch and depth (cells with every
    modality only)."""
    data = model.cells
    rows = np.flatnonzero(data.mask.all(axis=1))
    batch = data.batch(rows)
    z = model.module.posterior(batch).sample(torch.Generator().manual_seed(seed))
    out = {}
    for name in model.setup.modalities:
        dist = model.module.decoder(name)(z, batch.batch_index, batch.library[name])
        out[name] = dist.sample(torch.Generator().manual_seed(seed))
    import anndata as ad
    import mudata as md

    return md.MuData({m: ad.AnnData(X=sp.csr_matrix(v.numpy())) for m, v in out.items()})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    rows, figures = [], []
    for name in DATASETS:
        mdata = omnivae.datasets.load(name)
        model = omnivae.Model(mdata, batch_key="batch", seed=args.seed)
        model.train(max_epochs=args.epochs, progress_bar=False)
        n = mdata.n_obs
        labels = obs_column(mdata, "cell_type").astype(str).to_numpy()
        posterior_fake = model.sample(n, seed=args.seed)
        density = fit_latent_density(model.module, model.cells,
                                     group_labels(mdata, "cell_type", n), seed=args.seed)
        prior_density = LatentDensity(
            "cell_type", {g: PriorDraws(model.config.n_latent, args.seed) for g in density.mixtures},
            density.cells)
        prior_fake = sample_cells(model.module, model.cells, model.setup, n, prior_density,
                                  seed=args.seed)
        recon = reconstructions(model, args.seed)
        modalities = list(model.setup.modalities)
        real_x, (post_x, prior_x, recon_x) = featurize(mdata, [posterior_fake, prior_fake, recon],
                                                       modalities)
        typer = make_pipeline(StandardScaler(), KNeighborsClassifier(15)).fit(real_x, labels)
        real_type = float((cross_val_predict(
            make_pipeline(StandardScaler(), KNeighborsClassifier(15)), real_x, labels, cv=5)
            == labels).mean())
        short = name.split("_")[2]
        for kind, x, fake in (("aggregated posterior", post_x, posterior_fake),
                              ("prior N(0, I)", prior_x, prior_fake),
                              ("reconstruction", recon_x, None)):
            row = {"dataset": short, "sampler": kind, "n_real": n, "n_synthetic": len(x),
                   **c2st(real_x, x, args.seed)}
            if fake is not None:
                asked = fake.obs["cell_type"].astype(str).to_numpy()
                row["type_accuracy"] = float((typer.predict(x) == asked).mean())
            else:
                row["type_accuracy"] = real_type
            rows.append(row)
            print(row, flush=True)
        figures.append((short, real_x, post_x, prior_x))
    plot(figures, RESULTS / "synthetic_cells.png")
    text = ["# Synthetic cells: classifier two-sample test "
            "(benchmarks/run.py --study synthetic_cells)", "",
            __doc__.split("Usage::")[1].split("Writes")[0].split("\n\n", 2)[2].strip(), "",
            markdown_table(rows), "",
            "`type_accuracy` of the reconstruction row: the cross-validated accuracy of the "
            "same cell-type classifier on the real cells (the ceiling).", "",
            "![synthetic](synthetic_cells.png)"]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "synthetic_cells.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


def plot(figures, path: Path) -> None:
    import matplotlib.pyplot as plt

    from suite.report import save_figure

    fig, axes = plt.subplots(1, len(figures), figsize=(5 * len(figures), 4.2), squeeze=False)
    for ax, (short, real, post, prior) in zip(axes[0], figures, strict=True):
        pca = PCA(2, random_state=0).fit(StandardScaler().fit_transform(real))
        scaler = StandardScaler().fit(real)
        for x, label, color in ((real, "real", "black"), (post, "aggregated posterior", "tab:blue"),
                                (prior, "prior N(0, I)", "tab:red")):
            p = pca.transform(scaler.transform(x))
            ax.scatter(p[:, 0], p[:, 1], s=4, alpha=0.5, color=color, label=label)
        ax.set_title(f"{short}: first two PCs of the real cells' features", fontsize=9)
        ax.legend(fontsize=7, markerscale=3, frameon=False)
    save_figure(fig, path)


if __name__ == "__main__":
    main()
