"""The suite's one way to choose ports, in one process or in several (pytest-xdist)."""

from __future__ import annotations

import socket

from tests.support import ports


def test_each_worker_chooses_from_its_own_slice_and_one_process_from_all(monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    assert ports._slice(10_000, 32_768) == (10_000, 32_768)
    slices = []
    for index in range(3):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{index}")
        monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
        slices.append(ports._slice(10_000, 32_768))
    assert slices[0][0] == 10_000 and all(a[1] == b[0] for a, b in zip(slices, slices[1:]))
    assert slices[-1][1] <= 32_768 and all(top - low >= 7_000 for low, top in slices)


def test_a_port_is_free_in_the_slice_and_never_given_twice(monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    low, top = ports._slice(ports.LOWEST, ports._ephemeral_start())
    given = [ports.free_port() for _ in range(50)]
    assert len(set(given)) == 50 and all(low <= p < top for p in given)
    with socket.socket() as s:
        s.bind(("127.0.0.1", given[0]))  # free when given, and still free: nothing took it
