"""Application contracts. Each app lives in its own package and owns a range of result codes."""
