"""The Job controller ``up`` and the demo play: each Job's command, with its environment, once."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

from librarian.local.crds import packaged_crds
from librarian.local.emulator import emulated_kubernetes
from librarian.local.job_controller import JOBS, play_job_controller


def _job(name: str, env: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "team"},
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "m", "args": ["migrate", name], "env": env}]}
            }
        },
    }


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


async def test_jobs_run_once_with_their_environment_and_get_a_status() -> None:
    key = "the-api-key-value"
    ran: list[tuple[list[str], dict[str, str]]] = []

    def run(args: Sequence[str], environment: Mapping[str, str]) -> tuple[bool, str]:
        ran.append((list(args), dict(environment)))
        return args[1] != "fails", "boom" if args[1] == "fails" else ""

    async with emulated_kubernetes(packaged_crds(), namespaces=["team"]) as api:
        await api.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "qdrant", "namespace": "team"},
                "data": {"api-key": base64.b64encode(key.encode()).decode()},
                "stringData": {"other": "plain"},
            }
        )
        await api.create(
            _job(
                "works",
                [
                    {"name": "PLAIN", "value": "1"},
                    _secret_env("LIBRARIAN_SOURCE_API_KEY", "qdrant", "api-key"),
                    _secret_env("OTHER", "qdrant", "other"),
                ],
            )
        )
        await api.create(_job("fails", []))
        await api.create(_job("no-secret", [_secret_env("K", "missing", "api-key")]))
        done: set[str] = set()
        assert await play_job_controller(api, None, done, run) == 3
        assert await play_job_controller(api, None, done, run) == 0  # each runs once
        jobs = {j["metadata"]["name"]: j for j in await api.list_objects(JOBS, "team")}
    assert ran[0] == (
        ["migrate", "works"],
        {"PLAIN": "1", "LIBRARIAN_SOURCE_API_KEY": key, "OTHER": "plain"},
    )
    assert [args for args, _ in ran] == [["migrate", "works"], ["migrate", "fails"]]
    assert jobs["works"]["status"]["succeeded"] == 1
    assert jobs["fails"]["status"]["conditions"][0]["message"] == "boom"
    missing = jobs["no-secret"]["status"]["conditions"][0]
    assert missing["type"] == "Failed"
    assert missing["message"] == "Secret team/missing does not exist"


async def test_finished_jobs_are_not_run_again() -> None:
    def run(args: Sequence[str], environment: Mapping[str, str]) -> tuple[bool, str]:
        raise AssertionError("a finished Job ran again")

    async with emulated_kubernetes(packaged_crds(), namespaces=["team"]) as api:
        finished = {**_job("old", []), "status": {"succeeded": 1}}
        await api.create(finished)
        assert await play_job_controller(api, "team", set(), run) == 0


def _indexed(name: str, completions: int) -> dict[str, Any]:
    job = _job(name, [{"name": "PLAIN", "value": "1"}])
    job["metadata"]["labels"] = {"app.kubernetes.io/component": "labeling"}
    job["spec"].update(
        {"completionMode": "Indexed", "completions": completions, "parallelism": completions}
    )
    return job


async def test_an_indexed_job_runs_every_index_and_fails_if_one_does() -> None:
    ran: list[tuple[str, str]] = []

    def run(args: Sequence[str], environment: Mapping[str, str]) -> tuple[bool, str]:
        index = environment["JOB_COMPLETION_INDEX"]
        ran.append((args[1], index))
        assert environment["PLAIN"] == "1"
        failing = args[1] == "half" and index == "1"
        return not failing, "range 1 failed" if failing else ""

    async with emulated_kubernetes(packaged_crds(), namespaces=["team"]) as api:
        await api.create(_indexed("all", 3))
        await api.create(_indexed("half", 2))
        await api.create(_job("migration", []))
        done: set[str] = set()
        labeling_only = play_job_controller(
            api,
            "team",
            done,
            run,
            selected=lambda job: "labels" in job["metadata"],
        )
        assert await labeling_only == 2
        jobs = {j["metadata"]["name"]: j for j in await api.list_objects(JOBS, "team")}
    assert sorted(ran) == [("all", "0"), ("all", "1"), ("all", "2"), ("half", "0"), ("half", "1")]
    assert jobs["all"]["status"]["succeeded"] == 3
    assert jobs["all"]["status"]["completedIndexes"] == "0,1,2"
    assert jobs["all"]["status"]["conditions"][0]["type"] == "Complete"
    half = jobs["half"]["status"]
    assert (half["succeeded"], half["failed"], half["completedIndexes"]) == (1, 1, "0")
    assert half["conditions"][0]["type"] == "Failed"
    assert half["conditions"][0]["message"] == "index 1: range 1 failed"
    assert "status" not in jobs["migration"] or not jobs["migration"]["status"]  # not selected
