"""The outbox: deliver the commands sync issued, in order per ticket, and record each outcome."""
