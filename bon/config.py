"""Where the Hydra config tree is: conf/ beside the package in a checkout, bon/conf when installed."""
from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def conf_dir() -> str:
    """Absolute path of the config tree, so `python -m bon.run` works from any directory."""
    for candidate in (_PACKAGE / "conf", _PACKAGE.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"bon's config tree is missing: looked for {_PACKAGE.parent / 'conf'} and {_PACKAGE / 'conf'}")
