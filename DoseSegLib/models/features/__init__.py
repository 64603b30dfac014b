"""models/features."""
