"""Per-client filters in process (CONTRACT §10): what one delivery costs the hub with and
without a ``?filter=``, without sockets.

    .venv/bin/python bench/client_filters.py [--clients 1000] [--events 20]

Each round offers ``--events`` events to ``--clients`` subscribers, as ``Hub.emit`` does,
and reports the best of five rounds in µs per delivery: plain subscribers (no filter, no
policy), then subscribers behind a ``ConnectionGate`` with the filter ``data.seq > -100``
(true for every event, so both rounds queue as much).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.client_filter import compile_client_filter
from bridge.event import Event
from gateway.delivery import ConnectionGate, Policy
from gateway.queueing import Entry, GatedSubscriber, Subscriber

FILTER = "data.seq > -100"


def subscribers(count: int, filtered: bool) -> list[Subscriber]:
    if not filtered:
        return [Subscriber(10**9) for _ in range(count)]
    expression = compile_client_filter(FILTER)
    gated = [GatedSubscriber(10**9) for _ in range(count)]
    for subscriber in gated:
        subscriber.pass_through(ConnectionGate(expression, Policy(subscriber)))
    return list(gated)


async def per_delivery(clients: int, events: int, filtered: bool) -> float:
    event = Event("bench", {"seq": 5, "t": time.time_ns(), "pad": "x" * 60}, time=time.time())
    best = float("inf")
    for _ in range(5):
        targets = subscribers(clients, filtered)
        start = time.perf_counter()
        for _ in range(events):
            entry = Entry("id", 1, 0.0, "{}", 0.0, None, None, event)  # a new event each time
            for subscriber in targets:
                subscriber.offer((entry, None))
        best = min(best, (time.perf_counter() - start) / (clients * events) * 1e6)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--events", type=int, default=20)
    args = parser.parse_args()
    for label, filtered in (("no filter", False), (f"filter {FILTER!r}", True)):
        cost = asyncio.run(per_delivery(args.clients, args.events, filtered))
        print(f"N={args.clients}, {label}: {cost:.2f} µs per delivery")
    return 0


if __name__ == "__main__":
    sys.exit(main())
