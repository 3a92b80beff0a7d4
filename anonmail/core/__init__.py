"""Sans-IO core shared by the agent, the provider, the mix node and the simulator.

Nothing in this package touches sockets, threads, the wall clock, SQLite, stem or i2plib:
time and randomness are passed in. ``tests/unit/core/test_imports.py`` enforces it.
"""
