"""Reliability suite (issue #7): bad input, faults, infeasible, unbounded and degenerate
problems, and property tests. Shared problems live in `cases.py`."""
