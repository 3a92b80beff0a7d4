"""Session fixtures for a private Tor network (filled in by the Tor transport work)."""
