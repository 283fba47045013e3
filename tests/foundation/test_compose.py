"""docker-compose.yml stays a valid Compose file with every process the studio needs."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess

import pytest
import yaml

from app.templating import ROOT


def test_compose_file_is_valid_and_complete() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is missing in CI; .ci/run installs it")
        pytest.skip("docker-compose is not installed")
    env = dict(os.environ, SECRET_KEY="compose-check")
    result = subprocess.run(
        [tool, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    for name in ("postgres", "redis", "minio", "web", "worker", "beat", "emulator", "proxy"):
        assert name in services, f"docker-compose.yml has no {name} service"
    for name in ("postgres", "redis", "web", "emulator"):
        assert "healthcheck" in services[name], f"{name} has no health check"
    assert services["web"]["environment"]["MEDIA_BACKEND"] == "s3"


def test_compose_refuses_to_start_without_a_secret_key() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose is not installed")
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    result = subprocess.run(
        [tool, "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_compose_keeps_metric_samples_per_container_and_metrics_private() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose is not installed")
    env = dict(os.environ, SECRET_KEY="compose-check")
    result = subprocess.run(
        [tool, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    services = yaml.safe_load(result.stdout)["services"]
    for name in ("web", "worker", "beat"):
        folder = services[name]["environment"]["PROMETHEUS_MULTIPROC_DIR"]
        # Process ids repeat across containers: a shared folder would mix their samples.
        assert folder in services[name].get("tmpfs", []), f"{name} shares its metrics folder"
    assert services["worker"]["environment"]["WORKER_METRICS_PORT"] == "9100"
    assert "env -u PROMETHEUS_MULTIPROC_DIR" in " ".join(services["worker"]["healthcheck"]["test"])
    # The proxy runs the load balancer configuration the multi-host test proves.
    assert "deploy/haproxy.cfg" in str(services["proxy"]["volumes"])
    balancer = (ROOT / "deploy" / "haproxy.cfg").read_text()
    assert "http-request deny deny_status 404 if { path /metrics }" in balancer


def test_compose_web_trusts_only_its_own_proxy_for_the_client_address() -> None:
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.skip("docker-compose is not installed")
    env = dict(os.environ, SECRET_KEY="compose-check")
    result = subprocess.run(
        [tool, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    proxy_address = services["proxy"]["networks"]["default"]["ipv4_address"]
    for name in ("web", "worker", "beat"):
        assert services[name]["environment"]["TRUSTED_PROXIES"] == proxy_address
    subnet = config["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(proxy_address) in ipaddress.ip_network(subnet)
    # The trusted balancer must write the header itself: a client's own X-Forwarded-For is
    # replaced, never passed on (the right-most hop is then always the real client).
    balancer = (ROOT / "deploy" / "haproxy.cfg").read_text()
    assert "http-request set-header X-Forwarded-For %[src]" in balancer
