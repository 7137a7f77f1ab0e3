"""Evaluation helpers shared by the stages, the benchmarks and the tests."""
