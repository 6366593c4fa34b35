"""The team's tracking setup (deploy/kuberay/mlflow.yaml) on one machine: a throwaway PostgreSQL cluster and `mlflow
server` on it (pipelines.tracking_server), and the lifecycle through it: a search of 4 trials, 2 at a time, crowns a
champion; Serve answers a clip with models:/alt@champion; evaluation loads it. Real PostgreSQL, MLflow, Ray Tune,
Ray Serve and Ray Data. Outside CI, the tests are skipped where PostgreSQL is not installed; in CI that fails."""

from __future__ import annotations

import http.client
from pathlib import Path
from urllib.parse import urlparse

import psycopg
import pyarrow.parquet as pq
import pytest
import requests
from mlflow.tracking import MlflowClient

from alt_core.errors import ALTError
from pipelines import tracking_server
from pipelines.evaluate import evaluate
from pipelines.serve import DEFAULT_CONFIG, deploy, serve_config, stop_app
from pipelines.tracking_server import group_alive, local_postgres, mlflow_server, postgres_bin_dir
from pipelines.tune import SearchOptions, tune_search
from tests.helpers import (
    SEEN,
    cluster_tracking_uri,
    free_port,
    mlflow_server_command,
    require,
    search_job,
    write_space,
)


def postgres_missing() -> str | None:
    try:
        postgres_bin_dir()
    except ALTError as err:
        return str(err)
    return None


@pytest.fixture(scope="module")
def tracking(tmp_path_factory) -> dict:
    """PostgreSQL and an MLflow tracking server on it, with the manifest's allowed Host headers; both are stopped
    (every process of both process groups gone) after the module."""
    missing = postgres_missing()
    require(missing is None, missing or "")
    root = tmp_path_factory.mktemp("tracking")
    command = mlflow_server_command()
    allowed_hosts = command[command.index("--allowed-hosts") + 1]
    with local_postgres() as database, mlflow_server(database.address, root / "artifacts", root / "mlflow.log",
                                                     allowed_hosts=allowed_hosts) as server:
        yield {"database": database.address, "url": server.address, "artifacts": root / "artifacts"}
    assert not group_alive(database.pgid) and not group_alive(server.pgid)
    assert not Path(urlparse(database.address).query.removeprefix("host=")).exists()


def test_postgres_programs_are_found_where_debian_puts_them_when_not_on_path(monkeypatch, tmp_path):
    require(bool(list(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), "Debian's PostgreSQL is not installed")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert postgres_bin_dir().match("/usr/lib/postgresql/*/bin") and (postgres_bin_dir() / "pg_ctl").is_file()
    monkeypatch.setattr(tracking_server, "DEBIAN_POSTGRES", str(tmp_path / "*" / "bin"))
    with pytest.raises(ALTError, match=r"initdb is neither on PATH nor in .*apt-get install postgresql"):
        postgres_bin_dir()


@pytest.mark.ray
@pytest.mark.usefixtures("local_ray")
def test_a_search_through_the_server_crowns_a_champion_that_serve_and_eval_load(tracking, tune_workspace):
    workspace = tune_workspace | {"tracking_uri": tracking["url"]}
    # one epoch per trial, and no trial stopped early: a trial ASHA stops leaves its CPUs to Ray Train's
    # placement-group cleaner, which cannot tell our Ray from another on the same machine (other work's)
    space = write_space(workspace["root"] / "server_space.yaml",
                        {"num_queries": {"grid": [2, 4]}, "depth": {"grid": [1, 2]}}, max_t=1)
    summary = tune_search(search_job(workspace, "server_search"),
                          SearchOptions(space=str(space), concurrent=2, scheduler="fifo"))
    assert len(summary["trials"]) == 4 and all(t["stop_reason"] != "failed" for t in summary["trials"])
    decision = summary["decision"]
    assert (decision["alias"], decision["champion_version"]) == ("champion", None)

    client = MlflowClient(tracking["url"])
    champion = client.get_model_version_by_alias("alt", "champion")
    assert int(champion.version) == decision["version"]
    # artifacts went through the server to its destination, not from the client to the search directory
    assert champion.source.startswith("mlflow-artifacts:/")
    assert (tracking["artifacts"] / champion.source.removeprefix("mlflow-artifacts:/") / "config.json").is_file()
    assert not (workspace["root"] / "server_search" / "mlartifacts").exists()
    # runs and the registry are rows in PostgreSQL: the search's parent run and its 4 trials
    with psycopg.connect(tracking["database"].replace("+psycopg", "")) as db:
        runs = db.execute("SELECT count(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                          "WHERE t.key = 'search_id' AND t.value = %s", (summary["search_id"],)).fetchone()[0]
        versions = db.execute("SELECT name, version FROM model_versions").fetchall()
    assert runs == 5 and versions == [("alt", decision["version"])]

    url = deploy(serve_config(DEFAULT_CONFIG, "models:/alt@champion", tracking["url"], port=free_port()))
    try:
        manifest = pq.read_table(tune_workspace["root"] / "synth" / "manifest.parquet").to_pylist()
        video = next(row for row in manifest if row["split"] == "test")
        video_path = Path(tune_workspace["root"] / "synth" / video["path"])
        response = requests.post(f"{url}/v1/predict", timeout=120,
                                 files={"file": (video_path.name, video_path.read_bytes(), "video/mp4")})
    finally:
        stop_app()
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["version"] == decision["version"] and body["model"]["alias"] == "champion"
    assert body["predictions"] and {p["label"] for p in body["predictions"]} <= set(SEEN)

    report = evaluate("models:/alt@champion", workspace["data"], splits=("test",), tracking_uri=tracking["url"])
    assert report["videos"] == 2 * len(SEEN) and report["labels"] == len(SEEN)
    assert report["checkpoint"] == "models:/alt@champion"


@pytest.mark.ray
def test_the_server_answers_the_host_the_cluster_clients_send_and_refuses_others(tracking):
    """The manifest's --allowed-hosts, on the real server: MLflow answers 403 to Host headers it does not allow."""
    port, in_cluster = urlparse(tracking["url"]).port, urlparse(cluster_tracking_uri()).netloc
    statuses = {}
    for host in (in_cluster, "attacker.example:5000"):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/api/2.0/mlflow/experiments/search?max_results=1", headers={"Host": host})
        statuses[host] = connection.getresponse().status
        connection.close()
    assert statuses == {in_cluster: 200, "attacker.example:5000": 403}
