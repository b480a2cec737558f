"""Measuring modules and models: parameters, FLOPs, latency, peak memory, and leaderboards."""
