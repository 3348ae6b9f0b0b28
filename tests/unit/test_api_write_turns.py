"""WriteTurns (adapters/api/middleware.py): a server process works on at most
``server_concurrent_writes`` write requests at once, in arrival order; reads never wait."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from cmvtrial.adapters.api.middleware import WriteTurns
from cmvtrial.config import Settings


def run_requests(methods: list[str], concurrent: int) -> tuple[dict[str, int], list[int]]:
    """Start one request per method at once; the most of each kind that ran together, and the order
    in which the writes started."""
    running = {"write": 0, "read": 0}
    most = {"write": 0, "read": 0}
    started: list[int] = []

    async def app(scope, receive, send):
        kind = "read" if scope["method"] == "GET" else "write"
        if kind == "write":
            started.append(scope["number"])
        running[kind] += 1
        most[kind] = max(most[kind], running[kind])
        await asyncio.sleep(0.01)
        running[kind] -= 1

    gate = WriteTurns(app, concurrent=concurrent)

    async def main() -> None:
        await asyncio.gather(*(gate({"type": "http", "method": method, "number": number}, None, None)
                               for number, method in enumerate(methods)))

    asyncio.run(main())
    return most, started


def test_writes_take_turns_in_arrival_order_and_reads_do_not_wait():
    most, started = run_requests(["POST", "GET", "PUT", "GET", "DELETE", "PATCH", "GET"], concurrent=1)
    assert most == {"write": 1, "read": 3}
    assert started == [0, 2, 4, 5]


def test_more_turns_when_configured():
    most, _ = run_requests(["POST"] * 6, concurrent=3)
    assert most["write"] == 3


def test_a_failing_write_gives_its_turn_back():
    async def failing(scope, receive, send):
        raise RuntimeError("boom")

    gate = WriteTurns(failing, concurrent=1)

    async def main() -> None:
        for _ in range(3):
            with pytest.raises(RuntimeError):
                await asyncio.wait_for(gate({"type": "http", "method": "POST"}, None, None), timeout=1)

    asyncio.run(main())


def test_the_setting_defaults_to_one_and_refuses_nonsense():
    assert Settings().server_concurrent_writes == 1
    assert Settings(server_concurrent_writes=4).server_concurrent_writes == 4
    for bad in (0, -1, 65):
        with pytest.raises(ValidationError):
            Settings(server_concurrent_writes=bad)
