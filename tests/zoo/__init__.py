"""Models built here to mirror real third-party exports (issue 27's zoo), each with real samples
and its task's own check."""
