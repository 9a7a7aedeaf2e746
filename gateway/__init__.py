"""idwise-gateway: authenticate, store, route and deliver IDWise webhooks."""

__version__ = "0.1.0"
