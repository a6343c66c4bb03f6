"""pyostree: a pure-Python OSTree client."""
