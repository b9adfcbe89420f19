"""One abstract base per capability."""
