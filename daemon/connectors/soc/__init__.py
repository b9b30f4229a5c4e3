"""The SOC side of socbridge: the desk's API (Zendesk Support API v2 shape).

client (async API client), intake (signed-webhook route, ``POST
/webhooks/soc``), poller (incremental-export reconciliation), install
(webhook subscription), settings (``[soc]``), signing, observe (event
shapes), errors, cli (``socbridge webhooks``), simulator (``socbridge sim
soc``). See README.md for what was verified against the reference.
"""
