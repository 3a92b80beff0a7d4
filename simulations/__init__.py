"""Discrete-event simulations of the anonmail mix network (unlinkability and latency)."""
