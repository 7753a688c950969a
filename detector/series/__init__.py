"""Metric streams: records ordered in time per series, judged with their recent history."""
