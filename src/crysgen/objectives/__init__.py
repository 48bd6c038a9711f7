"""Training objectives, kept beside the models they train."""
