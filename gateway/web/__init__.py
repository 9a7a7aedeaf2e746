"""The HTTP layer: the webhook listener and the admin listener (aiohttp). Does I/O."""
