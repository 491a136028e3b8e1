"""Benchmarks run by `make bench`: each module `bench/bench_<name>.py` has `main() -> None`
that prints its figures side by side with a floor measured in the same run."""
