"""TLS and mutual TLS (core/tls.py, docs/security.md), over real servers and certificates made here by the
code `recsys tls init` runs (core/dev_certs.py).

A serve()-based server of this module's own with TLS (client certificates not required), and a retrieval,
ranking and orchestrator of this module's own with mutual TLS and authentication on, on the session
stack's database and artifacts.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg.rows import dict_row
from typer.testing import CliRunner

from core import tls
from core.config import ROOT, Settings
from core.dev_certs import DevCerts, make_dev_certs
from protos import internal_pb2 as ipb
from protos import internal_pb2_grpc as ipb_grpc
from protos import recsys_pb2 as pb
from protos import recsys_pb2_grpc as pb_grpc
from recsys import processes
from recsys.cli import app
from storage.api_keys import create_key
from tests.conftest import free_port, metrics_addrs


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    return make_dev_certs(tmp_path_factory.mktemp("tls") / "stack")


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    """Another CA's certificates: nothing of the stack's trusts them."""
    return make_dev_certs(tmp_path_factory.mktemp("tls") / "other")


def client(certs: DevCerts, ca: DevCerts | None = None, with_certificate: bool = True) -> Settings:
    """A client's settings: trusting `ca` (default: the same CA), presenting certs' client certificate."""
    pair = {"tls_client_cert_file": str(certs.client_cert), "tls_client_key_file": str(certs.client_key)}
    return Settings(tls_ca_file=str((ca or certs).ca), **(pair if with_certificate else {}))


def server(certs: DevCerts, client_auth: str = "off") -> Settings:
    return replace(client(certs), tls_cert_file=str(certs.server_cert), tls_key_file=str(certs.server_key),
                   tls_client_auth=client_auth)


def health_check(addr: str, settings: Settings) -> grpc.StatusCode:
    try:
        with tls.channel(addr, settings) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return exc.code()


# ---------------------------------------------------------------------------- settings and certificates


def test_tls_settings_come_from_the_environment_as_absolute_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    for name, value in {"RECSYS_TLS_CERT_FILE": "certs/server.pem", "RECSYS_TLS_KEY_FILE": "/k/server.key",
                        "RECSYS_TLS_CA_FILE": "certs/ca.pem", "RECSYS_TLS_CLIENT_AUTH": "REQUIRE",
                        "RECSYS_TLS_CLIENT_CERT_FILE": "c.pem", "RECSYS_TLS_CLIENT_KEY_FILE": "c.key"}.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert settings.tls_cert_file == str(ROOT / "certs/server.pem") and settings.tls_key_file == "/k/server.key"
    assert settings.tls_client_auth == "require" and settings.tls_client_key_file == str(ROOT / "c.key")
    for name, value in settings.to_env().items():  # what a child process is handed reads back the same
        monkeypatch.setenv(name, value)
    assert Settings.from_env() == settings
    monkeypatch.delenv("RECSYS_TLS_CERT_FILE")
    assert Settings.from_env().tls_cert_file == ""  # unset: plaintext, not the current directory


def test_dev_certificates_name_loopback_and_keep_their_keys_private(certs: DevCerts, tmp_path: Path) -> None:
    from cryptography import x509

    sans = x509.load_pem_x509_certificate(certs.server_cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert stat.S_IMODE(certs.server_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(certs.client_key.stat().st_mode) == 0o600
    assert not (certs.dir / "ca.key").exists()  # nothing more can be signed with this CA
    with pytest.raises(FileExistsError, match="--force"):
        make_dev_certs(certs.dir)
    with pytest.raises(ValueError, match="--host"):
        make_dev_certs(tmp_path / "x", ["localhost", " "])


@pytest.mark.parametrize(("change", "says"), [
    ({"tls_key_file": ""}, "RECSYS_TLS_CERT_FILE={cert} is set but RECSYS_TLS_KEY_FILE is not"),
    ({"tls_cert_file": ""}, "RECSYS_TLS_KEY_FILE={key} is set but RECSYS_TLS_CERT_FILE is not"),
    ({"tls_key_file": "{dir}/missing.key"}, "RECSYS_TLS_KEY_FILE={dir}/missing.key: cannot read it (No such file"),
    ({"tls_cert_file": "{dir}/server.key"}, "RECSYS_TLS_CERT_FILE={dir}/server.key: no PEM certificate in it"),
    ({"tls_key_file": "{dir}/server.pem"}, "RECSYS_TLS_KEY_FILE={dir}/server.pem: not an unencrypted PEM private key"),
    ({"tls_key_file": "{dir}/client.key"}, "RECSYS_TLS_KEY_FILE={dir}/client.key: not the key of the certificate in "
                                           "RECSYS_TLS_CERT_FILE={cert}"),
    ({"tls_client_auth": "yes"}, "RECSYS_TLS_CLIENT_AUTH='yes': use off or require"),
    ({"tls_client_auth": "require", "tls_ca_file": ""}, "RECSYS_TLS_CLIENT_AUTH=require needs RECSYS_TLS_CA_FILE"),
    ({"tls_client_auth": "require", "tls_client_cert_file": "", "tls_client_key_file": ""},
     "RECSYS_TLS_CLIENT_AUTH=require needs RECSYS_TLS_CLIENT_CERT_FILE"),
    ({"tls_client_key_file": ""}, "RECSYS_TLS_CLIENT_CERT_FILE={dir}/client.pem is set but RECSYS_TLS_CLIENT_KEY_FILE"),
    ({"tls_cert_file": "", "tls_key_file": ""},
     "RECSYS_TLS_CA_FILE={dir}/ca.pem is set but RECSYS_TLS_CERT_FILE is not"),
])
def test_a_tls_setting_that_cannot_work_names_the_variable_and_the_file(
    certs: DevCerts, change: dict[str, str], says: str,
) -> None:
    values = {"dir": certs.dir, "cert": certs.server_cert, "key": certs.server_key}
    settings = replace(server(certs), **{k: v.format(**values) for k, v in change.items()})
    with pytest.raises(tls.TlsConfigError) as err:
        tls.server_tls(settings)
    assert str(err.value).startswith(says.format(**values)), err.value
    assert "\n" not in str(err.value)


def test_recsys_serve_refuses_to_start_in_one_line(certs: DevCerts) -> None:
    env = {"PATH": "/usr/bin:/bin", "RECSYS_TLS_CERT_FILE": str(certs.server_cert),
           "RECSYS_TLS_KEY_FILE": str(certs.dir / "missing.key")}
    done = subprocess.run([sys.executable, "-m", "recsys.cli", "serve", "ranking"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"RECSYS_TLS_KEY_FILE={certs.dir}/missing.key: cannot read it (No such file or " \
                                  "directory)", done.stderr


def test_the_log_says_tls_on_or_warns_of_plaintext_beyond_loopback(
    certs: DevCerts, caplog: pytest.LogCaptureFixture,
) -> None:
    async def bind(addr: str, server_tls: tls.ServerTls | None) -> None:
        s = grpc.aio.server()
        tls.listen(s, addr, server_tls)
        await s.stop(None)

    caplog.set_level(logging.INFO, logger="core.tls")
    asyncio.run(bind("127.0.0.1:0", tls.server_tls(server(certs, "require"))))
    asyncio.run(bind("127.0.0.1:0", tls.server_tls(server(certs))))
    asyncio.run(bind("127.0.0.1:0", None))  # loopback: plaintext is the developer's default, no warning
    said = [r for r in caplog.records if r.name == "core.tls"]
    assert [r.getMessage() for r in said] == ["TLS on 127.0.0.1:0 (client certificates required)",
                                                        "TLS on 127.0.0.1:0 (client certificates not required)"]
    asyncio.run(bind("0.0.0.0:0", None))  # bound and never started: nothing accepts on it
    warning = [r for r in caplog.records if r.name == "core.tls"][-1]
    assert warning.levelno == logging.WARNING
    assert warning.getMessage().startswith("plaintext gRPC on 0.0.0.0:0, which is not a loopback address")


# ---------------------------------------------------------------------------- a TLS server (no client certificates)

TLS_SERVER = """
import asyncio, logging, sys
from core.config import Settings
from core.grpc_server import serve
from core.tls import server_tls

logging.basicConfig(level=logging.INFO)
asyncio.run(serve(sys.argv[1], ["Ranking"], lambda s: None, tls=server_tls(Settings.from_env())))
"""


@pytest.fixture(scope="module")
def tls_server(certs: DevCerts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(its address, its log): a serve() server in a process of its own, its TLS from RECSYS_TLS_*."""
    addr = f"127.0.0.1:{free_port()}"
    log = tmp_path_factory.mktemp("tls-server") / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", TLS_SERVER, addr], cwd=ROOT, stdout=out, stderr=out,
                                env={"PATH": "/usr/bin:/bin", **{k: v for k, v in certs.env().items()
                                                                  if "CLIENT" not in k}})
    try:
        deadline = time.monotonic() + 60  # a loaded machine takes seconds to import grpc and the protos
        while not processes.is_serving(addr, 0.5, settings=client(certs)):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield addr, log
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_client_trusting_the_ca_gets_an_answer(certs: DevCerts, tls_server: tuple[str, Path]) -> None:
    addr, log = tls_server
    assert health_check(addr, client(certs, with_certificate=False)) == grpc.StatusCode.OK
    port = addr.rsplit(":", 1)[1]
    assert health_check(f"localhost:{port}", client(certs)) == grpc.StatusCode.OK  # a DNS SAN as well as the IP
    assert f"TLS on {addr} (client certificates not required)" in log.read_text()


def test_plaintext_to_a_tls_server_fails(tls_server: tuple[str, Path]) -> None:
    assert health_check(tls_server[0], Settings()) == grpc.StatusCode.UNAVAILABLE
    assert not processes.is_serving(tls_server[0], 2.0)


def test_a_client_trusting_another_ca_fails(certs: DevCerts, other: DevCerts, tls_server: tuple[str, Path]) -> None:
    assert health_check(tls_server[0], client(certs, ca=other)) == grpc.StatusCode.UNAVAILABLE


# ---------------------------------------------------------------------------- a stack with mutual TLS


@pytest.fixture(scope="module")
def mtls(stack: Settings, certs: DevCerts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Retrieval, ranking and orchestrator requiring client certificates, with authentication on: under mutual
    TLS the service token and API keys are still required (docs/security.md)."""
    settings = replace(
        server(certs, "require"), **{f: getattr(stack, f) for f in (
            "database_url", "redis_url", "data_dir", "artifacts_dir", "config_path", "feast_project",
            "worker_addr")},
        auth="on", service_token=secrets.token_urlsafe(16), var_dir=tmp_path_factory.mktemp("mtls") / "var",
        orchestrator_addr=f"127.0.0.1:{free_port()}", retrieval_addr=f"127.0.0.1:{free_port()}",
        ranking_addr=f"127.0.0.1:{free_port()}", **metrics_addrs())
    shutil.copytree(stack.var_dir / "feast", settings.var_dir / "feast")  # the stack's Feast registry, for ranking
    started: list[str] = []
    try:
        for name in ("retrieval", "ranking", "orchestrator"):  # each waits for a health check over mutual TLS
            processes.start(settings, name)
            started.append(name)
        yield settings
    finally:
        for name in reversed(started):
            processes.stop(settings, name)


@pytest.fixture(scope="module")
def api_key(mtls: Settings) -> str:
    with psycopg.connect(mtls.database_url, autocommit=True, row_factory=dict_row) as conn:
        return create_key(conn, "read", "test-tls")[1]


def _recommend(settings: Settings, key: str) -> Callable[[], pb.RecommendResponse]:
    def call() -> pb.RecommendResponse:
        with tls.channel(settings.orchestrator_addr, settings) as channel:
            return pb_grpc.RecommenderStub(channel).Recommend(pb.RecommendRequest(
                user_id="1", k=5, context=pb.Context(surface=f"tls-{secrets.token_hex(4)}")), timeout=10,
                metadata=[("authorization", f"Bearer {key}")])
    return call


def test_the_orchestrator_reaches_retrieval_and_ranking_over_mutual_tls(mtls: Settings, api_key: str) -> None:
    answer = _recommend(mtls, api_key)()
    assert len(answer.items) == 5
    assert not answer.degraded, answer.degraded_reasons  # retrieval and ranking answered it over mutual TLS
    assert all(f"TLS on {processes.address(mtls, name)} (client certificates required)"
               in processes.log_file(mtls, name).read_text() for name in ("retrieval", "ranking", "orchestrator"))


def test_without_a_ca_signed_client_certificate_every_server_refuses(
    mtls: Settings, certs: DevCerts, other: DevCerts,
) -> None:
    foreign = replace(client(certs), tls_client_cert_file=str(other.client_cert),
                      tls_client_key_file=str(other.client_key))  # trusts the servers; its certificate is not ours
    for name in ("retrieval", "ranking", "orchestrator"):
        addr = processes.address(mtls, name)
        assert health_check(addr, mtls) == grpc.StatusCode.OK, name
        assert health_check(addr, client(certs, with_certificate=False)) == grpc.StatusCode.UNAVAILABLE, name
        assert health_check(addr, foreign) == grpc.StatusCode.UNAVAILABLE, name
        assert health_check(addr, Settings()) == grpc.StatusCode.UNAVAILABLE, name  # plaintext


def test_a_client_certificate_does_not_replace_the_service_token(mtls: Settings) -> None:
    request = ipb.RetrieveRequest(k=5, sources=[ipb.SourceRequest(name="popular", k=5)])
    with tls.channel(mtls.retrieval_addr, mtls) as channel:
        retrieval = ipb_grpc.RetrievalStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            retrieval.Retrieve(request, timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        found = retrieval.Retrieve(request, timeout=5, metadata=[("authorization", f"Bearer {mtls.service_token}")])
        assert len(found.candidates.item_ids) == 5


def test_the_cli_talks_to_a_tls_stack(mtls: Settings, api_key: str) -> None:
    env = {**mtls.to_env(), "RECSYS_API_KEY": api_key}
    result = CliRunner().invoke(app, ["recommend", "1", "--k", "3"], env=env)
    assert result.exit_code == 0, result.output
    assert "Recommendations for user 1" in result.stdout and "degraded" not in result.stdout
    result = CliRunner().invoke(app, ["status"], env=env)
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()[1:]}
    assert rows["orchestrator"] == rows["retrieval"] == rows["ranking"] == "ready", result.stdout
