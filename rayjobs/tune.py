"""The main job: `ray job submit -- python rayjobs/tune.py [--config FILE] [KEY=VALUE ...]`.

With no arguments it tunes on the embedded default dataset (generated and prepared on first use).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from alsoview.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
