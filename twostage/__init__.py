"""The `twostage` command line: export, index, serve, query."""
