"""The retraining cycle: curation, triggers, dataset formation, training and the offline gate.

``edgekit loop run --config loop.toml`` drives one model's loop as a persisted state machine in the
collector database: trigger -> curate -> label -> dataset -> train -> gate -> release. Each step
writes its outputs into the run directory before it is marked done, so a crash resumes at the
first unfinished step without repeating or losing work.
"""
