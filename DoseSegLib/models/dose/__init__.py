"""models/dose."""
