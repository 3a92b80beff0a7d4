"""Benchmarks behind `anonmail bench`: packet micro-benchmarks and mix throughput."""
