"""Where groups run: the filter -> score -> select pipeline over node-state arrays (README.md draws it)."""
