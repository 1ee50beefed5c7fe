"""Per-client cache rules (REDLINE_CACHE_TENANTS): namespaces keep tenants' entries apart,
``allow`` limits the Cache-Control directives a key may send."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from redline.exceptions import ConfigError
from redline.serve.testing import HashingModel
from tests.serve._helpers import make_settings, running_app


def client_id(key: str) -> str:
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:12]


async def test_namespaces_and_allowed_directives(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        api_keys="k-acme-1,k-acme-2,k-beta",
        cache_tenants=(
            f"{client_id('k-acme-1')}?namespace=acme,{client_id('k-acme-2')}?namespace=acme "
            f"{client_id('k-beta')}?namespace=beta&allow=max-age"
        ),
    )

    def auth(key: str, control: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {key}"}
        if control:
            headers["Cache-Control"] = control
        return headers

    async with running_app(settings, HashingModel(8)) as (client, _):
        body = {"input": "shared text"}
        first = await client.post("/v1/embeddings", json=body, headers=auth("k-acme-1"))
        assert first.headers["x-cache"] == "miss"
        same = await client.post("/v1/embeddings", json=body, headers=auth("k-acme-2"))
        assert same.headers["x-cache"] == "hit"
        other = await client.post("/v1/embeddings", json=body, headers=auth("k-beta"))
        assert other.headers["x-cache"] == "miss"
        refused = await client.post("/v1/embeddings", json=body, headers=auth("k-beta", "no-cache"))
        assert refused.status_code == 403
        error = refused.json()["error"]
        assert error["code"] == "cache_control_refused"
        assert "allowed: max-age" in error["message"]
        allowed = await client.post(
            "/v1/embeddings", json=body, headers=auth("k-beta", "max-age=60")
        )
        assert allowed.headers["x-cache"] == "hit"
        free = await client.post("/v1/embeddings", json=body, headers=auth("k-acme-1", "no-cache"))
        assert free.headers["x-cache"] == "refresh"


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("key:ab", r"CLIENT\?namespace"),
        ("key:ab?namespace=bad/name", "namespace must be"),
        ("key:ab?allow=no-cache+sometimes", "unknown Cache-Control"),
        ("key:ab?color=red", "namespace or allow"),
    ],
)
def test_a_bad_tenant_rule_stops_the_server(tmp_path: Path, rule: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_settings(tmp_path, cache_tenants=rule)
