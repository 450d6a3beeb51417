"""geminid.daemon: everything that runs (actors, stores, servers, the fake upstream)."""

__version__ = "0.1.0"
