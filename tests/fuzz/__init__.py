"""Fuzzing: hypothesis properties of every input path, bounded atheris runs, regressions."""
