"""The benchmark harness and the soak, in short versions."""
