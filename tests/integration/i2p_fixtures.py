"""Session fixtures for a private I2P network (filled in by the I2P transport work)."""
