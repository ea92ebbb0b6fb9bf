"""Site YAML: validation with clear errors, node config for the SuperNode, offline site check."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from client.errors import MoeHealthInputError
from client.site.config import SiteConfig
from moehealth.cli import main


def _edit(path: Path, **changes) -> Path:
    config = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        target = config
        *parents, leaf = key.split("__")
        for p in parents:
            target = target[p]
        target[leaf] = value
    path.write_text(yaml.safe_dump(config))
    return path


def test_node_config_carries_identity_data_and_privacy(site_yaml: Path) -> None:
    from flwr.common.config import parse_config_args

    config = SiteConfig.load(site_yaml)
    node = parse_config_args([config.node_config_toml()])  # how flower-supernode reads it
    assert node == config.node_config()
    assert node["site-id"] == "hospital-a" and node["dp-enabled"] is True
    assert node["dp-target-epsilon"] == 3.0 and node["dp-planned-rounds"] == 5
    command = config.supernode_command()
    assert command[command.index("--host") + 1] == "127.0.0.1"  # nothing listens beyond loopback
    assert "--insecure" not in command and "--root-certificates" in command


@pytest.mark.parametrize("change, message", [
    ({"superlink__address": "no-port"}, "superlink.address must be HOST:PORT"),
    ({"data__samples_dir": "/nonexistent"}, "data.samples_dir '/nonexistent' is not a readable"),
    ({"privacy__target_epsilon": -1}, "DP setting 'privacy.target_epsilon': must be positive, got -1.0"),
    ({"superlink__root_certificates": "/nope.crt"}, "superlink.root_certificates '/nope.crt'"),
    ({"site_id": "bad id!"}, "site_id 'bad id!'"),
    ({"modalities": ["notes"]}, "modalities must include 'ehr'"),
    ({"privacy__enabeld": False}, "unknown key 'privacy.enabeld'; did you mean 'privacy.enabled'"),
    ({"runtime_prot": 9095}, "unknown key 'runtime_prot'; did you mean 'runtime_port'"),
    ({"superlink__adress": "x:1"}, "unknown key 'superlink.adress'; did you mean 'superlink.address'"),
    ({"privacy__target_epsilon": 0}, "DP setting 'privacy.target_epsilon': must be positive, got 0.0"),
    ({"privacy__target_epsilon": float("inf")}, "privacy.target_epsilon: inf trains without noise"),
    ({"min_cell_size": 0}, "min_cell_size must be an integer >= 1"),
    ({"superlink__client_certificate": "/etc/hosts"},
     "superlink.client_certificate and superlink.client_key go together"),
    ({"privacy__target_epsilon": float("nan")},
     "DP setting 'privacy.target_epsilon': expected a number, got nan"),
    ({"privacy__target_epsilon": True}, "DP setting 'privacy.target_epsilon': expected a number, got True"),
    ({"privacy__target_epsilon": "eight"}, "DP setting 'privacy.target_epsilon': could not convert"),
    ({"privacy__enabled": "yes"}, "DP setting 'privacy.enabled': expected true or false, got 'yes'"),
    ({"privacy__unit": "visit"}, "DP setting 'privacy.unit': must be one of patient, stay"),
    ({"runtime_port": "abc"}, "runtime_port must be a port number"),
    ({"modalities": ["ehr", "xray"]}, "modalities: unknown modality 'xray'"),
])
def test_bad_site_configs_name_the_problem(site_yaml: Path, change: dict, message: str) -> None:
    with pytest.raises(MoeHealthInputError, match="site.yaml: " + message.replace("(", r"\(")):
        SiteConfig.load(_edit(site_yaml, **change))


def test_site_check_offline(site_yaml: Path, capsys) -> None:
    assert main(["site", "check", "--offline", str(site_yaml)]) == 0
    out = capsys.readouterr().out
    assert "[ok] config: site hospital-a" in out and "[ok] data, cohort and features" in out
    assert "[ok] node key: EC secp384r1 key, SHA256:" in out
    (site_yaml.parent / "h.key").write_text("not a key")
    assert main(["site", "check", "--offline", str(site_yaml)]) == 2
    out = capsys.readouterr().out
    assert "[FAIL] node key: " in out and "data, cohort" not in out  # before any data work
    bad = _edit(site_yaml, superlink__address="nothing")
    assert main(["site", "check", "--offline", str(bad)]) == 2  # an input error, as elsewhere
    assert "[FAIL] config" in capsys.readouterr().out


def test_node_config_typos_are_refused(tmp_path: Path) -> None:
    from client.errors import SiteDataError
    from client.site.runtime import resolve_site

    with pytest.raises(SiteDataError, match="unknown key 'dp-enabeld'; did you mean 'dp-enabled'"):
        resolve_site({"site-id": "h", "data-dir": str(tmp_path), "dp-enabeld": True})


def test_declared_modalities_hold_for_prepared_samples(site_yaml: Path) -> None:
    from client.data.dataset import SiteData
    from client.site.setup import prepare_site
    from shared_model.modalities import MODALITIES, Modality

    config = SiteConfig.load(site_yaml)  # modalities: [ehr, notes]; the samples include X-rays
    data = SiteData.load(prepare_site(config, progress=False), "mortality", "h")
    available = data.inputs["available"].numpy()
    assert available[:, MODALITIES.index(Modality.CXR)].sum() == 0
    assert available[:, MODALITIES.index(Modality.NOTES)].sum() > 0


def test_a_client_certificate_with_the_wrong_key_is_one_line_before_data_work(
        site_yaml: Path, tmp_path: Path, capsys) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def key_pem(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    cert_key, other_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hospital-a")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(cert_key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(cert_key, hashes.SHA256()))
    (tmp_path / "h.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "other.key").write_bytes(key_pem(other_key))
    bad = _edit(site_yaml, superlink__client_certificate=str(tmp_path / "h.crt"),
                superlink__client_key=str(tmp_path / "other.key"))
    assert main(["site", "check", "--offline", str(bad)]) == 2
    out = capsys.readouterr().out
    assert "[FAIL] TLS client certificate: " in out and "do not load as a pair" in out
    assert "Traceback" not in out and "data, cohort" not in out
