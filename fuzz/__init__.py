"""Fuzzing of every input path: atheris harnesses (fuzz_*.py) over shared targets."""
