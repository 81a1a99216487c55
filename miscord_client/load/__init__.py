"""Synthetic participants against a running server.

Like LiveKit's load tester: N participants spread over several client processes
(``--processes``) and channels, audio publishers, listeners and optional screen
sharers. After everyone hears everyone (or a deadline) and a warm-up, it
measures for ``--duration`` seconds and reports join times, loss per
subscription, forwarding latency, the longest gap in each received stream and
the server's CPU and memory; it exits 1 when a bound is crossed, 2 when the run
itself failed (unreachable server, dead client process, a wait that timed out).

Clients stay cheap (``media.py``): publishers send stamped fake
Opus, receivers count RTP and never decode. Loss is exact rather than estimated
from sequence numbers: every audio payload carries its send time, so a
subscription expects the packets its publisher stamped inside the window
``[start, end)`` and receives those whose stamp falls inside it; a stream that
stalls or never arrives shows as loss. Every wait has a deadline, so a broken
server fails the run instead of hanging it.

The coordinator (this process) needs no aiortc: the media code is imported only
in the worker processes, which keeps ``miscord-sfu token`` fast.

Modules: ``scenario`` (the plan), ``coordinator`` (this process), ``worker``
(the client processes), ``media`` (their cheap media), ``report`` (what was
measured), ``cli`` (``miscord-sfu loadtest``).
"""
