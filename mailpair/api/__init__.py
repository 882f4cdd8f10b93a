"""The node's HTTP admin API: the server a node runs (server.py, with the dashboard page and the
Prometheus metrics), its OpenAPI description, the merge of both nodes' views (pairview.py, pure)
and the JSON client every caller of the API uses (client.py).

Rules this package keeps: it sits below the node and the admin tools (node.py starts the server,
the CLI and `pair` call it through the client) and imports neither of them.
"""
