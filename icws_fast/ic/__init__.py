"""IC primitives: the pure-Python reference implementations."""
