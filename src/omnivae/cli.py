"""Command line: ``omnivae fit`` trains on an .h5mu file, ``omnivae map`` maps new cells onto a
saved model (reference mapping), ``omnivae demo`` runs the bundled demo."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from omnivae.module.fusion import FUSIONS
from omnivae.module.likelihoods import LIKELIHOOD_NAMES
from omnivae.module.models import MODELS
from omnivae.module.models.elbo import MIXTURE_SAMPLINGS
from omnivae.module.penalties import PENALTIES

if TYPE_CHECKING:
    from omnivae.train.interrupts import TrainingInterrupted, TrainingTerminated

# what stopped a training run early (Ctrl-C or SIGTERM); imported lazily, like all of omnivae
Stopped = Union["TrainingInterrupted", "TrainingTerminated"]


def _likelihood_pairs(values: Sequence[str]) -> dict[str, str]:
    pairs = {}
    for item in values:
        name, sep, lik = item.partition("=")
        if not sep or not name or lik not in LIKELIHOOD_NAMES:
            raise argparse.ArgumentTypeError(
                f"--likelihood expects MODALITY=NAME with NAME in {', '.join(LIKELIHOOD_NAMES)}; "
                f"got {item!r}."
            )
        pairs[name] = lik
    return pairs


def _add_training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-latent", type=int, default=20, help="Size of the joint latent space (default 20).")
    p.add_argument("--max-epochs", type=int, default=None,
                   help="Training epochs (default: chosen from the number of cells, with early stopping).")
    p.add_argument("--batch-size", type=int, default=256, help="Minibatch size (default 256).")
    p.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "gpu", "cuda", "mps"],
                   help="Where to train (default auto: a GPU when there is one).")
    p.add_argument("--seed", type=int, default=0, help="Random seed (default 0).")
    p.add_argument("--no-progress", action="store_true", help="Hide the training progress bar.")


def _add_file_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="Replace an existing OUTPUT file and --save-model folder (only one "
                        "that omnivae wrote: a folder holding anything else is refused).")
    p.add_argument("--save-on-interrupt", action="store_true",
                   help="After Ctrl-C or SIGTERM, still write the outputs from the weights "
                        "trained so far (uns['omnivae_interrupted'] records it); the exit "
                        "status stays 130 / 143. Default: write nothing.")


def build_parser() -> argparse.ArgumentParser:
    """The ``omnivae`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="omnivae",
        description="Integrate single-cell multi-omics (RNA, ATAC, protein, ...) with a "
                    "multimodal VAE and write the joint embedding and predictions into MuData.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    fit = sub.add_parser(
        "fit", help="Train on an .h5mu file and write the embedding, clusters and predictions.",
        description="Train omnivae on IN.h5mu (raw counts per modality; cells may lack "
                    "modalities) and write OUT.h5mu with obsm['X_omnivae'], obs['omnivae_leiden'] "
                    "and one '<modality>_imputed' modality per modality, covering every cell.",
    )
    fit.add_argument("input", type=Path,
                     help="Input file with raw counts (never changed): .h5mu, .h5ad (RNA in X, "
                          "or a 10x multi-feature AnnData) or a 10x .h5.")
    fit.add_argument("-o", "--output", type=Path, required=True,
                     help="Output .h5mu file (written atomically; an existing file only with "
                          "--overwrite, never the input).")
    fit.add_argument("--protein-key", default=None,
                     help="For an .h5ad input: obsm key of protein counts (e.g. "
                          "protein_expression), used as modality 'adt'.")
    fit.add_argument("--modalities", nargs="+", default=None,
                     help="Modalities to use (default: every modality in the file).")
    fit.add_argument("--batch-key", default=None,
                     help="Batch column in obs (of the MuData or a modality); default: no batch.")
    fit.add_argument("--layer", default=None, help="Layer holding raw counts (default: X).")
    fit.add_argument("--likelihood", nargs="+", default=[], metavar="MODALITY=NAME",
                     help=f"Override a modality's likelihood; NAME in {', '.join(LIKELIHOOD_NAMES)}.")
    fit.add_argument("--model", default=None, choices=MODELS,
                     help="Which multimodal VAE to train (default mopoe); see docs/models.md.")
    fit.add_argument("--fusion", default=None, choices=FUSIONS,
                     help="How modality posteriors are combined: product of experts (poe), "
                          "mixture (moe) or mixture of products (mopoe, the default). With "
                          "--model it must match the model's own aggregation.")
    fit.add_argument("--mixture-sampling", default=None, choices=MIXTURE_SAMPLINGS,
                     help="Training estimator of a mixture objective (mopoe, elbo): decode "
                          "every component of every cell (stratified) or one component drawn "
                          "per cell (one: same objective in expectation, fewer decodings). "
                          "Default: the model's (see omnivae.Model).")
    fit.add_argument("--batch-penalty", default="auto", choices=("auto", "none", *PENALTIES),
                     help="Penalise the mutual information between the latent and the batch "
                          "(HSIC, multi-scale MMD, adversarial classifier, pairwise-KL bound); "
                          "default auto: MMD when --batch-key has two or more batches; none: "
                          "batch-conditioned decoders only.")
    fit.add_argument("--penalty-weight", type=float, default=None,
                     help="Weight of the batch penalty (default: per estimator).")
    fit.add_argument("--penalty-keys", nargs="+", default=None,
                     help="Batch columns the latent must not depend on (default: --batch-key).")
    fit.add_argument("--penalty-label-key", default=None,
                     help="Compute the penalty within groups of this label column (e.g. "
                          "cell_type), so biology that differs between batches is kept.")
    fit.add_argument("--no-impute", action="store_true", help="Do not write predicted modalities.")
    fit.add_argument("--backed", action="store_true",
                     help="Keep the counts on disk (data larger than memory): validate and train "
                          "from chunked reads of INPUT, and write the embedding and predicted "
                          "modalities chunk by chunk (no clustering). With --no-impute, OUTPUT "
                          "must be an .h5ad file holding the embedding. See docs/large_data.md.")
    fit.add_argument("--chunk-size", type=int, default=4096,
                     help="With --backed: cells per read when validating, embedding and "
                          "predicting (default 4096).")
    fit.add_argument("--block-size", type=int, default=128,
                     help="With --backed: consecutive cells per shuffled block (default 128).")
    fit.add_argument("--buffer-blocks", type=int, default=32,
                     help="With --backed: blocks read and shuffled together (default 32).")
    fit.add_argument("--save-model", type=Path, default=None,
                     help="Also save the trained model to this folder (a new or empty one; "
                          "with --overwrite also a model folder omnivae wrote, never "
                          "anything else).")
    _add_file_options(fit)
    fit.add_argument("--checkpoint-dir", type=Path, default=None,
                     help="Write a checkpoint (last.ckpt) into this folder after every epoch.")
    fit.add_argument("--resume", action="store_true",
                     help="Continue from --checkpoint-dir/last.ckpt after a crash or Ctrl-C "
                          "(same data and options; the result equals an uninterrupted run).")
    fit.add_argument("--devices", default="auto",
                     help="Devices per machine (Lightning's devices: a number, or auto). With "
                          "--strategy ddp, e.g. --devices 4 trains in 4 processes; only the "
                          "first writes the output (see docs/distributed.md).")
    fit.add_argument("--num-nodes", type=int, default=1,
                     help="Machines of a multi-node run (on SLURM: the --nodes of sbatch).")
    fit.add_argument("--strategy", default="auto",
                     help="Lightning strategy: auto (one process) or ddp (one process per "
                          "device, started by running this command again).")
    _add_training_options(fit)

    query = sub.add_parser(
        "map", help="Map new cells (QUERY.h5mu) onto a saved model without retraining it.",
        description="Reference mapping: load the model saved in MODEL_DIR (omnivae fit "
                    "--save-model, or Model.save), fit only parameters for the query's new "
                    "batches (the reference weights stay frozen) and write OUT.h5mu with "
                    "obsm['X_omnivae'] in the reference's latent space and one "
                    "'<modality>_imputed' modality per reference modality. The query may lack "
                    "modalities or measure fewer features (e.g. a smaller antibody panel).",
    )
    query.add_argument("model_dir", type=Path, help="Folder of the saved reference model.")
    query.add_argument("input", type=Path, help="Query .h5mu file with raw counts (never changed).")
    query.add_argument("-o", "--output", type=Path, required=True,
                       help="Output .h5mu file (written atomically; an existing file only "
                            "with --overwrite, never the input).")
    query.add_argument("--batch-key", default=None,
                       help="Batch column of the query (default: the reference's batch column); "
                            "labels the reference never saw get new parameters.")
    query.add_argument("--no-impute", action="store_true", help="Do not write predicted modalities.")
    query.add_argument("--save-model", type=Path, default=None,
                       help="Also save the query model to this folder (load it with "
                            "omnivae.Model.load(DIR, query_mdata)); a new or empty folder, "
                            "or with --overwrite a model folder omnivae wrote.")
    _add_file_options(query)
    query.add_argument("--max-epochs", type=int, default=None,
                       help="Epochs fitting the new batches' parameters (default 100).")
    query.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "gpu", "cuda", "mps"],
                       help="Where to train (default auto: a GPU when there is one).")
    query.add_argument("--no-progress", action="store_true", help="Hide the training progress bar.")

    demo = sub.add_parser(
        "demo", help="Train on a built-in simulated dataset and write results, a UMAP and a report.",
        description="Simulate RNA + ATAC + protein counts (several batches, known cell types, "
                    "some cells missing a modality), withhold protein for 25%% of cells, train, "
                    "and write demo.h5mu, umap.png and report.md into --out (150 epochs unless "
                    "--max-epochs is given; about 2-3 minutes on 2 CPU cores).",
    )
    demo.add_argument("--out", type=Path, default=Path("omnivae_demo"), help="Output folder (default ./omnivae_demo).")
    demo.add_argument("--n-cells", type=int, default=2000, help="Simulated cells (default 2000).")
    demo.add_argument("--quick", action="store_true", help="A small, fast run (for CI).")
    _add_training_options(demo)
    return parser


def _fit(args: argparse.Namespace) -> None:
    import omnivae

    _check_files(args, model_dir=None)
    if args.backed:
        _fit_backed(args)
        return
    mdata = _read_input(args.input, protein_key=args.protein_key)
    model = omnivae.Model(mdata, **_model_options(args))
    stopped = _train(model, args)
    if not model.is_global_zero:
        return
    from omnivae.tl.embedding import cluster_embedding

    mdata.obsm["X_omnivae"] = model.get_latent_representation()
    mdata.obs["omnivae_leiden"] = cluster_embedding(mdata.obsm["X_omnivae"], seed=args.seed)
    _finish(args, mdata, model, written="obsm['X_omnivae'], obs['omnivae_leiden']",
            stopped=stopped)


def _check_files(args: argparse.Namespace, model_dir: Path | None) -> None:
    """Refuse, before any work, every write that could lose data or fail at the end: an
    output that exists (without --overwrite), is a folder or is an input; a --save-model
    folder that is not new, empty or (with --overwrite) omnivae's; two outputs in one place."""
    from omnivae.data.files import check_model_destination, check_output_file

    if not args.input.is_file():
        what = "a folder, not a file" if args.input.is_dir() else "not found"
        raise FileNotFoundError(f"input file {args.input} is {what}.")
    inputs = (args.input,) if model_dir is None else (args.input, model_dir)
    check_output_file(args.output, overwrite=args.overwrite, inputs=inputs)
    if args.output.suffix not in (".h5mu", ".h5ad"):
        raise ValueError(f"The output {args.output} must be an .h5mu file (or, with --backed "
                         "--no-impute, an .h5ad file); name it e.g. results.h5mu.")
    places = {"the output": args.output, "the input": args.input}
    checkpoint_dir = getattr(args, "checkpoint_dir", None)
    if checkpoint_dir is not None:
        if checkpoint_dir.exists() and not checkpoint_dir.is_dir():
            raise FileExistsError(f"--checkpoint-dir {checkpoint_dir} is a file; name a folder "
                                  "for the checkpoints.")
        _distinct("--checkpoint-dir", checkpoint_dir, places)
        places["--checkpoint-dir"] = checkpoint_dir
    if args.save_model is not None:
        _distinct("--save-model", args.save_model, places)
        check_model_destination(args.save_model, overwrite=args.overwrite)


def _distinct(option: str, path: Path, others: dict[str, Path]) -> None:
    for name, other in others.items():
        if path.resolve() == other.resolve():
            raise ValueError(f"{option} {path} is {name}; give it a place of its own.")


def _read_input(path: Path, protein_key: str | None = None) -> Any:
    """The MuData of ``path`` (``.h5mu``, ``.h5ad`` or 10x ``.h5``; an unreadable file is a
    ValueError naming it, see :func:`omnivae.data.inputs.read_input`)."""
    from omnivae.data.inputs import read_input

    return read_input(path, protein_key=protein_key)


def _train(model: Any, args: argparse.Namespace) -> Stopped | None:
    """Train with the command's settings. Returns ``None``, or with --save-on-interrupt the
    Ctrl-C/SIGTERM that stopped training (the outputs are then written and it is raised
    again); without it the interruption propagates and nothing is written."""
    from omnivae.train.interrupts import TrainingInterrupted, TrainingTerminated

    if all(os.environ.get(k, "0") == "0" for k in ("LOCAL_RANK", "NODE_RANK", "RANK")):
        print(model)  # once, not by every process of a distributed run
    options: dict[str, Any] = dict(accelerator=args.accelerator,
                                   progress_bar=not args.no_progress)
    if args.command == "fit":
        options.update(batch_size=args.batch_size, checkpoint_dir=args.checkpoint_dir,
                       resume=args.resume, devices=_devices(args.devices),
                       num_nodes=args.num_nodes, strategy=args.strategy)
    try:
        model.train(args.max_epochs, **options)
    except (TrainingInterrupted, TrainingTerminated) as stopped:
        if not args.save_on_interrupt:
            raise
        print(f"omnivae {args.command}: {stopped}; writing the outputs anyway "
              "(--save-on-interrupt).", file=sys.stderr)
        return stopped
    return None


def _interruption_record(stopped: Stopped | None, model: Any) -> dict[str, Any]:
    """``uns`` entries of outputs written after an interruption (none otherwise)."""
    if stopped is None:
        return {}
    return {"omnivae_interrupted": {
        "signal": stopped.signal_name, "message": str(stopped),
        "epochs_trained": len(model.history)}}


def _devices(value: str) -> int | str:
    """``--devices``: a number of devices, or Lightning's other spellings (``auto``)."""
    return int(value) if value.lstrip("-").isdigit() else value


def _model_options(args: argparse.Namespace) -> dict[str, Any]:
    return dict(modalities=args.modalities, batch_key=args.batch_key, layer=args.layer,
                likelihoods=_likelihood_pairs(args.likelihood), model=args.model,
                fusion=args.fusion, n_latent=args.n_latent, seed=args.seed,
                mixture_sampling=args.mixture_sampling, batch_penalty=args.batch_penalty,
                penalty_weight=args.penalty_weight, penalty_keys=args.penalty_keys,
                penalty_label_key=args.penalty_label_key)


def _fit_backed(args: argparse.Namespace) -> None:
    """``omnivae fit --backed``: train from the file on disk, stream the outputs."""
    import omnivae
    from omnivae.data.backed import BackedOptions
    from omnivae.model.streaming import write_results

    if args.no_impute != (args.output.suffix == ".h5ad"):
        raise ValueError("With --backed, the output is an .h5mu file with the embedding and "
                         "predicted modalities, or with --no-impute an .h5ad file with the "
                         f"embedding alone; got {args.output.name}"
                         f"{' with' if args.no_impute else ' without'} --no-impute.")
    options = BackedOptions(chunk_size=args.chunk_size, block_size=args.block_size,
                            buffer_blocks=args.buffer_blocks)
    model = omnivae.Model(args.input, backed=options, **_model_options(args))
    stopped = _train(model, args)
    if not model.is_global_zero:
        return
    if args.save_model:
        model.save(args.save_model, overwrite=args.overwrite)
    targets = () if args.no_impute else model.setup.modalities
    write_results(model, args.output, targets=targets, chunk_size=args.chunk_size,
                  overwrite=args.overwrite, uns=_interruption_record(stopped, model))
    print(f"Wrote {args.output} ({model.cells.n_cells} cells; obsm['X_omnivae']"
          f"{', imputed modalities' if targets else ''}; written chunk by chunk).")
    if stopped is not None:
        raise stopped


def _map(args: argparse.Namespace) -> None:
    import omnivae
    from omnivae.data.setup import obs_column
    from omnivae.model.model import load_query, load_reference

    _check_files(args, model_dir=args.model_dir)
    reference = load_reference(args.model_dir)
    mdata = _read_input(args.input)
    reference_key = reference.setup.batch_key
    if args.batch_key is not None:
        if reference_key is None:
            raise ValueError(f"The model in {args.model_dir} was trained without a batch "
                             "column; leave --batch-key out (the query becomes one new batch).")
        if args.batch_key != reference_key:
            mdata.obs[reference_key] = obs_column(mdata, args.batch_key).to_numpy()
    elif reference_key is not None:
        try:
            obs_column(mdata, reference_key)
        except KeyError:
            raise ValueError(
                f"The model's batch column {reference_key!r} is not in {args.input}; name the "
                "query's batch column with --batch-key COLUMN.") from None
    model = load_query(reference, mdata)
    stopped = _train(model, args)
    mdata.obsm["X_omnivae"] = model.get_latent_representation()
    params = mdata.uns["X_omnivae"] = {"params": omnivae.tl.mapping_params(model)}
    print(f"Mapped {mdata.n_obs} cells; new batches {params['params']['new_batches']}, "
          f"{model.n_trainable} parameters fitted, reference weights frozen.")
    _finish(args, mdata, model, written="obsm['X_omnivae']", stopped=stopped)


def _finish(args: argparse.Namespace, mdata: Any, model: Any, written: str,
            stopped: Stopped | None) -> None:
    """Impute every modality (unless --no-impute), save the model if asked, write the .h5mu
    atomically, say what was written; then raise the interruption the outputs were written
    after (--save-on-interrupt), so the exit status still reports it."""
    import omnivae
    from omnivae.data.files import write_h5mu_atomic

    if not args.no_impute:
        for name in model.setup.modalities:
            omnivae.tl.impute(mdata, model, target=name)
    mdata.uns.update(_interruption_record(stopped, model))
    if args.save_model:
        model.save(args.save_model, overwrite=args.overwrite)
    write_h5mu_atomic(mdata, args.output)
    print(f"Wrote {args.output} ({mdata.n_obs} cells; {written}"
          f"{', imputed modalities' if not args.no_impute else ''}"
          f"{'; training was interrupted' if stopped is not None else ''}).")
    if stopped is not None:
        raise stopped


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``omnivae`` command. Exit status: 0 when every promised output was
    written, 2 for an error in the input or the arguments (the message says what and how to
    fix it), 130 after Ctrl-C and 143 after SIGTERM (no outputs are written then, unless
    ``--save-on-interrupt``)."""
    from omnivae.train.interrupts import (
        INTERRUPT_EXIT_CODE,
        TERMINATE_EXIT_CODE,
        TrainingTerminated,
        sigterm_raises,
    )

    args = build_parser().parse_args(argv)
    command = f"omnivae {args.command}"
    try:
        with sigterm_raises():
            _run(args)
    except TrainingTerminated as err:
        print(f"{command}: {err} {_after_interruption(args)}", file=sys.stderr)
        return TERMINATE_EXIT_CODE
    except KeyboardInterrupt as err:
        print(f"{command}: {err or 'Interrupted (Ctrl-C).'} {_after_interruption(args)}",
              file=sys.stderr)
        return INTERRUPT_EXIT_CODE
    except (ValueError, KeyError, OSError) as err:
        message = err.args[-1] if isinstance(err, OSError) and err.args else (
            err.args[0] if err.args else str(err))
        print(f"{command}: error: {message}", file=sys.stderr)
        return 2
    return 0


def _after_interruption(args: argparse.Namespace) -> str:
    if getattr(args, "save_on_interrupt", False) and args.command != "demo":
        return "Outputs written before the interruption are listed above."
    checkpoint = getattr(args, "checkpoint_dir", None)
    resume = (f" Continue with --checkpoint-dir {checkpoint} --resume." if checkpoint else
              " Use --checkpoint-dir DIR to be able to resume, or --save-on-interrupt to "
              "write the outputs of an interrupted run.")
    return "Nothing was written." + (resume if args.command != "demo" else "")


def _run(args: argparse.Namespace) -> None:
    if args.command == "fit":
        _fit(args)
    elif args.command == "map":
        _map(args)
    else:
        from omnivae.demo import run_demo

        run_demo(args.out, n_cells=200 if args.quick and args.n_cells == 2000 else args.n_cells,
                 max_epochs=(args.max_epochs if args.max_epochs is not None
                             else 15 if args.quick else 150),
                 n_latent=args.n_latent, batch_size=args.batch_size,
                 accelerator=args.accelerator, seed=args.seed,
                 progress_bar=not args.no_progress)


if __name__ == "__main__":
    sys.exit(main())
