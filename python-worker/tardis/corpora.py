"""Public English text for calibration and held-out evaluation, read from registry packages at run time.

The project commits no third-party text. `scripts/setup.sh` downloads the PyPI gensim wheel (never
installed) into `.cache/corpora/`; its test data holds the Lee news corpus, which this module reads
straight out of the wheel: `lee_background.cor` (300 documents) for calibration and `lee.cor`
(50 other documents) as held-out text.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LEE_BACKGROUND = "gensim/test/test_data/lee_background.cor"
LEE_TEST = "gensim/test/test_data/lee.cor"


def corpus_dir() -> Path:
    """Where setup put the corpus packages ($TARDIS_CORPUS_DIR, else <repo>/.cache/corpora)."""
    return Path(os.environ.get("TARDIS_CORPUS_DIR", REPO / ".cache" / "corpora"))


def gensim_wheel() -> Path:
    """The downloaded gensim wheel; a clear error says how to get it when it is missing."""
    wheels = sorted(corpus_dir().glob("gensim-*.whl"))
    if not wheels:
        raise FileNotFoundError(
            f"no gensim wheel in {corpus_dir()}: run scripts/setup.sh (it runs "
            "`pip download --no-deps gensim==4.4.0 -d .cache/corpora`) or set TARDIS_CORPUS_DIR"
        )
    return wheels[-1]


def _read_lines(member: str) -> list[str]:
    with zipfile.ZipFile(gensim_wheel()) as zf:
        text = zf.read(member).decode("utf-8", errors="replace")
    return [line.strip() for line in text.splitlines() if line.strip()]


def lee_calibration() -> list[str]:
    """The Lee background corpus: 300 short news documents."""
    return _read_lines(LEE_BACKGROUND)


def lee_heldout() -> list[str]:
    """The Lee test corpus: 50 news documents not in the background set."""
    return _read_lines(LEE_TEST)
