"""The storage backends: a folder (``SqliteDosStorage``), in memory (``SqliteTempBackend``), an archive."""
