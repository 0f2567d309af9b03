"""The demo: a small Centure-like dashboard API in FastAPI and in Flask, audited, and a scripted tour of it."""
