"""Read-only measurements of real systems. No pytest in here: a probe returns values, a check judges them."""
