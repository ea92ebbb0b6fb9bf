"""Personalization at a site: fine-tuning the received global model on the site's own data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from client.data.dataset import SiteData
from client.errors import MoeHealthInputError
from client.rounds.personalize import FineTuneConfig, fine_tune
from client.rounds.training import bce_loss, predict
from shared_model import ModelConfig, build_model
from shared_model.params import model_to_arrays


@pytest.fixture(scope="module")
def site(synth_features) -> SiteData:
    return SiteData.load(synth_features, "mortality", "site-a")


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig())


def _val_loss(model, site: SiteData) -> float:
    pred = predict(model, site.subset("val"), torch.device("cpu"))
    return bce_loss(pred.labels, pred.probs)


def test_fine_tuning_keeps_the_best_validation_epoch_and_leaves_the_global_model(site) -> None:
    model = _model()
    before = model_to_arrays(model)
    result = fine_tune(site, model, FineTuneConfig(max_epochs=2, lr=1e-3), torch.device("cpu"))
    assert all(np.array_equal(before[k], v) for k, v in model_to_arrays(model).items())
    assert len(result.val_losses) == 3  # the global model, then each epoch
    assert result.chosen_epoch == int(np.argmin(result.val_losses))
    assert _val_loss(result.model, site) == pytest.approx(min(result.val_losses), abs=1e-6)
    assert _val_loss(result.model, site) <= result.val_losses[0]  # never worse than global


def test_fusion_fine_tuning_leaves_the_encoders_global(site) -> None:
    model = _model()
    result = fine_tune(site, model, FineTuneConfig(max_epochs=1, lr=1e-2, parts="fusion"),
                       torch.device("cpu"))
    before, after = model_to_arrays(model), model_to_arrays(result.model)
    encoders = [k for k in before if k.startswith("encoders.")]
    assert encoders and all(np.array_equal(before[k], after[k]) for k in encoders)
    if result.chosen_epoch:  # the fusion layers moved
        assert any(not np.array_equal(before[k], after[k]) for k in before if k not in encoders)


def test_zero_epochs_is_the_global_model_and_bad_settings_are_refused(site) -> None:
    model = _model()
    result = fine_tune(site, model, FineTuneConfig(max_epochs=0), torch.device("cpu"))
    assert result.chosen_epoch == 0
    with pytest.raises(MoeHealthInputError, match="parts 'head'"):
        FineTuneConfig(parts="head")
    with pytest.raises(MoeHealthInputError, match="lr > 0"):
        FineTuneConfig(lr=0)


def _released_model(path) -> dict[str, np.ndarray]:
    """A model file as the coordinator releases it: a round checkpoint with server-optimizer
    state beside the model."""
    from safetensors.numpy import save_file

    from shared_model.checkpoint import OPT_PREFIX

    arrays = model_to_arrays(_model())
    save_file({**arrays, OPT_PREFIX + "m.gate": np.zeros(3, np.float32)}, str(path))
    return arrays


def test_a_site_personalizes_the_released_model_and_keeps_it(site_yaml, tmp_path, capsys) -> None:
    import json

    from safetensors.numpy import load_file

    from moehealth.cli import main

    released = tmp_path / "round-008.safetensors"
    arrays = _released_model(released)
    before = released.read_bytes()
    out = tmp_path / "personal"
    assert main(["site", "personalize", str(site_yaml), "--model", str(released), "--out",
                 str(out), "--epochs", "2", "--lr", "1e-3", "--quiet"]) == 0
    assert "site hospital-a, mortality:" in capsys.readouterr().out
    report = json.loads((out / "report-mortality.json").read_text())
    assert report["chosen_epoch"] in (0, 1, 2) and len(report["val_losses"]) == 3
    assert report["settings"]["max_epochs"] == 2 and released.read_bytes() == before
    personal = load_file(str(out / "model-mortality-personalized.safetensors"))
    assert set(personal) == set(arrays)  # the model only, loadable by init-from
    if report["chosen_epoch"] == 0:
        assert all(np.array_equal(personal[k], arrays[k]) for k in arrays)


def test_a_released_model_of_another_configuration_is_one_line_before_data_work(
        site_yaml, tmp_path, capsys) -> None:
    from safetensors.numpy import save_file

    from moehealth.cli import main

    other = tmp_path / "other.safetensors"
    save_file({"gate.weight": np.zeros((2, 2), np.float32)}, str(other))
    for model, message in ((other, "does not fit this run's model"),
                           (tmp_path / "none.safetensors", "not found")):
        assert main(["site", "personalize", str(site_yaml), "--model", str(model), "--out",
                     str(tmp_path / "o"), "--quiet"]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "work").exists()  # refused before the site's data was prepared
    assert main(["site", "personalize", str(site_yaml), "--out", str(tmp_path / "o")]) == 2
    assert "needs --model" in capsys.readouterr().err
    (tmp_path / "config.json").write_text("[1, 2]")
    assert main(["site", "personalize", str(site_yaml), "--model", str(other), "--out",
                 str(tmp_path / "o"), "--run-config", str(tmp_path / "config.json")]) == 2
    assert "holds one JSON object" in capsys.readouterr().err
