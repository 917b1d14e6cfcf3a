"""Domain set-ups for tests that work below the protocol (races, property tests, fuzzing)."""
from decimal import Decimal

from channels_app.models import Channel, Peer
from channels_app.services.channels import open_channel


def opened_channel(*, initiator: Peer, responder_address: str, margin_deposit: Decimal) -> Channel:
    """A channel both parties agreed to, through the services: ``initiator`` proposes, the responder consents
    (docs/protocol.md section 4)."""
    proposal = open_channel(initiator=initiator, responder_address=responder_address, margin_deposit=margin_deposit)
    responder = Peer.objects.get(address=responder_address)
    opened = open_channel(initiator=responder, responder_address=initiator.address, margin_deposit=margin_deposit)
    assert opened.pk == proposal.pk and opened.status == "opened", opened.status
    return opened
