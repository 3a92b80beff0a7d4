"""Clients of anonmail's own service protocols (directory, provider) over a transport Router."""
