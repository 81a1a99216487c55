"""miscord-sfu media core: channels, participants, publications and forwarding.

Never imports ``signaling``: the signaling layer drives it through ``SfuServer`` and
``Participant`` and listens to its events (``sfu.events``).
"""
