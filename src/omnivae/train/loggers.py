"""Lightning loggers for :meth:`omnivae.Model.train`: CSV, TensorBoard or any Logger."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

__all__ = ["LOGGER_NAMES", "Logger", "make_logger"]

LOGGER_NAMES = ("csv", "tensorboard")


def make_logger(logger: str | Logger | bool | None, log_dir: str | Path = "omnivae_logs",
                *, name: str = "omnivae") -> Logger | bool:
    """The Lightning logger asked for.

    Parameters
    ----------
    logger
        ``None``/``False``: no logging; ``True`` or ``"csv"``: :class:`CSVLogger`
        (``<log_dir>/<name>/version_<k>/metrics.csv``, one row per epoch with every loss
        term); ``"tensorboard"``: :class:`TensorBoardLogger` (needs the ``tensorboard``
        package: ``pip install "omnivae[tensorboard]"``; view with
        ``tensorboard --logdir <log_dir>``); a :class:`lightning.pytorch.loggers.Logger`
        instance (MLflow, W&B, ...) is used as is.
    log_dir, name
        Where the CSV/TensorBoard files go.

    Examples
    --------
    >>> import tempfile
    >>> type(make_logger("csv", tempfile.mkdtemp())).__name__
    'CSVLogger'
    >>> make_logger(None)
    False
    """
    if logger is None or logger is False:
        return False
    if isinstance(logger, Logger):
        return logger
    choice = "csv" if logger is True else str(logger).lower()
    if choice == "csv":
        return CSVLogger(str(log_dir), name=name)
    if choice == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ImportError("logger='tensorboard' needs the tensorboard package, which is "
                              "not installed: pip install \"omnivae[tensorboard]\" (or "
                              "pip install tensorboard), or use logger='csv'.") from None
        return TensorBoardLogger(str(log_dir), name=name)
    raise ValueError(f"Unknown logger {logger!r}: use None, True, one of {LOGGER_NAMES}, or a "
                     "lightning.pytorch.loggers.Logger instance.")
