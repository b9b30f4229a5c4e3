"""The read model as it was before it was typed: plain dicts with keys built at run time.

Kept verbatim as an oracle (state, fold and decide of commit f85fdd1): the typed
model must fold every log to exactly the JSON this one folds it to, and decide
every input exactly as this one decides it. Nothing in the product imports it.
"""
