"""The replay log of offset-less brokers: bounds, cursors, gaps, ranges, and durability."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bridge.event import Event
from connectors.base import EARLIEST, Gap
from connectors.replay import ReplayLog, log_path


def _event(n: int) -> Event:
    return Event(channel="c", data={"n": n}, key=f"k{n}", headers={"h": str(n)})


async def _take(log: ReplayLog, cursor: str | None, count: int) -> list[Event | Gap]:
    out: list[Event | Gap] = []
    async for item in log.follow(cursor):
        out.append(item)
        if len(out) == count:
            break
    return out


async def _range(log: ReplayLog, start: str, until: str | None) -> list[Event | Gap]:
    return [item async for item in log.read_range(start, until)]


def _numbers(items: list[Event | Gap]) -> list[int | str]:
    return ["gap" if isinstance(i, Gap) else i.data["n"] for i in items]


async def test_follow_resumes_right_after_a_cursor() -> None:
    log = ReplayLog("e1", retain=10, max_age=60)
    stored = [log.append(_event(n), 100.0) for n in range(5)]
    assert [e.cursor for e in stored] == [f"e1:{n}" for n in range(1, 6)]
    assert _numbers(await _take(log, stored[1].cursor, 3)) == [2, 3, 4]


async def test_evicted_cursor_gets_a_gap_then_the_oldest() -> None:
    log = ReplayLog("e1", retain=3, max_age=60)
    stored = [log.append(_event(n), 100.0) for n in range(6)]
    items = await _take(log, stored[0].cursor, 4)
    assert isinstance(items[0], Gap)
    assert items[0].requested == stored[0].cursor and items[0].oldest == stored[3].cursor
    assert _numbers(items[1:]) == [3, 4, 5]


async def test_read_range_stops_at_the_bound() -> None:
    log = ReplayLog("e1", retain=10, max_age=60)
    stored = [log.append(_event(n), 100.0) for n in range(6)]
    assert _numbers(await _range(log, stored[1].cursor, stored[3].cursor)) == [2, 3]
    assert _numbers(await _range(log, EARLIEST, stored[2].cursor)) == [0, 1, 2]
    assert _numbers(await _range(log, stored[3].cursor, stored[3].cursor)) == []
    assert _numbers(await _range(log, "other:1", stored[1].cursor)) == ["gap", 0, 1]


async def test_connector_cursors_are_kept_and_looked_up() -> None:
    log = ReplayLog("e1", retain=3, max_age=60)
    for n in range(5):
        log.append(_event(n), 100.0, cursor=f"pg1:{n:04d}")
    assert log.position == "pg1:0004"
    assert _numbers(await _take(log, "pg1:0002", 2)) == [3, 4]
    assert _numbers(await _take(log, "pg1:0000", 4)) == ["gap", 2, 3, 4]


def _padded(n: int) -> Event:
    """An event whose JSON is exactly 100 bytes: ``{"n":<n>,"pad":"xx…"}``."""
    return Event(channel="c", data={"n": n, "pad": "x" * (100 - 15 - len(str(n)))})


async def test_max_bytes_evicts_the_oldest_first_and_an_older_resume_gets_a_gap() -> None:
    log = ReplayLog("e1", retain=1000, max_age=60, max_bytes=350)
    stored = [log.append(_padded(n), 100.0) for n in range(6)]
    assert log.oldest == stored[3].cursor and log.bytes == 300  # a 4th would make 400
    assert _numbers(await _take(log, stored[3].cursor, 2)) == [4, 5]
    items = await _take(log, stored[1].cursor, 4)
    assert isinstance(items[0], Gap) and items[0].oldest == stored[3].cursor
    assert _numbers(items[1:]) == [3, 4, 5]
    assert _numbers(await _range(log, stored[0].cursor, stored[5].cursor)) == ["gap", 3, 4, 5]


async def test_the_newest_event_is_kept_however_large() -> None:
    log = ReplayLog("e1", retain=1000, max_age=60, max_bytes=50)
    log.append(_padded(1), 100.0)
    newest = log.append(_padded(2), 100.0)
    assert log.oldest == newest.cursor and log.bytes == 100
    assert _numbers(await _take(log, EARLIEST, 1)) == [2]


async def test_max_bytes_counts_a_durable_log_by_its_lines_when_loaded(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    log = ReplayLog("e1", retain=1000, max_age=60, path=path)  # no byte bound: keeps all
    for n in range(10):
        log.append(_padded(n), 100.0)
    lines = [len(line) for line in path.read_bytes().splitlines(keepends=True)[1:]]
    assert log.bytes == sum(lines)
    again = ReplayLog("e1", retain=1000, max_age=60, path=path, max_bytes=sum(lines[-3:]))
    assert again.bytes == sum(lines[-3:]) and again.oldest == "e1:8"
    assert _numbers(await _take(again, "e1:2", 4)) == ["gap", 7, 8, 9]
    again.close()


async def test_a_durable_log_survives_a_restart(tmp_path: Path) -> None:
    path = log_path(tmp_path, "mqtt-main", "sensors/+/temp")
    assert path is not None
    first = ReplayLog("old", retain=4, max_age=60, path=path)
    stored = [first.append(_event(n), 100.0) for n in range(6)]
    first.close()

    again = ReplayLog("new", retain=4, max_age=60, path=path)
    assert again.epoch == "old"  # the file's epoch: cursors from before still resolve
    items = await _take(again, stored[3].cursor, 2)
    assert _numbers(items) == [4, 5]
    first_item = items[0]
    assert isinstance(first_item, Event)
    assert first_item.key == "k4" and first_item.headers == {"h": "4"}
    assert again.append(_event(6), 101.0).cursor == "old:7"
    assert _numbers(await _take(again, stored[0].cursor, 5)) == ["gap", 3, 4, 5, 6]
    again.close()


async def test_a_durable_log_is_compacted_and_a_torn_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    log = ReplayLog("e1", retain=5, max_age=60, path=path)
    for n in range(200):
        log.append(_event(n), 100.0, cursor=f"x:{n:05d}")
    log.close()
    assert len(path.read_text().splitlines()) <= 2 * 5 + 64 + 1
    with path.open("a") as file:
        file.write('{"n": 201, "s": 1')  # a crash in the middle of a write
    again = ReplayLog("e2", retain=5, max_age=60, path=path)
    assert _numbers(await _take(again, "x:00196", 3)) == [197, 198, 199]
    again.close()


async def test_age_bound_applies_after_loading(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    log = ReplayLog("e1", retain=100, max_age=10, path=path)
    log.append(_event(1), 100.0)
    log.close()
    again = ReplayLog("e1", retain=100, max_age=10, path=path)
    again.trim(200.0)
    assert again.oldest is None and again.position == "e1:1"
    again.close()


async def test_followers_wake_on_append() -> None:
    log = ReplayLog("e1", retain=10, max_age=60)
    task = asyncio.create_task(_take(log, None, 2))
    await asyncio.sleep(0)
    log.append(_event(1), 100.0)
    log.append(_event(2), 100.0)
    assert _numbers(await asyncio.wait_for(task, 1)) == [1, 2]


@pytest.mark.parametrize("channel", ["a/b", "../../etc", "x" * 500])
def test_log_paths_stay_inside_the_data_dir(tmp_path: Path, channel: str) -> None:
    path = log_path(tmp_path, "../broker", channel)
    assert path is not None
    assert tmp_path in path.resolve().parents


PAYLOADS = [{"n": [1, 2.5, None, True], "é": "ü\u2603"}, "123", "plain text", 7, [], None]


@pytest.mark.parametrize("durable", [False, True])
async def test_payloads_come_back_as_they_went_in_though_kept_as_text(
    tmp_path: Path, durable: bool
) -> None:
    path = tmp_path / "log.jsonl" if durable else None
    log = ReplayLog("e1", retain=10, max_age=60, path=path, max_bytes=1 << 20)
    stored = [log.append(Event(channel="c", data=data, key="k"), 100.0) for data in PAYLOADS]
    assert all(isinstance(item.text, str) for item in log.buffer)  # no decoded payload kept
    assert log.after(log.last - 1)[0] is stored[-1]  # the newest as appended, not decoded
    read = [i for i in await _range(log, EARLIEST, log.position) if isinstance(i, Event)]
    assert [e.data for e in read] == PAYLOADS and {e.key for e in read} == {"k"}
    log.close()
    if path is not None:
        again = ReplayLog("e2", retain=10, max_age=60, path=path)
        assert [e.data for e in again.after(0)] == PAYLOADS
        again.close()
