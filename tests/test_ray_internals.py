"""The private Ray symbols alsoview relies on are still there, and no module but ray_internals uses any.

When a Ray release moves one of them, these tests name the Ray version and the symbol, so the
failure says what to change (alsoview/distributed/ray_internals.py) instead of a run breaking.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest
import ray

from alsoview.distributed import ray_internals

ROOT = Path(__file__).resolve().parents[1]
INTERNALS = ROOT / "alsoview" / "distributed" / "ray_internals.py"


def _moved(symbol: str, why: str) -> str:
    return (
        f"Ray {ray.__version__}: {symbol} {why}; alsoview/distributed/ray_internals.py relies on it "
        "(its docstrings say what for): adapt that function, or install the Ray version pyproject.toml names"
    )


@pytest.mark.parametrize(("module", "name"), ray_internals.PRIVATE_SYMBOLS)
def test_every_private_symbol_ray_internals_uses_exists(module, name):
    try:
        imported = importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(_moved(module, f"cannot be imported ({exc})"))
    assert hasattr(imported, name), _moved(f"{module}.{name}", "is gone")


def test_the_wandb_callback_still_names_the_actor_class_it_starts():
    from ray.air.integrations.wandb import WandbLoggerCallback

    attribute = ray_internals.WANDB_ACTOR_ATTRIBUTE
    assert getattr(WandbLoggerCallback, attribute, None) is ray_internals.wandb_logging_actor(), _moved(
        f"WandbLoggerCallback.{attribute}", "no longer names its logging actor class"
    )


def _parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_the_private_functions_take_the_arguments_ray_internals_passes():
    from ray._common.utils import get_ray_address_file
    from ray._private import worker
    from ray._private.authentication.authentication_token_setup import (
        maybe_enable_token_auth_if_token_available,
    )
    from ray.train.v2._internal.execution.callback import ControllerCallback, WorkerGroupCallback

    token = "ray._private.authentication.authentication_token_setup.maybe_enable_token_auth_if_token_available"
    assert "warn_if_disabled" in _parameters(maybe_enable_token_auth_if_token_available), _moved(
        token, "takes no warn_if_disabled"
    )
    assert _parameters(worker.print_to_stdstream)[:2] == ["data", "ignore_prefix"], _moved(
        "ray._private.worker.print_to_stdstream", f"takes {_parameters(worker.print_to_stdstream)}"
    )
    assert Path(get_ray_address_file(None)).name == "ray_current_cluster", _moved(
        "ray._common.utils.get_ray_address_file", "names another file"
    )
    assert ray_internals.ray_temp_dir().is_absolute()
    for base, hook in (
        (ControllerCallback, "after_controller_start"),
        (WorkerGroupCallback, "after_worker_group_start"),
    ):
        assert callable(getattr(base, hook, None)), _moved(f"{base.__module__}.{base.__name__}", f"has no {hook}")


def test_the_driver_filter_drops_the_lines_it_is_told_and_prints_the_rest(capsys):
    from ray._private import worker

    from alsoview.logs import routine_ray_print

    ray_internals.drop_driver_prints(routine_ray_print)
    ray_internals.drop_driver_prints(routine_ray_print)  # a second call does not wrap twice
    routine = "WARNING: 12 PYTHON worker processes have been started on node: abc with address: 127.0.0.1."
    other = "the node ran out of memory"
    worker.print_to_stdstream({"lines": [routine, other], "pid": "raylet", "is_err": False}, ignore_prefix=False)
    worker.print_to_stdstream({"lines": [routine], "pid": "raylet", "is_err": False}, ignore_prefix=False)
    worker.print_to_stdstream({"lines": [routine], "pid": 1234, "is_err": False}, ignore_prefix=False)
    out = capsys.readouterr().out
    assert other in out
    assert out.count("worker processes have been started") == 1  # a worker's own line is never dropped


# --- no private Ray name outside ray_internals.py -------------------------------------------------


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def _private(dotted: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in dotted.split(".")[1:])


def private_ray_references(source: str) -> set[str]:
    """Every private Ray name a module's code uses: imports from or of private Ray modules or
    names, `ray.<...>._x` attributes, and `ray.init(_x=...)` keywords."""
    found: set[str] = set()
    inner: set[int] = set()  # attributes inside a longer chain: the chain is reported once
    for node in ast.walk(ast.parse(source)):  # outer nodes first
        if isinstance(node, ast.Attribute) and id(node) in inner:
            inner.add(id(node.value))
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "ray":
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                if _private(name):
                    found.add(name)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "ray" and _private(alias.name)}
        elif isinstance(node, ast.Attribute):
            inner.add(id(node.value))
            dotted = _dotted(node)
            if dotted and dotted.split(".")[0] == "ray" and _private(dotted):
                found.add(dotted)
        elif isinstance(node, ast.Call) and _dotted(node.func) == "ray.init":
            found |= {f"ray.init({k.arg}=)" for k in node.keywords if k.arg and k.arg.startswith("_")}
    return found


def test_the_scan_finds_each_kind_of_private_use():
    source = (
        "import ray._private.services\n"
        "from ray._private import worker\n"
        "from ray.train.torch.config import _TorchBackend, TorchConfig\n"
        "from ray.train.v2._internal.exceptions import (\n    WorkerGroupStartupTimeoutError,\n)\n"
        "ray._private.worker.print_to_stdstream\n"
        "ray.init(address='local', _node_ip_address='127.0.0.1')\n"
        "ray.__version__; ray.train.get_context(); from ray.util import get_node_ip_address\n"
    )
    assert private_ray_references(source) == {
        "ray._private.services",
        "ray._private.worker",
        "ray.train.torch.config._TorchBackend",
        "ray.train.v2._internal.exceptions.WorkerGroupStartupTimeoutError",
        "ray._private.worker.print_to_stdstream",
        "ray.init(_node_ip_address=)",
    }


def test_no_module_but_ray_internals_uses_a_private_ray_name():
    files = [*(ROOT / "alsoview").rglob("*.py"), *(ROOT / "rayjobs").rglob("*.py")]
    assert len(files) > 20
    offenders = {
        str(path.relative_to(ROOT)): sorted(found)
        for path in files
        if path != INTERNALS and (found := private_ray_references(path.read_text()))
    }
    assert not offenders, f"private Ray names outside alsoview/distributed/ray_internals.py: {offenders}"


def test_every_private_name_ray_internals_uses_is_listed_for_the_version_check():
    listed = [f"{module}.{name}" for module, name in ray_internals.PRIVATE_SYMBOLS]
    used = private_ray_references(INTERNALS.read_text())
    assert used, "the scan found nothing in ray_internals.py"
    unlisted = sorted(u for u in used if not any(symbol == u or symbol.startswith(u + ".") for symbol in listed))
    assert not unlisted, f"add these to ray_internals.PRIVATE_SYMBOLS: {unlisted}"
