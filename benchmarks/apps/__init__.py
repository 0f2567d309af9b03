"""Helpers the benchmarks start as separate processes: the WorkOS emulator and the apps the servers load."""
