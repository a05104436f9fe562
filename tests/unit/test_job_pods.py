"""Reading a Job and its pods: its outcome, and why a pod cannot start (pure functions)."""

from __future__ import annotations

from typing import Any

import pytest

from librarian.operator.job_pods import (
    JOB_NAME_LABEL,
    PodTrouble,
    job_outcome,
    stalled_condition,
    stuck_pod,
)


def _pod(
    name: str,
    job: str = "move-1",
    phase: str = "Pending",
    waiting: str | None = None,
    *,
    init: bool = False,
    unschedulable: str | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if waiting is not None:
        container = {"name": "c", "state": {"waiting": {"reason": waiting, "message": "detail"}}}
        status["initContainerStatuses" if init else "containerStatuses"] = [container]
    if unschedulable is not None:
        status["conditions"] = [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": unschedulable,
            }
        ]
    return {"metadata": {"name": name, "labels": {JOB_NAME_LABEL: job}}, "status": status}


@pytest.mark.parametrize(
    ("reason", "hint"),
    [
        ("ImagePullBackOff", "imagePullSecrets"),
        ("ErrImagePull", "imagePullSecrets"),
        ("InvalidImageName", "image reference is malformed"),
        ("CreateContainerConfigError", "Secret or ConfigMap"),
    ],
)
def test_a_pod_waiting_for_a_fix_is_stuck_with_its_reason_and_a_hint(
    reason: str, hint: str
) -> None:
    trouble = stuck_pod("move-1", [_pod("move-1-a", waiting=reason)])
    assert trouble is not None
    assert trouble.reason == reason
    assert trouble.message.startswith(f"pod move-1-a of Job move-1 cannot start: {reason} (detail)")
    assert hint in trouble.message


def test_an_init_container_stuck_counts_and_an_unschedulable_pod_names_the_scheduler() -> None:
    init = stuck_pod("move-1", [_pod("move-1-a", waiting="ErrImagePull", init=True)])
    assert init is not None
    assert init.reason == "ErrImagePull"
    trouble = stuck_pod(
        "move-1",
        [_pod("move-1-a", unschedulable="0/3 nodes are available: 3 node(s) didn't match")],
    )
    assert trouble == PodTrouble(
        "Unschedulable",
        "pod move-1-a of Job move-1 is not scheduled (0/3 nodes are available: 3 node(s) didn't "
        "match); no node can take the pod: check jobs.nodeSelector, jobs.tolerations, "
        "jobs.affinity and jobs.resources (or the ClusterSpecialization's spec.job)",
    )


@pytest.mark.parametrize(
    "pods",
    [
        [],
        [_pod("move-1-a", waiting="ContainerCreating")],  # passes by itself
        [_pod("move-1-a", phase="Running")],
        [_pod("move-1-a", waiting="ImagePullBackOff"), _pod("move-1-b", phase="Running")],
        [_pod("other-a", job="other", waiting="ImagePullBackOff")],  # another Job's pod
    ],
    ids=["no-pod", "creating", "running", "one-of-an-indexed-job-runs", "another-job"],
)
def test_nothing_is_stuck_while_pods_start_or_run(pods: list[dict[str, Any]]) -> None:
    assert stuck_pod("move-1", pods) is None


def test_the_outcome_of_a_job_from_its_conditions_or_its_completions() -> None:
    assert job_outcome({}) == ("running", "")
    failed = {
        "status": {
            "conditions": [
                {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "m"}
            ]
        }
    }
    assert job_outcome(failed) == ("failed", "DeadlineExceeded: m")
    complete = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert job_outcome(complete) == ("succeeded", "")
    indexed = {"spec": {"completions": 4}, "status": {"succeeded": 3, "active": 1}}
    assert job_outcome(indexed) == ("running", "")  # 3 of 4 indexes done
    indexed["status"] = {"succeeded": 4}
    assert job_outcome(indexed) == ("succeeded", "")


def test_the_stalled_condition_is_set_cleared_and_otherwise_left_out() -> None:
    trouble = PodTrouble("ImagePullBackOff", "pod p cannot start")
    assert stalled_condition([], None) is None  # never stalled: no condition at all
    assert stalled_condition([], trouble) == ("True", "ImagePullBackOff", "pod p cannot start")
    shown = [{"type": "Stalled", "status": "True", "reason": "ImagePullBackOff"}]
    cleared = stalled_condition(shown, None)
    assert cleared is not None
    assert cleared[:2] == ("False", "JobRunning")
    assert stalled_condition([{"type": "Stalled", "status": "False"}], None) is None
