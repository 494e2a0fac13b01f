"""Posterior-collapse diagnostics of the default model on the shared paired datasets.

Usage::

    python benchmarks/run.py --study collapse_diagnostics [--epochs N]

Trains the default model on each NeurIPS 2021 starter (all cells, batch-conditioned decoders)
and reports :meth:`omnivae.Model.diagnostics` (per-modality KL of the unimodal posteriors,
active units, each modality's share of the product-of-experts precision, the decoders' use of
z) with the curves logged during training. Writes
``benchmarks/results/collapse_diagnostics.md`` and one PNG per dataset.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: suite, studies

import omnivae
from omnivae.pl import plot_diagnostics
from suite.report import markdown_table

RESULTS = Path(__file__).resolve().parents[1] / "results"
DATASETS = ("neurips2021_bmmc_cite_starter", "neurips2021_bmmc_multiome_starter")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args(argv)
    text = ["# Posterior-collapse diagnostics "
            "(benchmarks/run.py --study collapse_diagnostics)", "",
            "`kl`: KL of each modality's unimodal posterior to the prior (joint row: the fused "
            "posterior), nats per cell; `active_units`: latent units with Cov_x(E[z_u]) > 0.01 "
            "(of 20); `precision_share`: the modality's share of the product-of-experts "
            "precision in cells with every modality (joint row: the prior expert's share); "
            "`decoder_gain`: relative rise of the decoder's negative log-likelihood when z is "
            "shuffled across cells (0: the decoder ignores z). Warnings fire below a decoder "
            "gain of 0.5 % or a precision share of 2 %.", ""]
    for name in DATASETS:
        mdata = omnivae.datasets.load(name)
        model = omnivae.Model(mdata, batch_key="batch", seed=0)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="mudata")
            model.train(max_epochs=args.epochs, progress_bar=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            table = model.diagnostics()
        collapse = [str(w.message) for w in caught if "Collapse" in type(w.message).__name__]
        short = name.split("_")[2]
        png = f"collapse_diagnostics_{short}.png"
        plot_diagnostics(model.history, save=RESULTS / png, show=False)
        rows = table.reset_index().to_dict(orient="records")
        text += [f"## {name} ({mdata.n_obs} cells, {len(model.history)} epochs)", "",
                 markdown_table(rows), "",
                 "Warnings: " + ("; ".join(collapse) if collapse else "none") + ".", "",
                 f"![{short}]({png})", ""]
        print(table, flush=True)
    (RESULTS / "collapse_diagnostics.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
