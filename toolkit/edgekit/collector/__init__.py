"""The central log collector: ingest device batches exactly once, export them for retraining."""
