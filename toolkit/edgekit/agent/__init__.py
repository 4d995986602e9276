"""The device agent: a small HTTP service that benchmarks uploaded artifacts on the device.

Runs with the runtime-only install (no torch). Token authentication with a constant-time
comparison, content-addressed uploads with a size limit, no client file names used as paths,
one benchmark at a time (others get 429 with Retry-After).
"""
