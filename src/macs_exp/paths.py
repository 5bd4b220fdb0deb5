"""Where the app's files are, wherever the package is installed from."""

from pathlib import Path

# The YAML groups live in the repository's top-level conf/ (src layout: two levels up).
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# Data folders shipped inside the package (the tiny rating dataset).
ASSETS_DIR = Path(__file__).resolve().parent / "data" / "assets"
