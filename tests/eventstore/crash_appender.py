"""A process that appends in a loop until killed; the crash test's victim.

Four concurrent appenders append batches of 1 to 3 events. After an append
returns (durable), its event ids are printed on one line, so the parent knows
exactly which appends were acknowledged before it sent SIGKILL.
"""

from __future__ import annotations

import asyncio
import random
import sys
import uuid

from eventstore import EventStore, NewEvent


async def main(path: str, seed: int) -> None:
    rng = random.Random(seed)
    store = await EventStore.open(path)
    print("ready", flush=True)

    async def appender(who: int) -> None:
        while True:
            batch = str(uuid.uuid4())
            size = rng.randint(1, 3)
            events = [
                NewEvent(
                    stream=f"cw:ticket:{rng.randint(1, 5)}",
                    type="connectwise.ticket.observed",
                    data={
                        "batch": batch,
                        "size": size,
                        "who": who,
                        "pad": "x" * rng.randint(0, 3000),
                    },
                )
                for _ in range(size)
            ]
            recs = await store.append(events)
            sys.stdout.write(" ".join(r.event_id for r in recs) + "\n")
            sys.stdout.flush()

    await asyncio.gather(*(appender(i) for i in range(4)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
