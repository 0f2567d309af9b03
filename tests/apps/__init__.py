"""Apps and scripts that the process-level reliability tests run in subprocesses (uvicorn, gunicorn, plain python)."""
