"""The job gate every front end shares: bounded admission, one job at a time in submission order, withdrawal
of a waiting job, and events for the window (real threads, no engine)."""

from __future__ import annotations

import threading

import pytest

from core.api import Cancelled, Progress
from core.jobs import JobEvent, JobGate, QueueFull

WAIT = 30.0


def _enter_in_thread(ticket, body=None) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def run() -> None:
        try:
            with ticket:
                box["ran"] = True
                if body:
                    body()
        except BaseException as exc:  # noqa: BLE001 - checked by the test
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def test_one_at_a_time_in_order_and_bounded() -> None:
    gate = JobGate(max_waiting=2)
    events: list[JobEvent] = []
    gate.add_listener(events.append)
    release = threading.Event()
    first = gate.submit("gui", "one")
    t1, b1 = _enter_in_thread(first, lambda: release.wait(WAIT))
    while gate.status().running is None:
        threading.Event().wait(0.01)
    second, third = gate.submit("api", "two"), gate.submit("api", "three")
    with pytest.raises(QueueFull) as info:
        gate.submit("api", "four")
    assert info.value.waiting == 2 and info.value.retry_after >= 1 and "2 job(s) waiting" in str(info.value)
    status = gate.status()
    assert status.running is first.info and status.waiting == (second.info, third.info)
    t3, b3 = _enter_in_thread(third)  # entered before the second, it still goes after it
    t2, b2 = _enter_in_thread(second)
    release.set()
    for t in (t1, t2, t3):
        t.join(WAIT)
    assert b1 == b2 == b3 == {"ran": True}
    order = [(e.kind, e.job.label) for e in events if e.kind in ("started", "finished")]
    assert order == [("started", "one"), ("finished", "one"), ("started", "two"), ("finished", "two"),
                     ("started", "three"), ("finished", "three")]
    assert gate.status().running is None and not gate.status().waiting


def test_a_waiting_job_can_be_withdrawn_and_errors_are_reported() -> None:
    gate = JobGate(max_waiting=4)
    events: list[JobEvent] = []
    gate.add_listener(events.append)
    gate.add_listener(lambda e: 1 / 0)  # a broken listener never breaks a job
    release, cancel = threading.Event(), threading.Event()
    running = gate.submit("gui", "busy")
    t1, _ = _enter_in_thread(running, lambda: release.wait(WAIT))
    while gate.status().running is None:
        threading.Event().wait(0.01)
    waiting = gate.submit("api", "impatient", cancel=cancel)
    t2, b2 = _enter_in_thread(waiting)
    cancel.set()
    t2.join(WAIT)
    assert isinstance(b2["error"], Cancelled) and "ran" not in b2
    assert gate.status().waiting == ()
    failing = gate.submit("api", "fails")

    def boom() -> None:
        failing.progress(Progress("Generating speech codes", 0.5, 1, 2))
        raise RuntimeError("no\nspeech")

    t3, b3 = _enter_in_thread(failing, boom)
    release.set()
    t1.join(WAIT)
    t3.join(WAIT)
    assert isinstance(b3["error"], RuntimeError)
    kinds = [(e.kind, e.job.label) for e in events]
    assert ("cancelled", "impatient") in kinds and ("started", "impatient") not in kinds
    failed = next(e for e in events if e.kind == "failed")
    assert failed.job.label == "fails" and failed.error == "no speech"
    progress = next(e for e in events if e.kind == "progress")
    assert progress.progress is not None and progress.progress.segment == 1
    assert gate.retry_after() >= 1


def test_withdraw_from_another_thread_reports_once() -> None:
    gate = JobGate(max_waiting=4)
    events: list[JobEvent] = []
    gate.add_listener(events.append)
    release = threading.Event()
    busy = gate.submit("gui", "busy")
    t1, _ = _enter_in_thread(busy, lambda: release.wait(WAIT))
    while gate.status().running is None:
        threading.Event().wait(0.01)
    inside, never_entered = gate.submit("api", "inside"), gate.submit("api", "later")
    t2, b2 = _enter_in_thread(inside)  # waits inside ``with`` (no cancel event of its own)
    assert inside.withdraw() and never_entered.withdraw()
    assert not inside.withdraw()  # only once
    t2.join(WAIT)
    assert isinstance(b2["error"], Cancelled)
    with pytest.raises(Cancelled):
        with never_entered:
            pass
    assert not busy.withdraw()  # a running job is not waiting
    release.set()
    t1.join(WAIT)
    cancelled = [e.job.label for e in events if e.kind == "cancelled"]
    assert cancelled == ["inside", "later"] and gate.status().waiting == ()
