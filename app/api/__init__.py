"""The reference app's HTTP endpoints, one module per use case."""
