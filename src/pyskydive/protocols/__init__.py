"""Sans-I/O protocol codecs: bytes in, typed records out (no sockets, no asyncio)."""
