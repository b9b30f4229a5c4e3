"""Sync: fold the log in order, decide on each input by the rules, append the decisions."""
