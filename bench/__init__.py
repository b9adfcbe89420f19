"""minigate benchmarks: ``python -m bench checkout|notify|replay|limit|profile|all`` (see bench/README.md)."""
