"""Downloading a registered dataset's public source files (sha256-checked, atomic, with a
progress bar) and building its prepared ``.h5mu`` from them.

The source URLs are GitHub raw URLs at full commits. A mirror (the ``mirror=`` argument of
:func:`omnivae.datasets.load`, or the environment variable ``OMNIVAE_DATA_MIRROR``) replaces the
GitHub prefix by another root: an ``http(s)://`` or ``file://`` URL, or a local folder, laid
out as ``<owner>/<repo>/<commit>/<path>``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omnivae.data.files import mudata_defaults

__all__ = ["GITHUB_PREFIXES", "MIRROR_ENV", "ChecksumError", "build", "converted_fingerprint",
           "fetch_file", "mark_converted", "mirror_url"]

MIRROR_ENV = "OMNIVAE_DATA_MIRROR"
GITHUB_PREFIXES = ("https://raw.githubusercontent.com/", "https://media.githubusercontent.com/media/")
_BLOCK = 1 << 20
CONVERTED_ATTR = "omnivae_converted_content_sha256"


class ChecksumError(ValueError):
    """Raised when a data file's SHA-256 differs from the registered one."""


def mirror_url(url: str, mirror: str | os.PathLike[str] | None = None) -> str:
    """``url`` with its GitHub prefix replaced by ``mirror`` (default: ``$OMNIVAE_DATA_MIRROR``;
    neither set: ``url`` unchanged). A mirror that is a folder path becomes a ``file://`` URL.

    Examples
    --------
    >>> url = "https://raw.githubusercontent.com/owner/repo/0123abcd/data/x.csv"
    >>> mirror_url(url, "http://127.0.0.1:8000/files")
    'http://127.0.0.1:8000/files/owner/repo/0123abcd/data/x.csv'
    >>> mirror_url(url, "/srv/mirror")
    'file:///srv/mirror/owner/repo/0123abcd/data/x.csv'
    """
    root = os.fspath(mirror) if mirror is not None else os.environ.get(MIRROR_ENV, "")
    if not root:
        return url
    if "://" not in root:
        root = Path(root).expanduser().resolve().as_uri()
    for prefix in GITHUB_PREFIXES:
        if url.startswith(prefix):
            return root.rstrip("/") + "/" + url[len(prefix):]
    return url


def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm  # a dependency of Lightning

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                disable=not enabled, file=sys.stderr, leave=False)


def _readable(path: Path) -> None:
    """Give a temporary file (created owner-only) the permissions of a new file under the umask."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def mark_converted(path: Path, content_sha256: str) -> None:
    """Record in an ``.h5mu`` (an HDF5 attribute of its root) that it was converted from the
    public sources, with the content fingerprint it must have; only such a file may differ
    byte-wise from the prepared one (see :func:`converted_fingerprint`)."""
    import h5py

    with h5py.File(path, "r+") as fh:
        fh.attrs[CONVERTED_ATTR] = content_sha256


def converted_fingerprint(path: Path) -> str | None:
    """The content fingerprint recorded by :func:`mark_converted`, or None (also when the file
    is not readable as HDF5)."""
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            value = fh.attrs.get(CONVERTED_ATTR)
    except OSError:
        return None
    return None if value is None else str(value)


def fetch_file(url: str, dest: str | os.PathLike[str], sha256: str | None = None, *,
               bar: Any = None) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying the SHA-256 when given.

    The data go to a temporary file beside ``dest`` that replaces ``dest`` only once complete
    and verified; on any failure the temporary file is removed and ``dest`` is left untouched.
    ``bar`` (a tqdm bar) is advanced by the bytes read.

    Examples
    --------
    >>> import hashlib, tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "a.txt").write_bytes(b"counts")
    >>> digest = hashlib.sha256(b"counts").hexdigest()
    >>> fetch_file((folder / "a.txt").as_uri(), folder / "b.txt", digest).read_bytes()
    b'counts'
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=60) as resp:
                    for block in iter(lambda: resp.read(_BLOCK), b""):
                        out.write(block)
                        h.update(block)
                        if bar is not None:
                            bar.update(len(block))
            except urllib.error.URLError as err:
                raise OSError(
                    f"Could not download {url}: {err.reason}. Check the internet connection, "
                    f"or point mirror= or {MIRROR_ENV} at a copy of the source files, or put "
                    f"the prepared file in a folder named by OMNIVAE_DATA.") from err
            out.flush()
            os.fsync(out.fileno())
        if sha256 is not None and h.hexdigest() != sha256:
            raise ChecksumError(
                f"Checksum mismatch for the download {url}: expected sha256 {sha256}, got "
                f"{h.hexdigest()}. Nothing was kept. The file at that address is not the "
                f"registered one (a wrong mirror, a proxy's error page, or a changed file).")
        _readable(tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def build(entry: Mapping[str, Any], dest: Path, *, mirror: str | os.PathLike[str] | None = None,
          progress: bool = True) -> Path:
    """Download ``entry``'s source files, check each one's SHA-256, convert them into the
    prepared ``.h5mu`` (checked against the registered content fingerprint) and write it to
    ``dest`` atomically. The sources go to a temporary folder beside ``dest``, removed after.
    """
    from omnivae.datasets.convert import convert

    sources = entry["sources"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{entry['name']}.", suffix=".sources", dir=dest.parent))
    total = sum(int(s.get("size_bytes", 0)) for s in sources)
    bar = _progress_bar(total, f"omnivae: downloading {entry['name']}", progress)
    try:
        files: dict[str, Path] = {}
        for i, src in enumerate(sources):
            name = f"{i}-{src['url'].rsplit('/', 1)[-1]}"
            files[src["role"]] = fetch_file(mirror_url(src["url"], mirror), work / name,
                                            src["sha256"], bar=bar)
        same = [files[s["role"]] for s in sources if s["sha256"] == entry["sha256"]]
        if same:  # a source that is the prepared file itself, byte for byte
            os.replace(same[0], dest)
            return dest
        bar.set_description(f"omnivae: converting {entry['name']}")
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".h5mu", dir=dest.parent)
        os.close(fd)
        try:
            with mudata_defaults():  # genes and proteins may share names: no notice
                convert(files, entry).write_h5mu(tmp, compression="gzip")
            if _file_sha256(Path(tmp)) != entry["sha256"]:  # other library versions
                mark_converted(Path(tmp), entry["content_sha256"])
            _readable(Path(tmp))
            os.replace(tmp, dest)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return dest
    finally:
        bar.close()
        shutil.rmtree(work, ignore_errors=True)
