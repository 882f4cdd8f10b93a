"""Peer servers (Debian packages) started privately for side-by-side benchmarks and tests."""
