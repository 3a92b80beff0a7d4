"""The mailbox provider service: ingress for its users, durable mailboxes, ACKs (DESIGN.md §1)."""
