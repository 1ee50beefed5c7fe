"""deploy/: the compose file and Kubernetes manifests parse with the expected keys, and the
nginx.conf they use is exactly what `redline nginx-config` renders and passes `nginx -t`."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from redline.cli import build_app
from redline.lb import check_nginx_conf

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def readme_command() -> list[str]:
    """The `redline nginx-config ...` command documented in deploy/README.md."""
    text = (DEPLOY / "README.md").read_text()
    block = re.search(r"```sh\n(redline nginx-config .*?)\n```", text, re.S)
    assert block is not None
    return shlex.split(block.group(1).replace("\\\n", " "))[1:]


def test_deploy_nginx_conf_is_the_rendered_one() -> None:
    args = readme_command()
    output = args.index("-o")
    assert args[output + 1] == "deploy/nginx.conf"
    result = CliRunner().invoke(build_app(), args[:output] + args[output + 2 :])
    assert result.exit_code == 0, result.output
    assert result.output == (DEPLOY / "nginx.conf").read_text()


def test_deploy_nginx_conf_passes_nginx_t(nginx_binary: str, tmp_path: Path) -> None:
    text = (DEPLOY / "nginx.conf").read_text()
    # nginx -t resolves upstream names at load time; compose names exist only inside Docker,
    # so check the same config with loopback addresses and a private temp directory.
    names = re.findall(r"server (replica-\d+):8000", text)
    assert names == ["replica-1", "replica-2", "replica-3"]
    for i, name in enumerate(names):
        text = text.replace(f"{name}:8000", f"127.0.0.1:{18000 + i}")
    text = text.replace("/tmp/", f"{tmp_path}/").replace("0.0.0.0:8080", "127.0.0.1:18080")
    (tmp_path / "nginx.conf").write_text(text)
    check_nginx_conf(nginx_binary, tmp_path)


def test_compose_file_wires_nginx_replicas_and_redis() -> None:
    compose: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "replica-1", "replica-2", "replica-3", "nginx"}
    for name in ("replica-1", "replica-2", "replica-3"):
        replica = services[name]
        assert replica["command"][:2] == ["redline", "serve"]
        assert "--port" in replica["command"]
        assert "8000" in replica["command"]
        assert replica["environment"]["REDLINE_CACHE_URL"].startswith("redis://redis:6379")
        assert "/ready" in " ".join(replica["healthcheck"]["test"])
        assert replica["depends_on"]["redis"]["condition"] == "service_healthy"
    nginx = services["nginx"]
    assert "./nginx.conf:/etc/redline/nginx.conf:ro" in nginx["volumes"]
    assert nginx["command"] == ["nginx", "-c", "/etc/redline/nginx.conf"]
    assert "8080:8080" in nginx["ports"]
    assert set(nginx["depends_on"]) == {"replica-1", "replica-2", "replica-3"}
    assert (
        DEPLOY / compose["services"]["replica-1"]["build"]["dockerfile"].split("/")[-1]
    ).exists()


def test_kubernetes_manifests_have_probes_service_and_redis() -> None:
    docs = [
        doc
        for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
    ]
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert set(by_kind) == {
        ("Deployment", "redline"),
        ("Service", "redline"),
        ("Deployment", "redis"),
        ("Service", "redis"),
    }
    deployment = by_kind["Deployment", "redline"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["ports"][0]["containerPort"] == 8000
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["REDLINE_CACHE_URL"].startswith("redis://redis:6379")
    service = by_kind["Service", "redline"]
    assert service["spec"]["selector"] == labels
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    redis_service = by_kind["Service", "redis"]
    assert redis_service["spec"]["ports"][0]["port"] == 6379
    redis_labels = by_kind["Deployment", "redis"]["spec"]["template"]["metadata"]["labels"]
    assert redis_service["spec"]["selector"] == redis_labels


def test_dockerfile_installs_the_cpu_torch_before_anything_can_pull_another() -> None:
    lines = [line.strip() for line in (DEPLOY / "Dockerfile").read_text().splitlines()]
    runs = [line for line in lines if line.startswith("RUN pip install")]
    assert runs, "no pip install in deploy/Dockerfile"
    # The first install asks for the local CPU build only a wheel in deploy/wheels provides...
    assert '"torch==2.13.0+cpu"' in runs[0]
    assert "--find-links /wheels" in runs[0]
    assert "COPY deploy/wheels /wheels" in lines
    # ...and every later install is held to the same torch by constraints.txt.
    constraints = (DEPLOY.parent / "constraints.txt").read_text().split()
    assert "torch==2.13.0" in constraints
    assert all("-c constraints.txt" in run for run in runs[1:])
    assert len(runs) >= 2
