"""`leadscore keys create / list / revoke` against a real SQLite key database."""

from __future__ import annotations

import os

from typer.testing import CliRunner

from leadscore import settings as settings_module
from leadscore.auth import ApiKeyStore
from pipelines.cli import app

runner = CliRunner()


def _invoke(root, *args):
    os.environ["LEADSCORE_PATHS__ROOT"] = str(root)
    settings_module.get_settings.cache_clear()
    try:
        return runner.invoke(app, list(args))
    finally:
        del os.environ["LEADSCORE_PATHS__ROOT"]
        settings_module.get_settings.cache_clear()


def _store(root) -> ApiKeyStore:
    settings = settings_module.Settings(paths=settings_module.PathsSettings(root=root))
    return ApiKeyStore(settings.auth_db_url, cache_seconds=0)


def test_every_keys_command_has_help_with_examples():
    for command in ("create", "list", "revoke"):
        result = runner.invoke(app, ["keys", command, "--help"])
        assert result.exit_code == 0
        assert "Examples" in result.output


def test_create_list_and_revoke_a_key(tmp_path):
    # when: a key is created
    created = _invoke(
        tmp_path,
        "keys",
        "create",
        "--name",
        "crm",
        "--scope",
        "score:read",
        "--scope",
        "events:write",
    )
    # then: it is printed once, works, and only its prefix is listed
    assert created.exit_code == 0, created.output
    key = next(line for line in created.output.splitlines() if line.startswith("ls_"))
    assert len(key) == 3 + 32
    store = _store(tmp_path)
    found = store.verify(key)
    assert found is not None and found.scopes == {"score:read", "events:write"}
    listed = _invoke(tmp_path, "keys", "list")
    assert listed.exit_code == 0, listed.output
    assert found.prefix in listed.output and "crm" in listed.output
    assert "events:write score:read" in listed.output
    assert key not in listed.output
    # when: it is revoked by its prefix
    revoked = _invoke(tmp_path, "keys", "revoke", found.prefix)
    # then
    assert revoked.exit_code == 0, revoked.output
    assert f"revoked {found.prefix}" in revoked.output
    assert store.verify(key) is None
    (record,) = store.list()
    assert record.revoked_at is not None and record.last_used_at is not None
    assert "0 active" in _invoke(tmp_path, "keys", "list").output


def test_revoke_by_id_and_mistakes(tmp_path):
    created = _invoke(tmp_path, "keys", "create", "--name", "ops", "--scope", "admin")
    assert created.exit_code == 0, created.output
    (record,) = _store(tmp_path).list()
    assert _invoke(tmp_path, "keys", "revoke", record.key_id).exit_code == 0
    assert _store(tmp_path).list()[0].revoked_at is not None
    unknown = _invoke(tmp_path, "keys", "revoke", "ls_nothere")
    assert unknown.exit_code == 1 and "no API key" in unknown.output
    bad_scope = _invoke(tmp_path, "keys", "create", "--name", "x", "--scope", "score:write")
    assert bad_scope.exit_code == 1 and "unknown scope" in bad_scope.output


def test_run_all_prints_a_fresh_demo_key_and_keeps_one_active(tmp_path):
    from pipelines.cli import _demo_key

    settings = settings_module.Settings(paths=settings_module.PathsSettings(root=tmp_path))
    first = _demo_key(settings)
    second = _demo_key(settings)
    store = _store(tmp_path)
    assert store.verify(first) is None  # replaced: a hashed key cannot be shown again
    found = store.verify(second)
    assert found is not None and found.name == "demo"
    assert found.scopes == {"score:read", "events:write"}
    assert [k.name for k in store.list() if k.active] == ["demo"]
