"""The API picks up a new champion: explicit reloads, the polling thread, failed loads, and an
API started before the first model. On the end-to-end stack's stores with a registry of its own
per test (the stack's champion never changes)."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

import pytest
from mlflow.tracking import MlflowClient

from leadscore.settings import Settings
from leadscore.tracking import connect_tracking
from pipelines.train_flow import run_training
from serving.app import reload_model
from tests.api_keys import api_client
from training.promotion import promote

pytestmark = pytest.mark.slow

MODEL = "leadscore"


def _with_registry(settings: Settings, tmp_path, *, copy: bool, reload_seconds: float) -> Settings:
    """The stack's stores with a registry of its own (a copy of the stack's, or empty)."""
    target = tmp_path / "mlflow.db"
    if copy:
        source = sqlite3.connect(settings.tracking_uri.removeprefix("sqlite:///"))
        replica = sqlite3.connect(target)
        try:
            source.backup(replica)
        finally:
            source.close()
            replica.close()
    mlflow_settings = settings.mlflow.model_copy(
        update={
            "tracking_uri": f"sqlite:///{target}",
            "artifact_dir": tmp_path / "artifacts",
            "experiment": "reload-test",
        }
    )
    serving = settings.serving.model_copy(update={"reload_seconds": reload_seconds})
    return settings.model_copy(update={"mlflow": mlflow_settings, "serving": serving})


@pytest.fixture
def settings(stack, tmp_path) -> Settings:
    return _with_registry(stack.settings, tmp_path, copy=True, reload_seconds=0)


@pytest.fixture(scope="module")
def lead_id(stack) -> int:
    return int(stack.demo.truth["lead_id"].iloc[0])


def _promote_a_new_version(settings: Settings) -> str:
    version = run_training(settings).model.version
    decision = promote(settings, version=version, force=True, reason="reload test")
    assert decision.champion == version
    return version


def test_an_explicit_reload_serves_the_new_champion(settings, lead_id):
    with api_client(settings) as client:
        # given
        before = client.get("/ready").json()["model_version"]
        score = client.post("/v1/score", json={"lead_id": lead_id}).json()
        assert score["model_version"] == before
        assert reload_model(client.app) is False  # nothing changed yet
        new = _promote_a_new_version(settings)
        # when
        changed = reload_model(client.app)
        # then
        assert changed is True and new != before
        assert client.get("/ready").json()["model_version"] == new
        score = client.post("/v1/score", json={"lead_id": lead_id})
        assert score.status_code == 200 and score.json()["model_version"] == new
        assert reload_model(client.app) is False


def test_a_failed_load_keeps_the_served_model_and_logs_why(settings, lead_id, tmp_path, caplog):
    with api_client(settings) as client:
        # given: the champion alias moved to a version whose model cannot be read
        before = client.get("/ready").json()["model_version"]
        connect_tracking(settings.tracking_uri)
        registry = MlflowClient()
        broken = registry.create_model_version(MODEL, source=str(tmp_path / "gone")).version
        registry.set_registered_model_alias(MODEL, "champion", broken)
        # when
        with caplog.at_level(logging.ERROR, logger="serving.app"):
            changed = reload_model(client.app)
        # then
        assert changed is False
        assert f"models:/{MODEL}/{broken} could not be loaded" in caplog.text
        assert client.get("/ready").json()["model_version"] == before
        score = client.post("/v1/score", json={"lead_id": lead_id})
        assert score.status_code == 200 and score.json()["model_version"] == before
        # and once the alias points to a good version again, it is served
        registry.set_registered_model_alias(MODEL, "champion", before)
        good = _promote_a_new_version(settings)
        assert reload_model(client.app) is True
        assert client.get("/ready").json()["model_version"] == good
        assert client.app.state.reload_error is None


def test_scores_keep_flowing_while_the_model_is_swapped(settings, stack):
    with api_client(settings) as client:
        # given: clients scoring in the background
        before = client.get("/ready").json()["model_version"]
        new = _promote_a_new_version(settings)
        leads = [int(i) for i in stack.demo.truth["lead_id"].iloc[:20]]
        answers: list[tuple[int, str]] = []
        done = threading.Event()

        def keep_scoring() -> None:
            while not done.is_set():
                for lead in leads:
                    r = client.post("/v1/score", json={"lead_id": lead})
                    answers.append((r.status_code, r.json().get("model_version")))

        worker = threading.Thread(target=keep_scoring)
        worker.start()
        # when
        try:
            reload_model(client.app)
        finally:
            done.set()
            worker.join()
        # then: every request was answered, by one version or the other
        assert answers and {status for status, _ in answers} == {200}
        assert {version for _, version in answers} <= {before, new}
        after = client.post("/v1/score", json={"lead_id": leads[0]}).json()
        assert after["model_version"] == new


def test_the_polling_thread_picks_up_a_new_champion(stack, tmp_path):
    # given: an API polling the registry often
    settings = _with_registry(stack.settings, tmp_path, copy=True, reload_seconds=0.2)
    running = set(threading.enumerate())
    with api_client(settings) as client:
        new = _promote_a_new_version(settings)
        # when: waiting for the thread (bounded, so a broken thread fails instead of hanging)
        deadline = time.monotonic() + 120
        while client.get("/ready").json()["model_version"] != new:
            assert time.monotonic() < deadline, "the reload thread never served the champion"
            time.sleep(0.1)
        # then
        lead = int(stack.demo.truth["lead_id"].iloc[0])
        score = client.post("/v1/score", json={"lead_id": lead}).json()
        assert score["model_version"] == new
    # and the thread stopped with the app
    reloaders = [
        t for t in set(threading.enumerate()) - running if t.name == "leadscore-model-reload"
    ]
    assert not any(t.is_alive() for t in reloaders)


def test_an_api_started_before_the_first_model_becomes_ready_when_one_is_trained(
    stack, tmp_path, lead_id
):
    # given: no model in the registry
    settings = _with_registry(stack.settings, tmp_path, copy=False, reload_seconds=0)
    with api_client(settings) as client:
        assert client.get("/ready").status_code == 503
        assert reload_model(client.app) is False  # still nothing
        assert client.get("/ready").status_code == 503
        # when: the first model is trained (it becomes champion at once)
        version = run_training(settings).model.version
        changed = reload_model(client.app)
        # then
        assert changed is True
        ready = client.get("/ready")
        assert ready.status_code == 200 and ready.json()["model_version"] == version
        assert client.post("/v1/score", json={"lead_id": lead_id}).status_code == 200
