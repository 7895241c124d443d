"""The rules for what a run may be called and how many CPUs it may ask: values that become
folders and resource requests, checked before anything uses them."""

from __future__ import annotations

import re
from typing import Any

from alsoview.errors import UserError

# Run and experiment names become one folder under runs_dir: letters, digits, '.', '_', '-',
# starting with a letter or digit, so '..', '/' or an absolute path can never leave it.
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
PLAIN_NAME_RULE = "a plain name: letters, digits, '.', '_', '-', starting with a letter or digit"
MAX_CPUS = 1024  # a CPU request beyond any node (inf included) is a typo, not a plan
CPUS_RULE = f"> 0 and <= {MAX_CPUS}"


def is_plain_name(name: Any) -> bool:
    return isinstance(name, str) and PLAIN_NAME.fullmatch(name) is not None


def check_plain_name(name: Any, what: str) -> None:
    if not is_plain_name(name):
        raise UserError(f"{what} must be {PLAIN_NAME_RULE}, got {name!r}")
