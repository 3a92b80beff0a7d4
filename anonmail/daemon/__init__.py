"""What every daemon shares: CLI error wrapper, status and identity files, node config sections, lifecycle, logging, SQLite."""
