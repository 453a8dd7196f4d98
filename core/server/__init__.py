"""The local speech server: an OpenAI-compatible HTTP API over the studio's engine.

``core.server.runner.LocalServer`` starts and stops it from any thread (the GUI's Tools → Local API, or
``python main.py serve``); ``core.server.keys`` keeps the API key; ``core.server.app.create_app`` is the web
application itself. Importing this package imports no web framework: the submodules do, when used.
"""
