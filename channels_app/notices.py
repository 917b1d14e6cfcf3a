"""What the domain tells the parties of a channel when its state changes: one immutable notice per change.

Services queue notices in the outbox (channels_app.outbox); after commit the configured publisher (the transport)
turns each into the frames its recipients receive. A notice names its recipients and carries values, never rows.
"""
import enum
from dataclasses import dataclass
from decimal import Decimal

from channels_app import outbox, selectors
from channels_app.values import ChannelView, PositionView


class StreamAction(enum.StrEnum):
    """What happened to a channel (the spec's stream actions)."""

    CHANNEL_OPENED = "channelOpened"
    CHANNEL_CLOSED = "channelClosed"
    CHANNEL_SETTLED = "channelSettled"
    MARGIN_UPDATED = "marginUpdated"


@dataclass(frozen=True)
class ChannelNotice:
    action: StreamAction
    channel: ChannelView

    @property
    def recipients(self):
        return self.channel.parties


@dataclass(frozen=True)
class PositionNotice:
    position: PositionView
    recipients: tuple[tuple[str, str], ...]  # (address, role)


@dataclass(frozen=True)
class PeerDisabledNotice:
    """Back office disabled a peer: every live connection of it closes, on every process (each named by its
    channel-layer name, read under the peer's row lock, so no admission slips between: docs/protocol.md)."""

    address: str
    channel_names: tuple[str, ...]


def notify_channel(channel, action: StreamAction, balances=None) -> None:
    """Both parties hear ``action`` on ``channel`` with its margin balances (read now unless given)."""
    outbox.queue(ChannelNotice(action, selectors.channel_view(channel, balances=balances)))


def notify_positions(channel, positions, marks: dict[str, Decimal]) -> None:
    """Both parties hear each of ``positions`` as it stands now, valued at ``marks``."""
    recipients = selectors.parties(channel)
    for position in positions:
        outbox.queue(PositionNotice(selectors.position_view(position, marks), recipients))


def notify_peer_disabled(peer) -> None:
    """Every connection ``peer`` has now hears it is disabled (call under the peer's row lock)."""
    outbox.queue(PeerDisabledNotice(peer.address, selectors.connection_names(peer=peer)))
