"""infra/local/stack.sh for real: PostgreSQL, MLflow and Prefect servers on Postgres, a
process worker, all on loopback, state in one folder; runs and flow runs land in Postgres."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STACK = REPO / "infra" / "local" / "stack.sh"

pytestmark = pytest.mark.infra


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _has_postgres() -> bool:
    return any(Path("/usr/lib/postgresql").glob("*/bin/postgres"))


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def stack():
    if not _has_postgres() and (os.geteuid() != 0 or not shutil.which("apt-get")):
        pytest.skip("no PostgreSQL server and no root to apt-get install it")
    # Not under pytest's tmp folder: as root, Postgres runs as its own user, which must be
    # able to reach the state folder.
    home = Path(tempfile.mkdtemp(prefix="mmaux-infra-"))
    home.chmod(0o755)
    env = {
        **os.environ,
        "MMAUX_INFRA_HOME": str(home),
        "MMAUX_PG_PORT": str(_free_port()),
        "MMAUX_MLFLOW_PORT": str(_free_port()),
        "MMAUX_PREFECT_PORT": str(_free_port()),
        "MMAUX_WORKERS": "1",
        "MMAUX_POOL": "test-pool",
    }
    up = subprocess.run(["bash", str(STACK), "up"], env=env, capture_output=True, text=True)
    try:
        assert up.returncode == 0, up.stderr[-4000:]
        exports = subprocess.run(
            ["bash", str(STACK), "env"], env=env, capture_output=True, text=True, check=True
        ).stdout
        urls = dict(
            line.removeprefix("export ").split("=", 1) for line in exports.strip().splitlines()
        )
        yield {"home": home, "env": env, "urls": urls}
    finally:
        subprocess.run(["bash", str(STACK), "down"], env=env, capture_output=True, text=True)
        shutil.rmtree(home, ignore_errors=True)


def _pg(stack, db: str, sql: str) -> list[tuple]:
    import psycopg2

    with (
        psycopg2.connect(f"{stack['urls']['MMAUX_POSTGRES_URL']}/{db}") as conn,
        conn.cursor() as cur,
    ):
        cur.execute(sql)
        return cur.fetchall()


def test_servers_bind_to_loopback_and_keep_secrets_out_of_git(stack):
    env = stack["env"]
    for key in ("MMAUX_PG_PORT", "MMAUX_MLFLOW_PORT", "MMAUX_PREFECT_PORT"):
        port = int(env[key])
        assert _listening(port)
        out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True)
        if out.returncode == 0:  # iproute2 present: every listener is on 127.0.0.1
            addrs = {line.split()[3].rsplit(":", 1)[0] for line in out.stdout.splitlines()}
            assert addrs == {"127.0.0.1"}, addrs
    secrets = stack["home"] / "secrets.env"
    assert secrets.stat().st_mode & 0o077 == 0  # owner-only
    password = secrets.read_text().split("=", 1)[1].strip()
    assert len(password) >= 32
    tracked = subprocess.run(
        ["git", "grep", "-l", password], cwd=REPO, capture_output=True, text=True
    )
    assert tracked.stdout == ""


def test_an_mlflow_run_is_stored_in_postgres_with_proxied_artifacts(stack, tmp_path):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=stack["urls"]["MLFLOW_TRACKING_URI"])
    exp = client.create_experiment("infra-test")
    run = client.create_run(exp, run_name="on-postgres")
    client.log_metric(run.info.run_id, "val/macro_f1", 0.5, step=1)
    note = tmp_path / "note.txt"
    note.write_text("proxied\n")
    client.log_artifact(run.info.run_id, str(note))
    client.set_terminated(run.info.run_id)

    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # through the server
    stored = list((stack["home"] / "artifacts").rglob("note.txt"))
    assert len(stored) == 1 and stored[0].read_text() == "proxied\n"
    rows = _pg(stack, "mlflow", f"SELECT status FROM runs WHERE run_uuid = '{run.info.run_id}'")
    assert rows == [("FINISHED",)]
    metric = _pg(stack, "mlflow", "SELECT value FROM metrics WHERE key = 'val/macro_f1'")
    assert metric == [(0.5,)]


def test_a_deployment_runs_on_the_stacks_worker(stack, tmp_path):
    env = {**stack["env"], "PREFECT_API_URL": stack["urls"]["PREFECT_API_URL"]}
    env.pop("PREFECT_HOME", None)
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello.py").write_text(
        textwrap.dedent(
            """
            import os
            from prefect import flow

            @flow(log_prints=True)
            def hello(name: str) -> str:
                print("tracking at", os.environ.get("MLFLOW_TRACKING_URI"))
                return f"hello {name}"
            """
        )
    )
    script = textwrap.dedent(
        f"""
        from prefect import flow
        from prefect.deployments import run_deployment

        flow.from_source({str(src)!r}, "hello.py:hello").deploy(
            name="infra-test", work_pool_name="test-pool"
        )
        run = run_deployment("hello/infra-test", parameters={{"name": "stack"}}, timeout=300)
        print(run.id, run.state.type.value)
        """
    )
    out = subprocess.run(
        [str(REPO / ".venv" / "bin" / "python"), "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    run_id, state = out.stdout.strip().splitlines()[-1].split()
    assert state == "COMPLETED"
    rows = _pg(stack, "prefect", f"SELECT state_type FROM flow_run WHERE id = '{run_id}'")
    assert rows == [("COMPLETED",)]
    worker_log = (stack["home"] / "logs" / "worker-1.log").read_text()
    assert run_id in worker_log  # the stack's worker ran it, not this process


def test_down_stops_everything_and_up_resumes_the_same_state(stack):
    env = stack["env"]
    before = _pg(stack, "mlflow", "SELECT count(*) FROM runs")
    subprocess.run(["bash", str(STACK), "down"], env=env, check=True, capture_output=True)
    deadline = time.time() + 30
    ports = [int(env[k]) for k in ("MMAUX_PG_PORT", "MMAUX_MLFLOW_PORT", "MMAUX_PREFECT_PORT")]
    while any(map(_listening, ports)) and time.time() < deadline:
        time.sleep(0.5)
    assert not any(map(_listening, ports))
    status = subprocess.run(["bash", str(STACK), "status"], env=env, capture_output=True, text=True)
    assert status.returncode != 0 and "stopped" in status.stdout
    up = subprocess.run(["bash", str(STACK), "up"], env=env, capture_output=True, text=True)
    assert up.returncode == 0, up.stderr[-4000:]
    assert _pg(stack, "mlflow", "SELECT count(*) FROM runs") == before


def test_a_training_run_tracks_into_the_stacks_mlflow(stack, make_cfg, monkeypatch):
    from mmaux.config import TrackingConfig
    from mmaux.tracking.callback import MlflowCallback
    from mmaux.tracking.results import log_config, log_result
    from mmaux.tracking.service import MlflowService
    from mmaux.training import train

    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack["urls"]["MLFLOW_TRACKING_URI"])
    cfg = make_cfg("train.epochs=1")
    cfg.tracking = TrackingConfig(experiment="mmaux-infra")  # the URI from the environment only
    service = MlflowService(cfg.tracking)
    assert service.tracking_uri == stack["urls"]["MLFLOW_TRACKING_URI"]
    with service.run("train") as run:
        log_config(cfg)
        result = train(cfg, callbacks=[MlflowCallback(service)])
        log_result(result)
    run_id = run.info.run_id
    keys = {
        k for (k,) in _pg(stack, "mlflow", f"SELECT key FROM metrics WHERE run_uuid = '{run_id}'")
    }
    assert any(k.startswith("test") for k in keys) and any(k.startswith("train") for k in keys)
    assert _pg(stack, "mlflow", f"SELECT status FROM runs WHERE run_uuid = '{run_id}'") == [
        ("FINISHED",)
    ]
    artifacts = stack["home"] / "artifacts"
    assert any(p.name == "metrics.json" for p in artifacts.rglob("*")), "no proxied artifacts"


def test_mlflow_basic_auth_refuses_anonymous_requests_and_admits_the_admin(tmp_path):
    if not _has_postgres():
        pytest.skip("no PostgreSQL server")
    home = Path(tempfile.mkdtemp(prefix="mmaux-infra-auth-"))
    home.chmod(0o755)
    port = _free_port()
    env = {
        **os.environ,
        "MMAUX_INFRA_HOME": str(home),
        "MMAUX_PG_PORT": str(_free_port()),
        "MMAUX_MLFLOW_PORT": str(port),
        "MMAUX_PREFECT_PORT": str(_free_port()),
        "MMAUX_WORKERS": "0",
        "MMAUX_MLFLOW_AUTH": "1",
    }
    try:
        up = subprocess.run(["bash", str(STACK), "up"], env=env, capture_output=True, text=True)
        assert up.returncode == 0, up.stderr[-4000:]
        exports = subprocess.run(
            ["bash", str(STACK), "env"], env=env, capture_output=True, text=True, check=True
        ).stdout
        creds = dict(
            line.removeprefix("export ").split("=", 1) for line in exports.strip().splitlines()
        )
        assert creds["MLFLOW_TRACKING_USERNAME"] == "admin"
        api = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1"
        with pytest.raises(urllib.error.HTTPError) as anonymous:
            urllib.request.urlopen(api, timeout=30)
        assert anonymous.value.code == 401
        wrong = urllib.request.Request(
            api, headers={"Authorization": "Basic " + base64.b64encode(b"admin:nope").decode()}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(wrong, timeout=30)
        assert refused.value.code == 401

        script = (
            "import mlflow\n"
            "c = mlflow.MlflowClient()\n"
            "run = c.create_run(c.create_experiment('auth-test'))\n"
            "c.set_terminated(run.info.run_id)\n"
            "print(c.get_run(run.info.run_id).info.status)\n"
        )
        out = subprocess.run(
            [str(REPO / ".venv" / "bin" / "python"), "-c", script],
            env={**env, **creds},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip().splitlines()[-1] == "FINISHED"
        assert "MLFLOW_ADMIN_PASSWORD" in (home / "secrets.env").read_text()
        assert (home / "mlflow-auth.ini").stat().st_mode & 0o077 == 0
    finally:
        subprocess.run(["bash", str(STACK), "down"], env=env, capture_output=True, text=True)
        shutil.rmtree(home, ignore_errors=True)
