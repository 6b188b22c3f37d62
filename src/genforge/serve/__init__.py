"""The web studio: ``genforge serve RUNS_DIR`` (``app.create_app``) — generate, refine and train from a page,
with a gallery (SQLite) that remembers every output and where it came from."""
