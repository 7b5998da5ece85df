"""What the other groups share: command-line argument types, user errors, atomic writes."""
