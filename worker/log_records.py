"""Reading a cluster log topic (CONTRACT §11) as the gateways do: the copier's records.

A copier session writes under an epoch and numbers its records 1, 2, ... in headers; it
opens with a marker (sequence 0). A reader drops markers, a producer retry's repeat and
a fenced copier's late append (an (epoch, sequence) not past the last one), takes the
event's channel from ``sb-channel`` and removes these headers. Records without them (the
memory broker's publishes) pass. The rules are the cluster log's (branch w3-clog,
``connectors.cluster.fence.Fence``); once both branches merge, this uses that class.

A worker taking a partition over starts with a fresh fence at its committed offset:
a fenced copier's append just after that offset is not recognised as late.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

EPOCH, SEQUENCE, CHANNEL, DIGEST = "sb-epoch", "sb-seq", "sb-channel", "sb-digest"
OWN_HEADERS = frozenset({EPOCH, SEQUENCE, CHANNEL, DIGEST})


@dataclass(slots=True)
class LogFence:
    """The newest (epoch, sequence) passed in one partition of a cluster log topic."""

    epoch: int = -1
    sequence: int = -1

    def admit(self, headers: Mapping[str, str]) -> bool:
        epoch, sequence = headers.get(EPOCH, ""), headers.get(SEQUENCE, "")
        if not (epoch.isdigit() and sequence.isdigit()):
            return True
        at = (int(epoch), int(sequence))
        if at <= (self.epoch, self.sequence):
            return False
        self.epoch, self.sequence = at
        return at[1] > 0


def source_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The source message's own headers, without the copier's."""
    return {k: v for k, v in headers.items() if k not in OWN_HEADERS}
