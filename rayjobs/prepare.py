"""`ray job submit -- python rayjobs/prepare.py [--reviews ... --meta ... --out DIR] [KEY=VALUE ...]`"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from alsoview.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["prepare", *sys.argv[1:]]))
