"""Configuration: the frozen model (`model`) and the loader that builds it (`load`)."""
