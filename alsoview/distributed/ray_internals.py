"""Every use alsoview makes of Ray's private modules, each where Ray 2.60 has no public way.

Ray may change or remove anything below in any release, patch releases included: this module is
the one place to look when it does, and tests/test_ray_internals.py imports each symbol listed in
`PRIVATE_SYMBOLS` and names the Ray version and the symbol when one is gone. No other alsoview
module reaches into `ray._private`, `ray._common` or another private Ray name (the same test
checks the package).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

# (module, attribute) for each private symbol used below; the test imports every one.
PRIVATE_SYMBOLS = (
    ("ray._private.ray_constants", "ENABLE_RAY_CLUSTER"),
    ("ray._private.authentication.authentication_token_setup", "maybe_enable_token_auth_if_token_available"),
    ("ray._common.utils", "get_ray_address_file"),
    ("ray._common.utils", "get_default_ray_temp_dir"),
    ("ray._private.worker", "print_to_stdstream"),
    ("ray.train.v2._internal.exceptions", "WorkerGroupStartupTimeoutError"),
    ("ray.train.v2._internal.execution.callback", "ControllerCallback"),
    ("ray.train.v2._internal.execution.callback", "WorkerGroupCallback"),
    ("ray.air.integrations.wandb", "_WandbLoggingActor"),
    ("ray._private.worker", "get_dashboard_url"),
    ("ray.dashboard.modules.serve.sdk", "ServeSubmissionClient"),
)


def stay_on_loopback_in_this_process() -> None:
    """Ray's single-machine switch (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`) for this process too.

    Needs: `ray._private.ray_constants.ENABLE_RAY_CLUSTER`, the copy of the switch Ray read from
    the environment when it was imported; with it off, Ray gives a node 127.0.0.1 as its address
    instead of this machine's network address. Processes Ray starts later read the environment
    variable themselves (runtime.py sets it); this process imported Ray before it knew whether it
    would start a private instance, and Ray has no public way to change the switch after import.
    """
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def use_local_token_if_present() -> None:
    """Turn token authentication on for this process when RAY_AUTH_MODE is unset and a token exists.

    Needs: `maybe_enable_token_auth_if_token_available`, which Ray's `ray.init()` calls itself when
    it finds this machine's `ray start` head on its own (no address). alsoview passes the head's
    recorded address instead (to join that head and no other), and Ray then skips the step.
    Setting RAY_AUTH_MODE=token in the environment is not enough here: Ray reads its
    configuration once, at import; this function also refreshes that copy. No public API does.
    """
    from ray._private.authentication.authentication_token_setup import (
        maybe_enable_token_auth_if_token_available,
    )

    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def recorded_head_file() -> Path:
    """Where `ray start` records the address of the head it started on this machine.

    Needs: `ray._common.utils.get_ray_address_file`, the path Ray's own `ray.init(address="auto")`
    reads (`<Ray temp dir>/ray_current_cluster`). Ray has no public API for it; reading it here
    lets alsoview join exactly that head instead of scanning for any running Ray.
    """
    from ray._common.utils import get_ray_address_file

    return Path(get_ray_address_file(None))


def ray_temp_dir() -> Path:
    """Ray's default temp folder (its sessions, and each session's `logs/`), for error messages.

    Needs: `ray._common.utils.get_default_ray_temp_dir` (RAY_TMPDIR, TMPDIR or /tmp, plus `ray`):
    a failed start has no session to ask, and Ray has no public API for the folder.
    """
    from ray._common.utils import get_default_ray_temp_dir

    return Path(get_default_ray_temp_dir())


def drop_driver_prints(routine: Callable[[dict, str], bool]) -> None:
    """Leave out, in this driver, the lines Ray prints for its workers and raylet that `routine`
    (given the message's fields and one line) calls routine; every other line is printed as before.

    Needs: `ray._private.worker.print_to_stdstream`, the function Ray's driver prints those lines
    with. The raylet's reports (e.g. "N PYTHON worker processes have been started") and the
    workers' and actors' lines reach the driver as messages Ray prints itself, not through Python
    logging, and Ray has no public setting or hook that filters them (`log_to_driver=False` would
    drop the workers' own lines, the epoch lines included). Call it before `ray.init`: Ray hands
    the function to its log dispatcher when it connects. Wrapping twice is a no-op.
    """
    from ray._private import worker

    printer = worker.print_to_stdstream
    if getattr(printer, "_alsoview_filtered", False):
        return

    def print_to_stdstream(data: dict, ignore_prefix: bool) -> None:
        lines = [line for line in data.get("lines", []) if not routine(data, line)]
        if not lines:
            return
        printer({**data, "lines": lines}, ignore_prefix)

    print_to_stdstream._alsoview_filtered = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = print_to_stdstream


def worker_group_startup_timeout_error() -> type:
    """The error Ray Train's controller fails with when its workers cannot be placed in time.

    Needs: `ray.train.v2._internal.exceptions.WorkerGroupStartupTimeoutError`. `fit()` raises a
    public `TrainingFailedError` whose `controller_failure` holds it; Ray exports no name to tell
    this cause from others, and the stall watch reports it differently (stall.py).
    """
    from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError

    return WorkerGroupStartupTimeoutError


def controller_callback_bases() -> tuple[type, type]:
    """The bases of a Ray Train callback that runs inside the run's controller actor.

    Needs: `ray.train.v2._internal.execution.callback.ControllerCallback` (its
    `after_controller_start`) and `WorkerGroupCallback` (its `after_worker_group_start`). Train V2
    runs `fit()` as a controller actor with no public handle; the stall watch needs that handle to
    stop a run gracefully and to know when the workers are up. The public `ray.train.UserCallback`
    runs on the workers' reports only.
    """
    from ray.train.v2._internal.execution.callback import ControllerCallback, WorkerGroupCallback

    return ControllerCallback, WorkerGroupCallback


def wandb_logging_actor() -> type:
    """Ray's per-trial W&B logging actor class, for a subclass that sets W&B's environment first.

    Needs: `ray.air.integrations.wandb._WandbLoggingActor`, and the callback's class attribute
    `_logger_actor_cls` that names it (`use_wandb_logging_actor`). The actor imports wandb in its
    own process, to which Ray passes only the API key; subclassing it is the only way to set W&B's
    offline and quiet switches there before that import.
    """
    from ray.air.integrations.wandb import _WandbLoggingActor

    return _WandbLoggingActor


WANDB_ACTOR_ATTRIBUTE = "_logger_actor_cls"  # WandbLoggerCallback's name for the actor class it starts


def use_wandb_logging_actor(callback_class: type, actor_class: type) -> None:
    """Make a WandbLoggerCallback subclass start `actor_class` for each trial (see above)."""
    setattr(callback_class, WANDB_ACTOR_ATTRIBUTE, actor_class)


def dashboard_url() -> str:
    """The dashboard of the Ray instance this process is connected to, as http://host:port.

    Needs: `ray._private.worker.get_dashboard_url` (Ray's `ray.init()` context names it only to
    the process that called `init`; a joined cluster's is read the same way)."""
    from ray._private.worker import get_dashboard_url

    url = get_dashboard_url()
    return url if "://" in url else f"http://{url}"


def deploy_serve_config(config: dict) -> None:
    """Deploy a Serve config (the `serve deploy` file's contents) to this instance's Serve.

    Needs: `ray.dashboard.modules.serve.sdk.ServeSubmissionClient`, the client `serve deploy`
    itself uses (it adds the token header when token authentication is on). A config deploy is
    Serve's declarative path: a change of `user_config` alone is a lightweight update that calls
    each running replica's `reconfigure` instead of replacing it (Serve's in-place updates);
    `serve.run` from Python replaces the replicas instead."""
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    ServeSubmissionClient(dashboard_url()).deploy_applications(config)
