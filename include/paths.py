"""Where the project's own files are: the root, the schemas and the settings files."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SCHEMAS_DIR = PROJECT_ROOT / "schemas"
CONFIG_DIR = PROJECT_ROOT / "include" / "config"
# A folder with a deployment's own copies of the settings files, instead of include/config.
CONFIG_DIR_ENV = "AVAZU_CONFIG_DIR"


def settings_file(name: str) -> Path:
    """The settings file ``name`` in use: ``$AVAZU_CONFIG_DIR/name`` when that folder is set, else include/config's."""
    folder = os.environ.get(CONFIG_DIR_ENV)
    return Path(folder) / name if folder else CONFIG_DIR / name
