"""The mailbox provider service: ingress for its users, durable mailboxes, ACKs (docs/design.md, "Roles")."""
