"""Cluster mode on Ray: the model tier as a Serve deployment, streams as actors.

Imported only with ``--cluster`` (or by ``fesnet-spot cluster``); docs/SCALING.md.
"""
