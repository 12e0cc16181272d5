"""The embedded demo's producer: ticker prices and chat announcements on the memory broker."""

from __future__ import annotations

import asyncio
import random
import time

from bridge.event import Event
from gateway.runtime import Runtime

SYMBOLS = {"ACME": 120.0, "GLOBEX": 48.0, "INITECH": 9.5}


async def produce(runtime: Runtime, interval: float = 0.5) -> None:
    connector = runtime.connectors["demo"]
    prices = dict(SYMBOLS)
    rng = random.Random()  # noqa: S311 - demo data, not security
    seq = 0
    next_announcement = time.monotonic()
    while True:
        for symbol, price in prices.items():
            seq += 1
            change = round(rng.gauss(0, 0.8), 2)
            prices[symbol] = max(0.01, round(price + change, 2))
            data = {
                "seq": seq,
                "symbol": symbol,
                "price": prices[symbol],
                "change": change,
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            await connector.publish("demo.prices", Event("demo.prices", data, key=symbol))
            await connector.publish(
                f"demo.prices.{symbol}", Event(f"demo.prices.{symbol}", data, key=symbol)
            )
        if time.monotonic() >= next_announcement:
            next_announcement += 30
            await connector.publish(
                "chat.announce",
                Event(
                    "chat.announce", {"text": "Welcome to the Streambridge demo", "at": time.time()}
                ),
            )
        await asyncio.sleep(interval)
