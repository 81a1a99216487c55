"""miscord-sfu signaling: the /ws WebSocket, connection manager, auth and HTTP APIs."""
