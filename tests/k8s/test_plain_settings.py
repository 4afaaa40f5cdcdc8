"""Plain settings (`config`) reach the services as the text they parse, in the ConfigMap and in
the migration hook's inline environment alike."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from ecosort_auth.config import Settings as AuthSettings
from ecosort_k8scheck.charts import of_kind


def test_large_numbers_in_a_values_file_stay_integers(
    render_with: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Helm reads a values file's numbers as floats; written back with toString, a million and up
    came out as "1e+06", which the services' integer settings refuse: auth would not start."""
    values_file = """
config:
  KAKAO_CLIENT_ID: kakao-rest-key
  KAKAO_APP_ID: 1234567
  AUTH_REFRESH_TOKEN_TTL_SECONDS: 5184000
  AUTH_STATE_TTL_SECONDS: 600
"""
    overrides = helm.values_from_yaml(values_file)
    manifests = render_with("auth", "prod", overrides)
    (config_map,) = of_kind(manifests, "ConfigMap")
    (job,) = of_kind(manifests, "Job")
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    inline = {e["name"]: e["value"] for e in migrate["env"] if "value" in e}
    expected = {
        "KAKAO_APP_ID": "1234567",
        "AUTH_REFRESH_TOKEN_TTL_SECONDS": "5184000",
        "AUTH_STATE_TTL_SECONDS": "600",
    }
    for name, text in expected.items():
        assert config_map["data"][name] == text
        assert inline[name] == text
    for name in overrides["config"]:
        monkeypatch.setenv(name, config_map["data"][name])
    settings = AuthSettings()
    assert settings.kakao_app_id == 1234567
    assert settings.auth_refresh_token_ttl_seconds == 5184000
