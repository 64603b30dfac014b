"""models/seg."""
