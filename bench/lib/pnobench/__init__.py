"""PnO benchmark harness (bench/run)."""
