"""omnivae.pl: figures show what they claim, and behave as scanpy's do (ax=, show=, save=,
return_fig=; nothing left open, no backend switched, colours shared through uns, no UMAP
computed inside a plot)."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

import omnivae
from tests.conftest import ROOT


@pytest.fixture
def cells():
    """90 cells, 3 batches, a random embedding and known UMAP coordinates."""
    sim = omnivae.datasets.simulate(90, modalities=("rna", "adt"), n_batches=3,
                                    missing_fraction=0, seed=0)
    rng = np.random.default_rng(0)
    sim.obsm["X_omnivae"] = rng.normal(size=(sim.n_obs, 4))
    sim.obsm["X_umap"] = rng.normal(size=(sim.n_obs, 2)) * 5
    sim.obs["score"] = rng.normal(size=sim.n_obs)  # numeric: one collection, colour bar
    return sim


@pytest.fixture
def curves():
    return pd.DataFrame({"train_elbo": [3.0, 2.0, 1.5], "validation_elbo": [3.5, 2.5, 2.0],
                         "train_kl": [1.0, 1.2, 1.3]}, index=pd.Index([0.0, 1.0, 2.0], name="epoch"))


@pytest.fixture
def coverage():
    return pd.DataFrame({"nominal": [0.8, 0.9], "raw": [0.6, 0.7], "calibrated": [0.8, 0.9],
                         "calibrated_inclusive": [0.85, 0.93]})


@pytest.fixture
def collapse_history():
    return pd.DataFrame({"validation_kl_rna": [5.0, 9.0], "validation_precision_share_rna":
                         [0.5, 0.6], "validation_active_units": [3.0, 8.0]})


@pytest.fixture
def imputed(cells):
    adt = cells["adt"].X.toarray()
    prediction = cells["adt"].copy()
    prediction.X = adt / adt.sum(1, keepdims=True)  # a perfect prediction: r = 1 per panel
    cells.mod["adt_imputed"] = prediction
    return cells


def calls(cells, curves, coverage, collapse_history, imputed):
    """One call per public plot (except modality_share, which needs a trained model)."""
    feature = str(imputed["adt"].var_names[0])
    return {
        "latent_umap": lambda **kw: omnivae.pl.latent_umap(cells, color="batch", **kw),
        "history": lambda **kw: omnivae.pl.history(curves, columns=["train_elbo"], **kw),
        "calibration": lambda **kw: omnivae.pl.calibration(coverage, **kw),
        "diagnostics": lambda **kw: omnivae.pl.diagnostics(
            collapse_history[["validation_kl_rna"]], **kw),
        "predicted_vs_observed": lambda **kw: omnivae.pl.predicted_vs_observed(
            imputed, modality="adt", features=[feature], **kw),
        "plot_umap": lambda **kw: omnivae.pl.plot_umap(
            cells.obsm["X_umap"], {"batch": cells.obs["batch"]}, **kw),
        "plot_history": lambda **kw: omnivae.pl.plot_history(curves, columns=["train_elbo"],
                                                             **kw),
    }


@pytest.fixture
def plots(cells, curves, coverage, collapse_history, imputed):
    return calls(cells, curves, coverage, collapse_history, imputed)


NAMES = ["latent_umap", "history", "calibration", "diagnostics", "predicted_vs_observed",
         "plot_umap", "plot_history"]


@pytest.mark.parametrize("name", NAMES)
def test_each_plot_draws_into_the_given_axes_and_leaves_that_figure_alone(plots, name):
    fig, (left, right) = plt.subplots(1, 2)
    before = plt.get_fignums()
    result = plots[name](ax=right)
    assert result is right
    assert plt.get_fignums() == before  # no figure of its own, the caller's left open
    assert right.collections or right.lines  # the artists landed there...
    assert not left.collections and not left.lines  # ...and nowhere else
    assert right.figure is fig


@pytest.mark.parametrize("name", NAMES)
def test_by_default_a_plot_shows_nothing_in_a_script_and_closes_its_figure(plots, name):
    before = plt.get_fignums()
    assert plots[name]() is None
    assert plt.get_fignums() == before


@pytest.mark.parametrize("name", NAMES)
def test_return_fig_returns_the_open_figure(plots, name):
    fig = plots[name](return_fig=True)
    assert isinstance(fig, Figure) and plt.fignum_exists(fig.number)
    assert fig.axes[0].collections or fig.axes[0].lines


@pytest.mark.parametrize("name", NAMES)
def test_show_false_returns_the_axes_as_scanpy_and_with_save_closes(plots, name, tmp_path):
    ax = plots[name](show=False)
    assert ax.figure in [plt.figure(n) for n in plt.get_fignums()]  # the caller's to edit
    plt.close(ax.figure)
    before = plt.get_fignums()
    ax = plots[name](show=False, save=tmp_path / "p.png")
    assert plt.get_fignums() == before and ax.get_title() is not None
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", NAMES)
def test_no_plot_switches_the_backend(plots, name, tmp_path):
    backend = matplotlib.get_backend()
    plots[name](save=tmp_path / "p.png")
    plots[name](show=True)  # non-interactive backend: nothing to show, nothing left open
    assert matplotlib.get_backend() == backend


def test_no_library_code_calls_matplotlib_use():
    offenders = [str(p.relative_to(ROOT)) for folder in ("src", "benchmarks", "tutorials")
                 for p in (ROOT / folder).rglob("*.py") if "matplotlib.use(" in p.read_text()]
    assert offenders == []


def test_in_a_notebook_a_plot_is_shown_once_and_not_returned(plots, monkeypatch):
    """Jupyter: matplotlib is interactive and the inline backend's show() displays and closes
    every open figure; the plot must call it once and return nothing for Jupyter to show
    again."""
    from omnivae.pl import _utils

    shown: list[int] = []

    def inline_show():
        shown.extend(plt.get_fignums())
        plt.close("all")

    monkeypatch.setattr(matplotlib, "is_interactive", lambda: True)
    monkeypatch.setattr(_utils, "_can_show", lambda: True)
    monkeypatch.setattr(plt, "show", inline_show)
    for name in NAMES:
        assert plots[name]() is None, name
    assert len(shown) == len(NAMES) and plt.get_fignums() == []
    assert plots["history"](show=False) is not None and len(shown) == len(NAMES)  # not shown


def test_save_writes_atomically_and_keeps_the_old_file_when_saving_fails(plots, tmp_path,
                                                                         monkeypatch):
    target = tmp_path / "figs" / "history.png"
    assert omnivae.pl.history.__name__ == "history"
    plots["history"](save=target)
    first = target.read_bytes()
    assert first[:8] == b"\x89PNG\r\n\x1a\n"

    def broken(self, fname, **kwargs):
        with open(fname, "wb") as handle:
            handle.write(b"half a PNG")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        plots["history"](save=target)
    assert target.read_bytes() == first  # the reader never sees half a file
    assert [p.name for p in target.parent.iterdir()] == ["history.png"]  # no temporary left
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"suffix must name a format.*\.png"):
        plots["history"](save=tmp_path / "history")
    pdf = plots["history"](save=tmp_path / "h.pdf", return_fig=True)
    assert (tmp_path / "h.pdf").read_bytes()[:4] == b"%PDF" and isinstance(pdf, Figure)


def test_path_still_saves_with_a_deprecation_warning(plots, tmp_path):
    with pytest.warns(DeprecationWarning, match=r"history\(path=\.\.\.\) is deprecated.*save="):
        fig = plots["history"](path=tmp_path / "old.png")
    assert isinstance(fig, Figure) and (tmp_path / "old.png").stat().st_size > 0  # as before
    with pytest.raises(TypeError, match="give save= only"):
        plots["history"](path=tmp_path / "a.png", save=tmp_path / "b.png")


def test_multi_panel_plots_take_one_axes_per_panel(curves, cells):
    _, axes = plt.subplots(1, 2)
    result = omnivae.pl.history(curves, ax=axes)
    assert result == list(axes)
    assert [ax.get_title() for ax in axes] == ["elbo", "kl"]
    with pytest.raises(ValueError, match="history draws 2 panels, so ax= must be a list of 2"):
        omnivae.pl.history(curves, ax=axes[0])
    with pytest.raises(ValueError, match="latent_umap draws 1 panel, so ax= must be one Axes"):
        omnivae.pl.latent_umap(cells, color="batch", ax=list(axes))
    with pytest.raises(TypeError, match="ax= must be a matplotlib Axes"):
        omnivae.pl.latent_umap(cells, color="batch", ax="left")


def test_history_plots_each_quantity_and_saves(tmp_path):
    sim = omnivae.datasets.simulate(120, modalities=("rna", "adt"), n_batches=2, seed=0)
    model = omnivae.Model(sim, batch_key="batch", n_latent=3)
    model.train(max_epochs=3, progress_bar=False, batch_probe_every=1)
    fig = omnivae.pl.history(model, save=tmp_path / "history.png", return_fig=True)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:2] == ["elbo", "kl"] and any(t.startswith("mi_batch") for t in titles)
    elbo_lines = {line.get_label() for line in fig.axes[0].get_lines()}
    assert elbo_lines == {"train_elbo", "validation_elbo"}
    assert len(fig.axes[0].get_lines()[0].get_xdata()) == len(model.history) == 3
    assert (tmp_path / "history.png").stat().st_size > 5_000
    with pytest.raises(ValueError, match="train the model first"):
        omnivae.pl.history(pd.DataFrame())


def test_latent_umap_draws_the_existing_x_umap_without_computing_one(cells, monkeypatch):
    import scanpy as sc

    def forbidden(*args, **kwargs):
        raise AssertionError("a plot computed neighbours or a UMAP")

    monkeypatch.setattr(sc.pp, "neighbors", forbidden)
    monkeypatch.setattr(sc.tl, "umap", forbidden)
    monkeypatch.setattr(omnivae.metrics, "neighbors_graph", forbidden)
    ax = omnivae.pl.latent_umap(cells, color="score", show=False)  # numeric: one scatter
    np.testing.assert_allclose(ax.collections[0].get_offsets(), cells.obsm["X_umap"])
    batch_ax = omnivae.pl.latent_umap(cells, color="batch", show=False)
    batches = cells.obs["batch"].astype(str).to_numpy()
    for points in batch_ax.collections:
        np.testing.assert_allclose(points.get_offsets(),
                                   cells.obsm["X_umap"][batches == points.get_label()])
    cells.obsm["X_other"] = -cells.obsm["X_umap"]
    ax = omnivae.pl.latent_umap(cells, color="score", basis="X_other", show=False)
    np.testing.assert_allclose(ax.collections[0].get_offsets(), cells.obsm["X_other"])
    del cells.obsm["X_umap"]
    with pytest.raises(KeyError, match=r"no 'X_umap'.*computes no UMAP.*omnivae\.tl\.umap"):
        omnivae.pl.latent_umap(cells)
    with pytest.raises(TypeError, match=r"no longer computes the UMAP.*omnivae\.tl\.umap"):
        omnivae.pl.latent_umap(cells, use_rep="X_omnivae", n_neighbors=10)


def test_tl_umap_writes_x_umap_reproducibly_and_leaves_a_scanpy_graph_alone(cells):
    import scanpy as sc

    del cells.obsm["X_umap"]
    sc.pp.neighbors(cells, use_rep="X_omnivae", n_neighbors=5)
    graph = cells.obsp["connectivities"].copy()
    omnivae.tl.umap(cells, n_neighbors=10, seed=3)
    first = cells.obsm["X_umap"].copy()
    assert first.shape == (cells.n_obs, 2)
    assert cells.uns["X_umap"]["params"] == {"use_rep": "X_omnivae", "n_neighbors": 10,
                                             "seed": 3}
    assert (cells.obsp["connectivities"] != graph).nnz == 0
    again = omnivae.tl.umap(cells, n_neighbors=10, seed=3, copy=True)
    np.testing.assert_array_equal(again.obsm["X_umap"], first)
    # the UMAP separates what the embedding separates: two far groups stay apart
    cells.obsm["X_omnivae"][:45] += 50
    omnivae.tl.umap(cells, key_added="X_far")
    xy = cells.obsm["X_far"]
    gap = np.linalg.norm(xy[:45].mean(0) - xy[45:].mean(0))
    assert gap > 3 * max(xy[:45].std(0).max(), xy[45:].std(0).max())
    with pytest.raises(KeyError, match=r"no 'X_missing'.*tl\.integrate"):
        omnivae.tl.umap(cells, use_rep="X_missing")


def test_latent_umap_colours_come_from_uns_and_are_stored_there(cells):
    import scanpy as sc

    def colours(ax):
        return {c.get_label(): tuple(c.get_facecolors()[0]) for c in ax.collections}

    cells.uns["batch_colors"] = ["#ff0000", "#00ff00", "#0000ff", "#000000"]  # one extra: ok
    ax = omnivae.pl.latent_umap(cells, color="batch", show=False)
    assert colours(ax) == {"batch-0": to_rgba("#ff0000"), "batch-1": to_rgba("#00ff00"),
                           "batch-2": to_rgba("#0000ff")}
    assert list(cells.uns["batch_colors"]) == ["#ff0000", "#00ff00", "#0000ff", "#000000"]
    cells.uns["batch_colors"] = ["#ff0000"]  # too few: omnivae picks and stores its own
    ax = omnivae.pl.latent_umap(cells, color="batch", show=False)
    stored = list(cells.uns["batch_colors"])
    assert len(stored) == 3 and "#ff0000" not in stored
    assert colours(ax) == {f"batch-{i}": to_rgba(c) for i, c in enumerate(stored)}
    # a categorical column keeps its own category order, as scanpy does
    cells.obs["kind"] = pd.Categorical(np.where(np.arange(cells.n_obs) % 2, "odd", "even"),
                                       categories=["odd", "even"])
    ax = omnivae.pl.latent_umap(cells, color="kind", show=False)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["odd", "even"]
    # scanpy draws the same column in the colours omnivae stored
    ours = colours(ax)
    sc_ax = sc.pl.embedding(cells, basis="X_umap", color="kind", show=False)
    sc_faces = {tuple(np.round(f, 6)) for f in sc_ax.collections[0].get_facecolors()}
    assert sc_faces == {tuple(np.round(c, 6)) for c in ours.values()}


def test_latent_umap_legends_many_cell_types_with_distinct_colours(cells):
    sim = omnivae.datasets.simulate(300, modalities=("rna",), seed=0)
    sim.obs["fine"] = [f"type {i % 41:02d}" for i in range(sim.n_obs)]  # like the CITE starter
    sim.obs["many"] = [f"c{i % 70}" for i in range(sim.n_obs)]
    sim.obsm["X_umap"] = np.random.default_rng(0).normal(size=(sim.n_obs, 2))
    fig = omnivae.pl.latent_umap(sim, color=["fine", "many"], return_fig=True)
    fine_ax, many_ax = fig.axes
    legend = fine_ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == sorted(set(sim.obs["fine"]))
    colours = {tuple(np.round(c.get_facecolors()[0], 4)) for c in fine_ax.collections}
    assert len(colours) == 41  # no colour shared by two cell types
    assert len(set(sim.uns["fine_colors"])) == 41
    assert many_ax.get_legend() is None  # 70 names: written on the data instead
    assert len(many_ax.texts) == 70


def test_predicted_vs_observed_shows_pearson_per_feature(imputed):
    adt = imputed["adt"].X.toarray()
    proportions = adt / adt.sum(1, keepdims=True)
    features = list(imputed["adt"].var_names[:4])
    fig = omnivae.pl.predicted_vs_observed(imputed, modality="adt", features=features,
                                           return_fig=True)
    assert [ax.get_title() for ax in fig.axes] == [f"{f} (r = 1.00)" for f in features]
    np.testing.assert_allclose(fig.axes[0].collections[0].get_offsets()[:, 0], proportions[:, 0])
    with pytest.raises(KeyError, match=r"tl\.predict"):
        omnivae.pl.predicted_vs_observed(imputed, modality="rna")


def test_modality_share_per_group(tmp_path):
    from omnivae.model.diagnostics import modality_shares

    sim = omnivae.datasets.simulate(150, modalities=("rna", "adt"), seed=0)
    model = omnivae.Model(sim, n_latent=3)
    model.train(max_epochs=2, progress_bar=False)
    shares = modality_shares(model.module, model.cells, sim.obs_names)
    np.testing.assert_allclose(shares.sum(axis=1), 1.0, atol=1e-5)
    adt_rows = ~sim.obs_names.isin(sim["adt"].obs_names)  # cells without protein hold none
    assert adt_rows.any() and (shares.loc[adt_rows, "adt"] == 0).all()
    before = plt.get_fignums()
    assert omnivae.pl.modality_share(sim, model, groupby="cell_type",
                                     save=tmp_path / "plots" / "share.png") is None
    assert plt.get_fignums() == before
    assert (tmp_path / "plots" / "share.png").stat().st_size > 0
    _, (left, right) = plt.subplots(1, 2)
    ax = omnivae.pl.modality_share(sim, model, groupby="cell_type", ax=right)
    n_groups = sim.obs["cell_type"].nunique()
    assert ax is right and len(right.patches) == 3 * n_groups  # rna, adt, prior per group
    assert not left.patches
    complete = sim[sim.obs_names.isin(sim["adt"].obs_names)
                   & sim.obs_names.isin(sim["rna"].obs_names)].copy()
    with pytest.raises(ValueError, match="no encoder per modality"):
        early = omnivae.Model(complete, model="early", n_latent=3)
        modality_shares(early.module, early.cells, complete.obs_names)
