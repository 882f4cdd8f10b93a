"""The admin tools that run outside a node: the `mailpair` command line and `pair up/down`.

They reach a running node through its HTTP API (mailpair.api.client) and a stopped node's data
directory through the store, under the data directory's lock (mailpair.datadir). Nothing below
imports from here.
"""
