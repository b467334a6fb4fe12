"""`dlcli serve`: a run behind HTTP (FastAPI + uvicorn, the `serve` extra) and a page to try it (static/index.html).

Imported only by the `serve` command and the tests: nothing else in dlcli depends on FastAPI.
"""
