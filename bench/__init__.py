"""slmc's speed benchmark against its peers: `python bench/run.py` (see bench/README.md)."""
