"""Run files: they round-trip, and loading one never runs code from it."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from alsoview.config import load_config
from alsoview.errors import UserError
from alsoview.training.checkpoint import (
    LoopState,
    latest_checkpoint,
    load_checkpoint,
    load_saved_model,
    save_checkpoint,
)


def test_a_checkpoint_round_trips_with_plain_values(tmp_path):
    import numpy as np

    state = LoopState(
        epoch=3,
        best_value=0.25,
        best_epoch=2,
        epochs_without_improvement=1,
        best_model_state={"w": torch.ones(2)},
        history=[{"epoch": np.int64(3), "valid/auc": np.float32(0.5)}],
    )
    config = load_config(None, ["model.heads.mlp.hidden_dims=[8, 4]", "seed=7"])
    save_checkpoint(tmp_path, {"w": torch.zeros(2)}, {"state": {}}, state, config, {"n_users": 3})
    saved = load_checkpoint(tmp_path)
    assert saved.config == config and saved.vocabulary == {"n_users": 3}
    assert saved.state.best_epoch == 2 and saved.state.resumed_from_epoch == 3
    assert saved.state.history == [{"epoch": 3, "valid/auc": 0.5}]
    torch.testing.assert_close(saved.state.best_model_state["w"], torch.ones(2))


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("name", ["model.pt", "checkpoint.pt"])
def test_a_pickled_payload_in_a_run_file_is_refused_and_never_runs(tmp_path, name):
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = marker
    with open(tmp_path / name, "wb") as handle:
        pickle.dump({"model": payload}, handle)
    with pytest.raises(UserError, match="not a readable alsoview run file"):
        load_saved_model(tmp_path) if name == "model.pt" else load_checkpoint(tmp_path)
    assert not marker.exists()


def test_a_truncated_run_file_is_one_clear_error(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"PK\x03\x04 cut")
    with pytest.raises(UserError, match="model.pt"):
        load_saved_model(tmp_path)


def test_a_checkpoint_resumes_only_on_its_dataset_and_an_older_format_is_refused(tmp_path):
    folder = tmp_path / "checkpoint_0"
    folder.mkdir()
    save_checkpoint(folder, {"w": torch.ones(2)}, {}, LoopState(epoch=3), load_config(None, []), {"users": 1})
    load_checkpoint(folder).check_resumable(folder, {"users": 1})  # this format and dataset: fine
    with pytest.raises(UserError, match=r"trained on another dataset .* use another train.run_name"):
        load_checkpoint(folder).check_resumable(folder, {"users": 2})
    raw = torch.load(folder / "checkpoint.pt", weights_only=True)
    raw["model_format"] = 2  # as the model before parts had random streams of their own wrote them
    torch.save(raw, folder / "checkpoint.pt")
    with pytest.raises(UserError, match=r"older alsoview \(model format 2, this one reads 3\); train it again"):
        load_checkpoint(folder)
    with pytest.raises(UserError, match="model format 2"):  # never skipped as a damaged file would be
        latest_checkpoint(tmp_path)
