"""The seam between the media core and aiortc, aioice and libsrtp: the only
package that reaches into their internals, one concern per module.

aiortc has no public way to (a) receive RTP without decoding it, (b) send
already-packetized RTP without a track and a per-sender task, (c) choose the
addresses ICE gathers on, or (d) see when the last datagram arrived. What needs
private attributes for that lives here:

- ``compat``: the versions it was tested with, checked at start;
- ``ice``: the server's ICE policy (addresses, consent) and candidates;
- ``srtp``: libsrtp called directly, and a session per sender;
- ``inbound``: a publish connection's packets, from the socket to C;
- ``rtcp``: a subscribe connection's RTCP, and sender reports;
- ``outbound``: a subscriber m-line's sender, taken over;
- ``peer``: peer connections made and taken apart;
- ``counters``: aiortc's transport counters, kept true.

Importing changes nothing in aiortc or aioice; ``install()`` (the server's
start-up) does what must be process-wide.
"""

import miscord_client.ice


def install() -> None:
    """Make aiortc build ICE connections that follow a policy (``ice``)."""
    miscord_client.ice.install()
