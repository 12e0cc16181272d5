"""Wire encodings as pure functions: bytes out, no I/O."""
