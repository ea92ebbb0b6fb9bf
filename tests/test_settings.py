"""Each DP setting is declared once (client/privacy/settings.py SETTINGS): the dataclass, the
node-config keys, the site YAML's keys, pyproject.toml's dp.* entries and README's table all
follow from that declaration."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from client.privacy.settings import (
    NODE_CONFIG,
    RUN_CONFIG,
    SETTINGS,
    SITE_YAML,
    DPSettings,
    node_config_keys,
    settings_markdown,
)
from client.site.runtime import resolve_site
from shared_model.run_config import key_comments, pyproject_defaults

ROOT = Path(__file__).resolve().parents[1]
CHANGED = {"enabled": True, "unit": "stay", "target-epsilon": 3.0, "delta": 1e-6,
           "max-grad-norm": 0.5, "noise-multiplier": 1.5, "planned-rounds": 4,
           "public-weight": 7, "share-evaluation": True, "batch-size": 128, "train": "fusion"}


def test_the_dataclass_has_one_field_per_declared_setting() -> None:
    assert [f.name for f in fields(DPSettings)] == [s.attribute for s in SETTINGS]
    assert DPSettings() == DPSettings(**{s.attribute: s.default for s in SETTINGS})
    assert set(CHANGED) == {s.name for s in SETTINGS}, "CHANGED must cover every setting"


@pytest.mark.parametrize("spelling", [SITE_YAML, NODE_CONFIG, RUN_CONFIG], ids=lambda s: s.where)
def test_every_setting_reaches_its_field_in_every_spelling(spelling) -> None:
    written = {spelling.key(name): value for name, value in CHANGED.items()}
    settings = DPSettings.from_mapping(written, spelling)
    assert {s.name: getattr(settings, s.attribute) for s in SETTINGS} == CHANGED


def test_node_config_keys_round_trip_and_are_accepted_by_the_client(tmp_path: Path) -> None:
    settings = DPSettings.from_mapping({NODE_CONFIG.key(n): v for n, v in CHANGED.items()},
                                       NODE_CONFIG)
    assert set(settings.node_config()) == set(node_config_keys())
    assert DPSettings.from_mapping(settings.node_config(), NODE_CONFIG) == settings
    (tmp_path / "features").mkdir()
    (tmp_path / "features" / "manifest.json").write_text("{}")
    site = resolve_site({"site-id": "h", "data-dir": str(tmp_path),
                         "feature-dir": str(tmp_path / "features"), **settings.node_config()})
    assert site.dp == settings


def test_pyproject_dp_entries_are_the_declared_defaults_and_help() -> None:
    defaults, comments = pyproject_defaults(), key_comments()
    assert DPSettings.from_mapping(defaults) == DPSettings()
    for setting in SETTINGS:
        key = RUN_CONFIG.key(setting.name)
        if setting.derived_when:
            assert defaults[key] in setting.derived_when, key
        else:
            assert defaults[key] == setting.default, key
        assert comments[key] == setting.help, key


def test_readme_table_is_the_generated_one() -> None:
    assert settings_markdown() in (ROOT / "README.md").read_text(), (
        "README's DP settings table differs from settings_markdown(): paste the output of "
        "`moehealth config --site`")
