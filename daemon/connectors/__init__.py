"""The two desks behind one contract: ConnectWise Manage and the SOC desk (Zendesk shape).

:mod:`daemon.connectors.contract` says what sync and the outbox need of a desk;
each desk's package implements exactly that with the same names on both sides.
"""
