"""The DoseSeg module's self-test, kept apart from the panel (see selftest.py)."""
