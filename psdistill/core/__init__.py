"""The ground layer: errors, typed configs and their help, logging, safe storage, the run lock."""
