"""Deterministic simulation test (A-15): a seeded harness driving the gateway against the simulators with faults."""
