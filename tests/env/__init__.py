"""The test environment: real servers on loopback, built and cached by the project's own files.

``python -m tests.env provision|up|down|status`` from the repository root; pytest fixtures in
``tests/conftest.py`` use the same code.
"""
