"""Training configurations: `get_config()` in each module returns an `ml_collections.ConfigDict`."""
